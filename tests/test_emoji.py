"""The `emoji` dataset plugin: join, drops, classes, white compositing, idempotence, npm errors.

The default tests build tiny tarballs in the real npm package layout and put them in the cache
folder, so ``npm`` is never run; the ``slow`` test fetches the real packages with ``npm pack``.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mmfuse_emoji import fetch
from PIL import Image

from mmfuse.api import train
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec

REPO = Path(__file__).resolve().parents[1]
TWITTER_TGZ = "emoji-datasource-twitter-16.0.0.tgz"
OPENMOJI_TGZ = "openmoji-17.0.0.tgz"
OUTPUTS = ("emoji_ids.txt", "images.npy", "text.txt", "category.npy", "categories.txt",
           "added_in.npy", "manifest.json")


def png(alpha: int = 255, rgb: tuple[int, int, int] = (255, 0, 0)) -> bytes:
    """A 64×64 RGBA PNG: transparent left half, ``rgb`` at ``alpha`` on the right half."""
    pixels = np.zeros((64, 64, 4), dtype=np.uint8)
    pixels[:, 32:] = (*rgb, alpha)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="RGBA").save(buf, format="PNG")
    return buf.getvalue()


def write_tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def entry(name: str, unified: str, category: str, order: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "unified": unified, "non_qualified": None, "image": f"{unified.lower()}"
            ".png", "short_names": [name.lower().replace(" ", "_")], "category": category,
            "subcategory": "x", "sort_order": order, "added_in": "1.0", "has_img_twitter": True,
            **extra}


def openmoji(hexcode: str, annotation: str, tags: str = "") -> dict[str, Any]:
    return {"hexcode": hexcode, "annotation": annotation, "tags": tags, "openmoji_tags": "",
            "group": "leaks-the-label", "subgroups": "x"}


def fake_packages(cache: Path, n_extra: int = 0) -> None:
    """Both tarballs, with one emoji per way to be kept or dropped, plus ``n_extra`` plain ones
    (three categories) so that a spec can be trained on them."""
    emoji = [
        entry("GRINNING FACE", "1F600", "Smileys & Emotion", 1, added_in="0.6"),
        entry("THERMOMETER", "1F321-FE0F", "Travel & Places", 50, non_qualified="1F321",
              added_in="13.1"),
        entry("EMOJI MODIFIER FITZPATRICK TYPE-3", "1F3FC", "Component", 40),
        entry("NO IMAGE FLAG", "1F602", "Smileys & Emotion", 2, has_img_twitter=False),
        entry("NO PNG FILE", "1F605", "Smileys & Emotion", 3),
        entry("NO OPENMOJI", "1F603", "Smileys & Emotion", 4),
        entry("FLAG GERMANY", "1F1E9-1F1EA", "Flags", 100, added_in="2.0"),
    ]
    om = [openmoji("1F600", "grinning face", "face, grin,\nhappy"), openmoji("1F321", "thermo"),
          openmoji("1F3FC", "medium-light skin tone"), openmoji("1F602", "tears"),
          openmoji("1F605", "sweat"), openmoji("1f1e9-1f1ea", "flag: Germany", "flag")]
    categories = ["Smileys & Emotion", "Travel & Places", "Flags"]
    for i in range(n_extra):
        code = f"E{i:04X}"
        emoji.append(entry(f"EXTRA {i}", code, categories[i % 3], 200 + i))
        om.append(openmoji(code, f"extra {['happy', 'hot', 'country'][i % 3]} {i}"))
    pngs = {f"package/img/twitter/64/{e['image']}": png(alpha=128 if i == 0 else 255)
            for i, e in enumerate(emoji) if e["unified"] != "1F605"}
    cache.mkdir(parents=True, exist_ok=True)
    write_tgz(cache / TWITTER_TGZ, {"package/emoji.json": json.dumps(emoji).encode(),
                                    "package/img/twitter/sheets/64.png": b"not needed", **pngs})
    write_tgz(cache / OPENMOJI_TGZ, {"package/data/openmoji.json": json.dumps(om).encode(),
                                     "package/package.json": b"{}"})


@pytest.fixture
def no_npm(monkeypatch) -> None:
    """Nothing on PATH: any attempt to run npm fails."""
    monkeypatch.setenv("PATH", "")


@pytest.fixture
def cache(tmp_path) -> Path:
    fake_packages(tmp_path / "npm")
    return tmp_path / "npm"


def ensure(root: Path, **params: Any) -> str:
    return get_plugins().datasets.get("emoji").ensure(root, params)


def test_join_drops_classes_and_files(tmp_path, cache, no_npm):
    root = tmp_path / "emoji"
    message = ensure(root, cache=str(cache))
    assert "3 emoji in 3 classes" in message
    assert sorted(p.name for p in root.iterdir()) == sorted(OUTPUTS)
    assert (root / "emoji_ids.txt").read_text().split() == ["1F600", "1F321-FE0F", "1F1E9-1F1EA"]
    assert (root / "categories.txt").read_text().splitlines() == [
        "Smileys & Emotion", "Travel & Places", "Flags"]  # canonical (sort_order) order
    category = np.load(root / "category.npy")
    assert category.dtype == np.int64 and category.tolist() == [0, 1, 2]
    added = np.load(root / "added_in.npy")
    assert added.dtype == np.float32 and np.allclose(added, [0.6, 13.1, 2.0])
    text = (root / "text.txt").read_text(encoding="utf-8").splitlines()
    assert len(text) == 3
    assert text[0] == "grinning face, face, grin, happy"  # each phrase once
    assert "thermo" in text[1] and "flag: germany" in text[2]
    assert not any("leaks" in line for line in text)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["dropped"] == {"component": 1, "no_openmoji_text": 1, "no_twitter_image": 2}
    assert manifest["counts"]["joined_on_non_qualified"] == 1
    assert manifest["counts"]["emoji.json"] == 7 and manifest["counts"]["kept"] == 3
    assert manifest["classes"] == {"Smileys & Emotion": 1, "Travel & Places": 1, "Flags": 1}
    assert manifest["packages"] == {"emoji-datasource-twitter": "16.0.0", "openmoji": "17.0.0"}


def test_images_are_composited_on_white(tmp_path, cache, no_npm):
    ensure(tmp_path / "emoji", cache=str(cache))
    images = np.load(tmp_path / "emoji" / "images.npy")
    assert images.shape == (3, 3, 64, 64) and images.dtype == np.uint8
    assert (images[:, :, :, :32] == 255).all()  # transparent → white, never black
    assert images[1, :, 0, 40].tolist() == [255, 0, 0]  # opaque red stays red
    half = images[0, :, 0, 40].astype(int)  # red at alpha 128 over white
    assert half[0] == 255 and abs(half[1] - 127) <= 1 and abs(half[2] - 127) <= 1


def test_ensure_is_idempotent_and_needs_no_npm(tmp_path, cache, no_npm):
    root = tmp_path / "emoji"
    first = ensure(root, cache=str(cache))
    stamps = {p.name: p.stat().st_mtime_ns for p in root.iterdir()}
    (cache / TWITTER_TGZ).unlink()  # a complete folder needs neither tarballs nor npm
    assert ensure(root, cache=str(cache)) == first
    assert {p.name: p.stat().st_mtime_ns for p in root.iterdir()} == stamps
    (root / "images.npy").unlink()  # incomplete: prepared again (here: fails, no tarball/npm)
    with pytest.raises(ValueError, match="npm"):
        ensure(root, cache=str(cache))


def test_never_writes_over_foreign_files(tmp_path, cache, no_npm):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        ensure(mine, cache=str(cache))
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.json").write_text('{"dataset": "goodreads"}')
    with pytest.raises(ValueError, match="manifest.json"):
        ensure(other, cache=str(cache))
    with pytest.raises(ValueError, match="unknown params"):
        ensure(tmp_path / "x", cache_dir=str(cache))


def test_missing_npm_gives_a_clear_error(tmp_path, no_npm):
    with pytest.raises(ValueError, match="install Node.js/npm, e.g. apt-get install npm"):
        ensure(tmp_path / "emoji", cache=str(tmp_path / "empty-cache"))
    assert not (tmp_path / "emoji").exists()


def test_failing_npm_reports_its_stderr(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\necho 'npm error code E404 openmoji not found' >&2\nexit 1\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(ValueError, match=r"npm pack .* failed \(exit 1\).*E404"):
        ensure(tmp_path / "emoji", cache=str(tmp_path / "cache"))
    assert list((tmp_path / "cache").iterdir()) == []  # no partial tarball left behind


def test_extraction_refuses_paths_that_leave_the_folder(tmp_path):
    write_tgz(tmp_path / "evil.tgz", {"package/../../evil.txt": b"x", "package/ok.txt": b"y"})
    with pytest.raises(ValueError, match="unsafe tar member"):
        fetch.extract(tmp_path / "evil.tgz", tmp_path / "out", ["package/"])
    assert not (tmp_path / "evil.txt").exists()
    assert fetch.extract(tmp_path / "evil.tgz", tmp_path / "ok", ["package/ok"]) == [
        "package/ok.txt"]


def test_default_cache_follows_mmfuse_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path))
    assert fetch.default_cache() == tmp_path / "npm"
    monkeypatch.delenv("MMFUSE_CACHE")
    assert fetch.default_cache() == Path.home() / ".cache" / "mmfuse" / "npm"


def test_shipped_spec_trains_on_fake_packages(tmp_path, monkeypatch, no_npm):
    """specs/emoji.yaml as shipped, its data folder relocated under tmp_path."""
    fake_packages(tmp_path / "cache" / "npm", n_extra=27)
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "specs").mkdir()
    shutil.copy(REPO / "specs" / "emoji.yaml", tmp_path / "specs" / "emoji.yaml")
    spec = load_spec(tmp_path / "specs" / "emoji.yaml",
                     ["train.epochs=1", "train.device=cpu",
                      "evaluate.targets.category_forest.params.n_estimators=5"])
    result = train(spec, tmp_path / "run")
    assert "30 emoji in 3 classes" in result.built.data.dataset_message
    assert np.load(tmp_path / "run" / "embeddings" / "emoji.npy").shape == (30, 50)
    targets = result.evaluation["targets"]
    assert set(targets) == {"category", "category_forest", "added_in"}
    assert targets["category"]["n_test"] == 6


@pytest.mark.slow
def test_real_packages_from_npm(tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    root = tmp_path / "emoji"
    message = ensure(root, cache=str(tmp_path / "npm"))
    manifest = json.loads((root / "manifest.json").read_text())
    assert 1850 <= manifest["n_emoji"] <= 1950 and manifest["n_classes"] == 9, message
    assert "Component" not in (root / "categories.txt").read_text()
    n = manifest["n_emoji"]
    assert np.load(root / "images.npy", mmap_mode="r").shape == (n, 3, 64, 64)
    assert len((root / "text.txt").read_text(encoding="utf-8").splitlines()) == n
    assert np.bincount(np.load(root / "category.npy")).max() / n == pytest.approx(0.20, abs=0.02)
    assert ensure(root, cache=str(tmp_path / "npm")) == message

"""The README's examples work as written: its spec trains, its plugin registers."""

from __future__ import annotations

import re
import types
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from PIL import Image

from mmfuse.api import train
from mmfuse.plugins import collect, make_manager
from mmfuse.spec import load_spec

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def block(lang: str, containing: str) -> str:
    """The README's first ``lang`` code block that contains ``containing``."""
    blocks = re.findall(rf"```{lang}\n(.*?)```", README, re.S)
    return next(b for b in blocks if containing in b)


SHOP = {"book": 30, "user": 800, "word": 300}  # the README spec's entities, as written here


def write_shop(tmp_path: Path) -> Path:
    """The README's three-entity spec with data for its five views and its target."""
    spec_path = tmp_path / "shop.yaml"
    spec_path.write_text(block("yaml", "specs/shop.yaml"))
    data = tmp_path / "data"
    (data / "covers").mkdir(parents=True)
    rng = np.random.default_rng(0)
    n_book, n_user, n_word = SHOP.values()
    for i, book in enumerate(shop_ids()):
        Image.new("RGB", (48, 70), (8 * i, 100, 200)).save(data / "covers" / f"{book}.jpg")
    (data / "book_ids.txt").write_text("\n".join(shop_ids()) + "\n")
    np.save(data / "bag_of_words.npy", rng.random((n_book, n_word)).astype(np.float32))
    ratings = sp.random(n_user, n_book, density=0.05, random_state=0, format="csr") * 5
    sp.save_npz(data / "ratings.npz", ratings)
    np.save(data / "cooc.npy", rng.poisson(2.0, (n_word, n_word)).astype(np.float32))
    np.save(data / "genre.npy", rng.integers(0, 2, n_book))
    np.save(data / "book_facts.npy", rng.random((n_book, 3)).astype(np.float32))
    np.save(data / "facts_known.npy", rng.random((n_book, 3)) < 0.8)
    return spec_path


def shop_ids() -> list[str]:
    return [f"isbn{i:03d}" for i in range(SHOP["book"])]


def test_readme_spec_with_three_entities_and_five_views_trains(tmp_path):
    spec_path = write_shop(tmp_path)
    result = train(load_spec(spec_path, ["train.epochs=1"]), tmp_path / "run")
    for entity, n in SHOP.items():
        z = np.load(tmp_path / "run" / "embeddings" / f"{entity}.npy")
        assert z.shape == (n, 50) and np.isfinite(z).all()
    assert (tmp_path / "run" / "embeddings" / "book.ids.txt").read_text().split() == shop_ids()
    assert "genre" in result.evaluation["targets"]


def test_readme_plugin_example_registers_and_trains(tmp_path, multiview):
    module = types.ModuleType("mmfuse_myplugin")
    exec(block("python", "# mmfuse_myplugin/__init__.py"), module.__dict__)
    plugins = collect(make_manager(extra=[module]))
    assert plugins.encoders.entries["linear"].plugin.startswith("mmfuse_myplugin")
    spec = load_spec(multiview, ["views.text.encoder={type: linear}", "train.epochs=1"])
    train(spec, tmp_path / "run", plugins=plugins)
    assert np.load(tmp_path / "run" / "embeddings" / "book.npy").shape == (48, 8)


def test_readme_lists_every_hook():
    from mmfuse import hookspecs

    hooks = [name for name in dir(hookspecs) if name.startswith("mmfuse_")]
    assert len(hooks) == 7
    for name in hooks:
        assert f"`{name}`" in README, name

"""The dataset object of this plugin (see the package's docstring)."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfuse.cache import CACHE_DIR

from . import build, fetch

log = logging.getLogger(__name__)

TWITTER = "emoji-datasource-twitter"
OPENMOJI = "openmoji"
PACKAGES = {TWITTER: "16.0.0", OPENMOJI: "17.0.0"}
MEMBERS = {TWITTER: ("package/emoji.json", "package/img/twitter/64/"),
           OPENMOJI: ("package/data/openmoji.json",)}
PARAMS: dict[str, Any] = {"cache": None, "timeout": 600}
OWN_FILES = {*build.FILES, build.MANIFEST, CACHE_DIR}


def _manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / build.MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _complete(root: Path, manifest: Mapping[str, Any]) -> bool:
    """A manifest of this dataset, for these package versions, with all its files present."""
    return (manifest.get("dataset") == "emoji"
            and manifest.get("packages") == PACKAGES
            and all((root / name).is_file() for name in build.FILES))


def _check_root(root: Path, manifest: Mapping[str, Any] | None) -> None:
    """Refuse a folder that holds anything this dataset did not write."""
    if not root.exists():
        return
    if not root.is_dir():
        raise ValueError(f"emoji: {root} is not a folder")
    foreign = sorted(p.name for p in root.iterdir() if p.name not in OWN_FILES
                     and not (p.name.startswith(".") and p.name.endswith(".tmp")))
    if (root / build.MANIFEST).exists() and (manifest or {}).get("dataset") != "emoji":
        foreign.insert(0, build.MANIFEST)
    if foreign:
        raise ValueError(f"emoji: {root} holds other files ({', '.join(foreign[:5])}); "
                         "not writing the emoji dataset there")


def _message(root: Path, manifest: Mapping[str, Any]) -> str:
    versions = " + ".join(f"{k}@{v}" for k, v in manifest["packages"].items())
    return (f"emoji: real data, {manifest['n_emoji']} emoji in {manifest['n_classes']} classes "
            f"(npm {versions}) in {root}")


def _load_json(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise ValueError(f"emoji: {path.name} is not where expected in the package ({path})")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"emoji: {path} is not a JSON list")
    return data


def prepare(root: Path, cache: Path, timeout: float) -> dict[str, Any]:
    """Fetch (or reuse) both tarballs, extract what is needed to a scratch folder, join, write."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".emoji-extract-") as scratch:
        folders: dict[str, Path] = {}
        for name, version in PACKAGES.items():
            tgz = fetch.ensure_tarball(name, version, cache, timeout)
            folders[name] = Path(scratch) / name
            fetch.extract(tgz, folders[name], MEMBERS[name])
        emoji_json = _load_json(folders[TWITTER] / "package" / "emoji.json")
        openmoji_json = _load_json(folders[OPENMOJI] / "package" / "data" / "openmoji.json")
        joined = build.join(emoji_json, openmoji_json,
                            folders[TWITTER] / "package" / "img" / "twitter" / "64")
        if not joined.emoji:
            raise ValueError(f"emoji: no emoji left after the join; dropped {joined.dropped}")
        log.info("emoji: kept %d, dropped %s", len(joined.emoji), joined.dropped)
        return build.write_dataset(root, joined, PACKAGES)


class Emoji:
    """Dataset plugin; params: ``cache`` (folder for the npm tarballs; default
    ``$MMFUSE_CACHE/npm`` or ``~/.cache/mmfuse/npm``; tarballs already there are reused, so
    ``npm`` is not needed), ``timeout`` (seconds for each ``npm pack``, default 600)."""

    def ensure(self, root: Path, params: Mapping[str, Any]) -> str:
        unknown = set(params) - set(PARAMS)
        if unknown:
            raise ValueError(f"emoji: unknown params {sorted(unknown)}; known: {sorted(PARAMS)}")
        p = {**PARAMS, **params}
        root = Path(root)
        manifest = _manifest(root)
        if manifest is not None and _complete(root, manifest):
            return _message(root, manifest)
        _check_root(root, manifest)
        cache = Path(p["cache"]).expanduser() if p["cache"] else fetch.default_cache()
        return _message(root, prepare(root, cache, float(p["timeout"])))


EMOJI = Emoji()

"""Join emoji-datasource's ``emoji.json`` with OpenMoji's ``openmoji.json`` and write the
dataset files.

The join key is the code point sequence: emoji-datasource's ``unified`` (fully qualified, e.g.
``1F321-FE0F``) or, failing that, its ``non_qualified`` form (``1F321``) equals OpenMoji's
``hexcode``; both are upper-case hex joined by ``-`` and are compared upper-cased.  An emoji is
kept when it has a Twitter 64×64 PNG and OpenMoji text, and is not a ``Component`` (skin-tone
and hair swatches).  Images are composited on white from RGBA (a transparent pixel is white,
not black).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

DROPPED_CATEGORY = "Component"
IMAGE_SIZE = 64
MANIFEST = "manifest.json"
FILES = ("emoji_ids.txt", "images.npy", "text.txt", "category.npy", "categories.txt",
         "added_in.npy")


@dataclass(frozen=True)
class Emoji:
    """One kept emoji: its id (``unified``), text, class name, Unicode version, image file."""

    id: str
    text: str
    category: str
    sort_order: int
    added_in: float
    image: Path


@dataclass
class Joined:
    """The kept emoji (in ``emoji.json`` order) and what happened to the others."""

    emoji: list[Emoji]
    counts: dict[str, int]
    dropped: dict[str, int]


def code(value: str | None) -> str:
    """A code point sequence in one form: upper-case, ``-``-separated, no spaces."""
    return (value or "").strip().upper().replace(" ", "-")


def _phrases(value: Any) -> list[str]:
    items = value if isinstance(value, list) else str(value or "").split(",")
    # " ".join(split()) also removes line breaks: one emoji stays one line of text.txt
    return [s for s in (" ".join(str(i).replace("_", " ").split()) for i in items
                        if i is not None) if s]


def emoji_text(entry: Mapping[str, Any], openmoji: Mapping[str, Any]) -> str:
    """One line: OpenMoji annotation, tags and OpenMoji tags, then emoji-datasource's name
    and short names (``_`` → space), each phrase once (case-insensitive).  The category and
    group fields are left out: they are the label."""
    phrases = [*_phrases([openmoji.get("annotation")]), *_phrases(openmoji.get("tags")),
               *_phrases(openmoji.get("openmoji_tags")), *_phrases([entry.get("name")]),
               *_phrases(entry.get("short_names"))]
    seen: set[str] = set()
    unique = []
    for phrase in phrases:
        if phrase.lower() not in seen:
            seen.add(phrase.lower())
            unique.append(phrase.lower())
    return ", ".join(unique)


def _openmoji_entry(entry: Mapping[str, Any], index: Mapping[str, Mapping[str, Any]]
                    ) -> tuple[Mapping[str, Any] | None, bool]:
    """The OpenMoji entry of an emoji and whether it matched on ``non_qualified`` only."""
    hit = index.get(code(entry.get("unified")))
    if hit is not None:
        return hit, False
    non_qualified = code(entry.get("non_qualified"))
    hit = index.get(non_qualified) if non_qualified else None
    return hit, hit is not None


def join(emoji_json: list[dict[str, Any]], openmoji_json: list[dict[str, Any]],
         image_dir: Path) -> Joined:
    """Join the two lists; drop (first reason counted) components, emoji without a Twitter
    64×64 PNG, and emoji without OpenMoji text (no entry, or an empty annotation)."""
    index = {code(o.get("hexcode")): o for o in openmoji_json if o.get("hexcode")}
    pngs = {p.name for p in image_dir.iterdir()} if image_dir.is_dir() else set()
    dropped: Counter[str] = Counter()
    matched = via_non_qualified = 0
    kept: list[Emoji] = []
    for entry in emoji_json:
        om, fallback = _openmoji_entry(entry, index)
        matched += om is not None
        via_non_qualified += fallback
        image = entry.get("image") or ""
        if entry.get("category") == DROPPED_CATEGORY:
            dropped["component"] += 1
        elif not entry.get("has_img_twitter", True) or image not in pngs:
            dropped["no_twitter_image"] += 1
        elif om is None or not str(om.get("annotation") or "").strip():
            dropped["no_openmoji_text"] += 1
        else:
            kept.append(Emoji(id=code(entry["unified"]), text=emoji_text(entry, om),
                              category=str(entry["category"]),
                              sort_order=int(entry.get("sort_order", 0)),
                              added_in=float(entry.get("added_in") or "nan"),
                              image=image_dir / image))
    ids = [e.id for e in kept]
    if len(set(ids)) != len(ids):
        raise ValueError(f"emoji.json: duplicate unified code points {_duplicates(ids)[:5]}")
    counts = {"emoji.json": len(emoji_json), "openmoji.json": len(openmoji_json),
              "twitter_64_png": sum(1 for n in pngs if n.endswith(".png")),
              "joined": matched, "joined_on_non_qualified": via_non_qualified,
              "kept": len(kept)}
    return Joined(emoji=kept, counts=counts, dropped=dict(sorted(dropped.items())))


def _duplicates(ids: Iterable[str]) -> list[str]:
    return [i for i, n in Counter(ids).items() if n > 1]


def class_names(emoji: list[Emoji]) -> list[str]:
    """Categories in the canonical Unicode order (by their first emoji's ``sort_order``)."""
    first: dict[str, int] = {}
    for e in emoji:
        first[e.category] = min(first.get(e.category, e.sort_order), e.sort_order)
    return sorted(first, key=lambda c: (first[c], c))


def composite_on_white(path: Path, size: int = IMAGE_SIZE) -> np.ndarray:
    """One PNG as ``3 × size × size`` uint8 RGB, its alpha composited on a white background."""
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.Resampling.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; these are ordinary data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _lines(items: Iterable[str]) -> Callable[[IO[bytes]], None]:
    return lambda fh: fh.write("".join(f"{s}\n" for s in items).encode("utf-8"))


def _npy(array: np.ndarray) -> Callable[[IO[bytes]], None]:
    return lambda fh: np.save(fh, array, allow_pickle=False)


def write_dataset(root: Path, joined: Joined, packages: Mapping[str, str]) -> dict[str, Any]:
    """Write the data files into ``root``, then ``manifest.json`` last; return the manifest.
    An old manifest is removed first, so an interrupted rewrite never looks complete."""
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)
    emoji = joined.emoji
    names = class_names(emoji)
    labels = np.array([names.index(e.category) for e in emoji], dtype=np.int64)
    images = np.empty((len(emoji), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, e in enumerate(emoji):
        images[i] = composite_on_white(e.image)
    _atomic(root / "emoji_ids.txt", _lines(e.id for e in emoji))
    _atomic(root / "images.npy", _npy(images))
    _atomic(root / "text.txt", _lines(e.text for e in emoji))
    _atomic(root / "category.npy", _npy(labels))
    _atomic(root / "categories.txt", _lines(names))
    _atomic(root / "added_in.npy", _npy(np.array([e.added_in for e in emoji], np.float32)))
    n = len(emoji)
    manifest = {
        "dataset": "emoji", "source": "real", "packages": dict(packages),
        "n_emoji": n, "n_classes": len(names),
        "files": {"emoji_ids.txt": n, "images.npy": [n, 3, IMAGE_SIZE, IMAGE_SIZE],
                  "text.txt": n, "category.npy": n, "categories.txt": len(names),
                  "added_in.npy": n},
        "counts": joined.counts, "dropped": joined.dropped,
        "classes": {name: int((labels == k).sum()) for k, name in enumerate(names)},
        "images": "Twitter 64x64 RGBA PNG composited on white -> RGB uint8 n x 3 x 64 x 64",
        "text": "OpenMoji annotation, tags, openmoji_tags; emoji-datasource name, short_names",
    }
    _atomic(root / MANIFEST, lambda fh: fh.write(json.dumps(manifest, indent=2).encode()))
    return manifest

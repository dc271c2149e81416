"""A folder of images named by instance id → ``n × C × H × W`` uint8 tensor (cached)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import ReadContext, ViewArray

EXTENSIONS = ("", ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
CHANNELS = {"RGB": 3, "L": 1, "RGBA": 4}


def find_image(folder: Path, name: str, names: set[str]) -> Path | None:
    """The file of instance ``name`` in ``folder`` (whose file names are ``names``)."""
    for ext in EXTENSIONS:
        if name + ext in names:
            return folder / (name + ext)
    return None


def load_image(path: Path, size: tuple[int, int], mode: str) -> np.ndarray:
    """One image as ``C × H × W`` uint8: aspect kept, padded with black, never cropped.
    Transparent pixels are composited on white when the mode has no alpha channel."""
    with Image.open(path) as img:
        if mode != "RGBA" and (img.mode in ("RGBA", "LA") or "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        img = ImageOps.pad(img.convert(mode), (size[1], size[0]), color=0)
        arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def image_ids(ids_param: str | None, ctx: ReadContext) -> list[str]:
    """The images' ids: the ``ids`` param (a file, one per line) or the row entity's ids."""
    if ids_param is not None:
        path = Path(ids_param)
        path = path if path.is_absolute() else ctx.spec_dir / path
        return [s for s in path.read_text(encoding="utf-8").splitlines() if s]
    if ctx.row_ids is not None:
        return list(ctx.row_ids)
    raise ValueError("needs the ids of its images: params.ids or an `ids` file on the entity")


def image_files(folder: Path, ids: list[str]) -> list[Path]:
    """The file of every id in ``folder``; a missing one is an error, never filled in."""
    names = {p.name for p in folder.iterdir()}
    files = [find_image(folder, i, names) for i in ids]
    missing = [i for i, f in zip(ids, files, strict=True) if f is None]
    if missing:
        raise ValueError(f"no image for {len(missing)} of {len(ids)} ids in {folder} "
                         f"(first: {', '.join(missing[:5])})")
    return files  # type: ignore[return-value]


def read_images(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """params: ``ids`` (file of ids, one per line; default: the row entity's ids), ``size``
    (int or [H, W], default 64), ``mode`` (RGB | L | RGBA, default RGB).  Files are named by id,
    with or without an image extension.  A missing image is an error, never filled in."""
    if path is None or not path.is_dir():
        raise ValueError(f"needs `path`: a folder of images; got {path}")
    ids = image_ids(params.get("ids"), ctx)
    size = params.get("size", 64)
    size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    mode = params.get("mode", "RGB")
    if mode not in CHANNELS:
        raise ValueError(f"mode {mode!r}; known: {', '.join(CHANNELS)}")
    files = image_files(path, ids)

    def compute() -> np.ndarray:
        out = np.empty((len(ids), CHANNELS[mode], *size), dtype=np.uint8)
        for i, f in enumerate(files):
            out[i] = load_image(f, size, mode)
        return out

    key_params = {"size": size, "mode": mode,
                  "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    data, cache = cached_array(path, "images", fingerprint([path], key_params), compute)
    return ViewArray(data=data, row_ids=list(ids), info={"folder": str(path), "cache": str(cache)})

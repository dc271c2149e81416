"""A folder of images named by instance id → ``n × C × H × W`` uint8 tensor (cached)."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from PIL import Image, ImageOps
from pydantic import Field

from mmfuse.cache import CACHE_DIR, cached_array, fingerprint
from mmfuse.plugin_api import (
    ReadContext,
    ReaderParams,
    ViewArray,
    featurizer,
    reader_params,
)

log = logging.getLogger(__name__)

EXTENSIONS = ("", ".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
CHANNELS = {"RGB": 3, "L": 1, "RGBA": 4}


class ImagesParams(ReaderParams):
    ids: str | None = None  # file of ids, one a line (default: the row entity's ids)
    size: Annotated[int, Field(ge=1)] | Annotated[
        list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] = 64  # or [H, W]
    mode: Literal["RGB", "L", "RGBA"] = "RGB"


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
        try:
            return [s for s in path.read_text(encoding="utf-8").splitlines() if s]
        except UnicodeDecodeError:
            raise ValueError(f"params.ids {path.name} is not UTF-8 text; save it as UTF-8"
                             ) from None
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


def user_cache() -> Path:
    """``$MMFUSE_CACHE``, else ``$XDG_CACHE_HOME/mmfuse``, else ``~/.cache/mmfuse``."""
    if os.environ.get("MMFUSE_CACHE"):
        return Path(os.environ["MMFUSE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmfuse"


def cache_anchor(folder: Path) -> Path:
    """Where the decoded images of ``folder`` are cached: next to it (``folder``'s own
    cache folder) where it can be written, else under the user's cache folder, in a folder
    named after the input's absolute path (so that two inputs never share a file)."""
    cache = folder / CACHE_DIR
    try:
        cache.mkdir(exist_ok=True)
        if os.access(cache, os.W_OK):
            return folder
    except OSError:
        pass
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]
    return user_cache() / "images" / f"{folder.name}-{digest}" / folder.name


def load_images(files: list[Path], size: tuple[int, int], mode: str) -> np.ndarray:
    """Every file decoded (``n × C × H × W`` uint8); one that cannot be read is an error
    naming it."""
    out = np.empty((len(files), CHANNELS[mode], *size), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            out[i] = load_image(f, size, mode)
        except (OSError, ValueError, SyntaxError) as exc:  # PIL: truncated, unknown, damaged
            raise ValueError(f"image {f} (number {i + 1} of {len(files)}) cannot be read: "
                             f"{exc}; replace it, or remove its id") from exc
    return out


def featurize_images(path: Path, params: Mapping[str, Any], state: Mapping[str, Any],
                     ctx: ReadContext) -> ViewArray:
    """New images: a folder holding a file per new instance, named by its id (``--ids``),
    decoded as in training (``size``, ``mode``); nothing is cached."""
    if not path.is_dir():
        raise ValueError(f"{path}: not a folder; give a folder of images named by the new "
                         "instances' ids")
    if ctx.row_ids is None:
        raise ValueError("new images are found by id: give the new instances' ids (--ids "
                         "FILE, one a line), each the name of its image in the folder")
    size = params["size"]
    size = (size, size) if isinstance(size, int) else (size[0], size[1])
    files = image_files(path, list(ctx.row_ids))
    return ViewArray(data=load_images(files, size, params["mode"]), row_ids=list(ctx.row_ids),
                     info={"folder": str(path)})


@featurizer(featurize_images)
@reader_params(ImagesParams)
def read_images(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """params: ``ids`` (file of ids, one per line; default: the row entity's ids), ``size``
    (int or [H, W], default 64), ``mode`` (RGB | L | RGBA, default RGB).  Files are named by id,
    with or without an image extension.  A missing image is an error, never filled in.
    The decoded images are cached next to the folder, or, where it is read-only, under the
    user's cache folder (``$MMFUSE_CACHE``, default ``~/.cache/mmfuse``)."""
    if path is None or not path.is_dir():
        raise ValueError(f"needs `path`: a folder of images; got {path}")
    ids = image_ids(params["ids"], ctx)
    size = params["size"]
    size = (size, size) if isinstance(size, int) else (size[0], size[1])
    mode = params["mode"]
    files = image_files(path, ids)
    anchor = cache_anchor(path)
    if anchor != path:
        log.warning("images: %s cannot be written; its decoded images are cached in %s",
                    path, anchor.parent / CACHE_DIR)
    key_params = {"size": size, "mode": mode,
                  "ids": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    data, cache = cached_array(anchor, "images", fingerprint([path], key_params),
                               lambda: load_images(files, size, mode))
    return ViewArray(data=data, row_ids=list(ids), info={"folder": str(path), "cache": str(cache)})

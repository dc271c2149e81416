"""Array files: ``.npy`` (memory-mapped) and ``.npz`` (scipy sparse or a numpy archive)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmfuse.plugin_api import ReadContext, ViewArray


def _path(params: Mapping[str, Any], key: str, ctx: ReadContext) -> Path | None:
    """The file a path param names (relative to the spec's folder), or None if not given."""
    if key not in params:
        return None
    if not isinstance(params[key], str):
        raise ValueError(f"params.{key} must be a file path; got {params[key]!r}")
    path = Path(params[key])
    return path if path.is_absolute() else ctx.spec_dir / path


def _ids(params: Mapping[str, Any], key: str, ctx: ReadContext) -> list[str] | None:
    """Optional ``row_ids`` / ``col_ids`` files: the order the data's rows/columns are in."""
    path = _path(params, key, ctx)
    if path is None:
        return None
    return [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines() if line]


def _mask(params: Mapping[str, Any], ctx: ReadContext, shape: tuple[int, ...]
          ) -> np.ndarray | None:
    """Optional ``mask``: a boolean ``.npy`` of the data's shape, True where observed."""
    path = _path(params, "mask", ctx)
    if path is None:
        return None
    mask = np.load(path, mmap_mode="r", allow_pickle=False)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        kind = getattr(mask, "dtype", type(mask).__name__)
        raise ValueError(f"mask {path.name} must be a boolean .npy array; got {kind}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask {path.name} has shape {list(mask.shape)}; the data has "
                         f"{list(shape)}")
    return mask


def _known(params: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)}; known: {sorted(known)}")


def _require(path: Path | None) -> Path:
    if path is None:
        raise ValueError("needs `path`")
    return path


def read_npy(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """A ``.npy`` array, memory-mapped (``mmap: false`` loads it).  NaN cells are missing.

    params: ``mmap`` (bool, default true), ``row_ids`` / ``col_ids`` (id files to check the
    order against the entities' ids), ``mask`` (a boolean ``.npy`` of the same shape, True
    where a cell is observed).
    """
    _known(params, {"mmap", "row_ids", "col_ids", "mask"})
    path = _require(path)
    data = np.load(path, mmap_mode="r" if params.get("mmap", True) else None, allow_pickle=False)
    if not isinstance(data, np.ndarray):
        data.close()
        raise ValueError(f"{path.name} is not a .npy array (an .npz archive? use reader npz)")
    return ViewArray(data=data, mask=_mask(params, ctx, data.shape),
                     row_ids=_ids(params, "row_ids", ctx),
                     col_ids=_ids(params, "col_ids", ctx), info={"file": str(path)})


def read_npz(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """A scipy sparse matrix (``scipy.sparse.save_npz``): cells not stored are missing,
    stored zeros are observed.  A plain numpy archive is read too (``key``: which array;
    ``mask``: as for ``npy``)."""
    _known(params, {"key", "row_ids", "col_ids", "mask"})
    path = _require(path)
    try:
        data: Any = sp.load_npz(path)
    except (ValueError, TypeError):
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            msg = f"{path.name} is a .npy array, not an .npz archive: use reader npy"
            raise ValueError(msg) from None
        with loaded as archive:
            key = params.get("key") or archive.files[0]
            if key not in archive.files:
                msg = f"no array {key!r} in {path.name}; it has {archive.files}"
                raise ValueError(msg) from None
            data = archive[key]
    mask = _mask(params, ctx, data.shape)
    if mask is not None and sp.issparse(data):
        raise ValueError("a sparse matrix's observed cells are the ones it stores: no `mask`")
    return ViewArray(data=data, mask=mask, row_ids=_ids(params, "row_ids", ctx),
                     col_ids=_ids(params, "col_ids", ctx), info={"file": str(path)})

"""Array files: ``.npy`` (memory-mapped) and ``.npz`` (scipy sparse or a numpy archive)."""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.lib.format as npy_format
import scipy.sparse as sp

from mmfuse.plugin_api import ReadContext, ReaderParams, ViewArray, reader_params

PICKLED = ("holds Python objects (dtype object, stored pickled); mmfuse never unpickles a "
           "data file: save a numeric array, e.g. np.save(path, x.astype(np.float32))")


class NpyParams(ReaderParams):
    mmap: bool = True  # memory-map the file (false: load it into memory)
    row_ids: str | None = None  # ids file: the order of the data's rows
    col_ids: str | None = None  # ids file: the order of the data's columns
    mask: str | None = None  # boolean .npy of the data's shape, True where observed


class NpzParams(ReaderParams):
    key: str | None = None  # a numpy archive's array (default: its first)
    row_ids: str | None = None
    col_ids: str | None = None
    mask: str | None = None


def _path(params: Mapping[str, Any], key: str, ctx: ReadContext) -> Path | None:
    """The file a path param names (relative to the spec's folder), or None if not given."""
    if params.get(key) is None:
        return None
    path = Path(params[key])
    return path if path.is_absolute() else ctx.spec_dir / path


def read_id_lines(path: Path, what: str) -> list[str]:
    """The ids of an ids file (UTF-8, one a line, no blank line among them); ``what`` names
    it in a ValueError (``params.row_ids``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} {path.name} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror or exc}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if any(not line.strip() for line in lines):
        first = next(i for i, line in enumerate(lines, 1) if not line.strip())
        raise ValueError(f"{what} {path.name}: line {first} is blank, among the ids; remove "
                         "it (a blank line would shift every id after it)")
    return lines


def _ids(params: Mapping[str, Any], key: str, ctx: ReadContext) -> list[str] | None:
    """Optional ``row_ids`` / ``col_ids`` files: the order the data's rows/columns are in."""
    path = _path(params, key, ctx)
    return None if path is None else read_id_lines(path, f"params.{key}")


def npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a ``.npy`` file, read from its header; a ValueError says what is
    wrong with a file that is not one, is truncated or holds pickled objects."""
    with path.open("rb") as fh:
        start = fh.read(6)
        fh.seek(0)
        if start[:2] == b"PK":
            raise ValueError(f"{path.name} is a zip archive (.npz?), not a .npy array: use "
                             "reader npz")
        if start != b"\x93NUMPY":
            raise ValueError(f"{path.name} is not a .npy file (it does not start as one; "
                             f"{'it is empty' if not start else 'wrong or damaged content'})"
                             "; write it with np.save")
        try:
            version = npy_format.read_magic(fh)
            read_header = (npy_format.read_array_header_1_0 if version == (1, 0)
                           else npy_format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
        except (ValueError, EOFError) as exc:
            raise ValueError(f"{path.name}: damaged .npy header ({exc}); write it again with "
                             "np.save") from None
        offset = fh.tell()
    if dtype.hasobject:
        raise ValueError(f"{path.name} {PICKLED}")
    want = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    size = path.stat().st_size
    if size < want:
        raise ValueError(f"{path.name} is truncated: its header says {list(shape)} {dtype} "
                         f"({want:,} bytes) but the file has {size:,}; write it again")
    return tuple(shape), dtype


def _mask(params: Mapping[str, Any], ctx: ReadContext, shape: tuple[int, ...]
          ) -> np.ndarray | None:
    """Optional ``mask``: a boolean ``.npy`` of the data's shape, True where observed."""
    path = _path(params, "mask", ctx)
    if path is None:
        return None
    npy_header(path)
    mask = np.load(path, mmap_mode="r", allow_pickle=False)
    if mask.dtype != np.bool_:
        raise ValueError(f"mask {path.name} must be a boolean .npy array; got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask {path.name} has shape {list(mask.shape)}; the data has "
                         f"{list(shape)}")
    return mask


def _require(path: Path | None) -> Path:
    if path is None:
        raise ValueError("needs `path`")
    return path


@reader_params(NpyParams)
def read_npy(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """A ``.npy`` array, memory-mapped (``mmap: false`` loads it).  NaN cells are missing.

    params: ``mmap`` (bool, default true), ``row_ids`` / ``col_ids`` (id files to check the
    order against the entities' ids), ``mask`` (a boolean ``.npy`` of the same shape, True
    where a cell is observed).
    """
    path = _require(path)
    npy_header(path)
    data = np.load(path, mmap_mode="r" if params["mmap"] else None, allow_pickle=False)
    return ViewArray(data=data, mask=_mask(params, ctx, data.shape),
                     row_ids=_ids(params, "row_ids", ctx),
                     col_ids=_ids(params, "col_ids", ctx), info={"file": str(path)})


def _archive_array(path: Path, key: str | None) -> np.ndarray:
    """One array of a numpy ``.npz`` archive (``key``; default its first)."""
    with np.load(path, allow_pickle=False) as archive:
        if not archive.files:
            raise ValueError(f"{path.name} is an empty archive: no array in it")
        key = key or archive.files[0]
        if key not in archive.files:
            raise ValueError(f"no array {key!r} in {path.name}; it has {archive.files} "
                             "(params.key names one)")
        try:
            return archive[key]
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ValueError(f"{path.name} array {key!r} {PICKLED}") from None
            raise


@reader_params(NpzParams)
def read_npz(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """A scipy sparse matrix (``scipy.sparse.save_npz``): cells not stored are missing,
    stored zeros are observed.  A plain numpy archive is read too (``key``: which array;
    ``mask``: as for ``npy``)."""
    path = _require(path)
    with path.open("rb") as fh:
        start = fh.read(6)
    if start == b"\x93NUMPY":
        raise ValueError(f"{path.name} is a .npy array, not an .npz archive: use reader npy")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path.name} is not an .npz archive (not a readable zip file: "
                         f"{'empty' if not start else 'damaged or truncated'}); write it "
                         "with scipy.sparse.save_npz (or np.savez)")
    try:
        try:
            data: Any = sp.load_npz(path)
        except ValueError as exc:
            if "does not contain a sparse" not in str(exc):
                raise
            data = _archive_array(path, params["key"])
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError) as exc:
        raise ValueError(f"{path.name} is a damaged .npz archive ({exc}); write it again") \
            from exc
    mask = _mask(params, ctx, data.shape)
    if mask is not None and sp.issparse(data):
        raise ValueError("a sparse matrix's observed cells are the ones it stores: no `mask`")
    return ViewArray(data=data, mask=mask, row_ids=_ids(params, "row_ids", ctx),
                     col_ids=_ids(params, "col_ids", ctx), info={"file": str(path)})

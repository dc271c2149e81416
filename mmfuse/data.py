"""Loading every view through its reader, and checking it against the spec.

Arrays stay in their stored dtype (uint8 images, memory-mapped ``.npy``) until a batch is
taken; only the rows or columns of a batch are ever read.  Every view is checked against its
entities' sizes, its declared shape, and the entities' ids (a reader that knows its row ids
must list them in the entity's order: views can never be silently misaligned; an entity with
no ids file takes the ids of the first view whose reader knows them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmfuse.cache import cached_array
from mmfuse.errors import MmfuseError, SpecError, SpecIssue, describe
from mmfuse.holdout import VALIDATION_STREAM, HeldCells, split_view, validation_split
from mmfuse.plugin_api import ReadContext, ViewArray, check_params, declared_params
from mmfuse.plugins import Plugins
from mmfuse.spec import Spec

log = logging.getLogger(__name__)

CHUNK = 4096  # rows per chunk when scanning a whole array
SCAN_CELLS = 1 << 22  # cells per block when checking every value of a view
#: values beyond this magnitude get a warning: squared in the loss they overflow float32 sums
#: (3.4e38) or drown every other view, and training diverges
LARGE_VALUE = 1e12


def sorted_order(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``idx`` sorted (memory maps read sorted indices fastest) and the permutation that
    puts what was read back in the order of ``idx``."""
    order = np.argsort(idx, kind="stable")
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(idx))
    return idx[order], inverse


def _as_float(block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 values with missing (NaN) cells set to 0, and the observed mask (None: all)."""
    values = np.asarray(block, dtype=np.float32)
    missing = np.isnan(values)
    if not missing.any():
        return values, None
    values = np.where(missing, 0.0, values).astype(np.float32)
    return values, ~missing


@dataclass
class SparseRows:
    """Rows of a sparse matrix (or columns, read from its CSC form) as CSR parts: the stored
    cells of row ``k`` are ``indices[indptr[k]:indptr[k + 1]]`` with ``values`` alike."""

    indptr: np.ndarray  # (b + 1,) int64
    indices: np.ndarray  # (nnz,) int32/int64: column of each stored cell
    values: np.ndarray  # (nnz,) float32
    width: int  # number of columns (the input width of an encoder)
    totals: np.ndarray | None = None  # stored cells per row, where a sample is held

    def __len__(self) -> int:
        return len(self.indptr) - 1


def stored_rows(m: sp.csr_array | sp.csc_array, idx: np.ndarray, width: int,
                cap: int | None = None, rng: np.random.Generator | None = None) -> SparseRows:
    """The stored cells of rows ``idx`` of ``m`` (of columns, where ``m`` is CSC).

    With ``cap``, a row with more than ``cap`` stored cells holds a uniform sample of
    ``cap`` of them (with replacement), each value scaled by ``stored / cap`` so that sums
    stay unbiased; then only the cells returned are read, never the whole rows.
    """
    idx = np.asarray(idx)
    if cap is None:
        part = m[idx] if isinstance(m, sp.csr_array) else m[:, idx]
        return SparseRows(part.indptr, part.indices, part.data, width)
    start = m.indptr[idx].astype(np.int64)
    counts = m.indptr[idx + 1] - start
    held = np.minimum(counts, cap)
    indptr = np.zeros(len(idx) + 1, dtype=np.int64)
    np.cumsum(held, out=indptr[1:])
    row = np.repeat(np.arange(len(idx)), held)
    big = counts > cap
    offset = np.arange(indptr[-1]) - indptr[row]  # a short row: its cells in order
    drawn = (rng.random(len(row)) * counts[row]).astype(np.int64)
    pos = start[row] + np.where(big[row], drawn, offset)
    scale = np.where(big, counts / cap, 1.0).astype(np.float32)[row]
    return SparseRows(indptr, m.indices[pos], m.data[pos] * scale, width, totals=counts)


class MatrixData:
    """A matrix view: its observed cells, ``X[idx, :]`` and ``X[:, idx]ᵀ``.

    Sparse data (cells not stored are missing) is kept as CSR + CSC and nothing else, with
    ``scale: standard`` applied to the stored values once.  Dense data stays as given
    (memory-mapped ``.npy``), scaled on read; a column-major copy is made (in the cache next
    to the file, or in memory) once columns are read, so ``cols(idx)`` reads ``len(idx)``
    columns, not the whole file.
    """

    def __init__(self, array: np.ndarray | sp.sparray | sp.spmatrix, mask: np.ndarray | None,
                 zero_missing: bool = False):
        self.sparse = sp.issparse(array)
        self.zero_missing = zero_missing  # cells equal to 0 are missing (``missing: zero``)
        self.shape: tuple[int, int] = tuple(array.shape)  # type: ignore[assignment]
        self.center: np.ndarray | None = None  # per-column mean and std (``scale: standard``)
        self.spread: np.ndarray | None = None
        self._dense_t: np.ndarray | None = None  # column-major copy, made on first cols()
        self._mask_t: np.ndarray | None = None
        self._cell_rows: np.ndarray | None = None
        self._column_counts: np.ndarray | None = None
        if self.sparse:
            csr = sp.csr_array(array)
            if csr.dtype != np.float32:
                csr = csr.astype(np.float32)
            csr.sum_duplicates()
            if zero_missing:
                csr.eliminate_zeros()
            self.csr = csr
            self.csc = sp.csc_array(csr)
        else:
            self._dense = array
            self._mask = mask

    # ------------------------------------------------------------------ observed cells

    @property
    def nnz(self) -> int:
        """Stored cells (dense: every cell, less those marked missing)."""
        return int(self.csr.nnz) if self.sparse else int(self.column_counts().sum())

    def cell_rows(self) -> np.ndarray:
        """Row index of every stored cell, in CSR order (sparse views; int32)."""
        if self._cell_rows is None:
            counts = np.diff(self.csr.indptr)
            self._cell_rows = np.repeat(np.arange(self.shape[0], dtype=np.int32), counts)
        return self._cell_rows

    def cells(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and value of the stored cells at ``positions`` (CSR order)."""
        return (self.cell_rows()[positions], self.csr.indices[positions],
                self.csr.data[positions])

    def cells_of(self, axis: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row, column and value of every stored cell of rows ``idx`` (``axis`` 0) or of
        columns ``idx`` (``axis`` 1)."""
        part = self.sparse_rows(idx) if axis == 0 else self.sparse_cols(idx)
        owner = np.repeat(np.asarray(idx), np.diff(part.indptr))
        return ((owner, part.indices, part.values) if axis == 0
                else (part.indices, owner, part.values))

    def sparse_rows(self, idx: np.ndarray, cap: int | None = None,
                    rng: np.random.Generator | None = None) -> SparseRows:
        """The stored cells of rows ``idx`` (sparse views; at most ``cap`` a row, sampled:
        :func:`stored_rows`)."""
        return stored_rows(self.csr, idx, self.shape[1], cap, rng)

    def sparse_cols(self, idx: np.ndarray, cap: int | None = None,
                    rng: np.random.Generator | None = None) -> SparseRows:
        """The stored cells of columns ``idx`` as rows of ``Xᵀ`` (sparse views)."""
        return stored_rows(self.csc, idx, self.shape[0], cap, rng)

    def _chunks(self):
        for start in range(0, self.shape[0], CHUNK):
            yield self._take(0, np.arange(start, min(start + CHUNK, self.shape[0])))

    # ------------------------------------------------------------------ statistics

    def observed_mean(self) -> float:
        """Mean of the observed cells (one pass over the stored cells; after scaling)."""
        if self.sparse:
            return float(self.csr.data.mean(dtype=np.float64)) if self.csr.nnz else 0.0
        total = count = 0.0
        for values, mask in self._chunks():
            total += float(values.sum(dtype=np.float64)) if mask is None else float(
                values[mask].sum(dtype=np.float64))
            count += values.size if mask is None else int(mask.sum())
        return total / max(count, 1.0)

    def value_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Up to about ``n`` observed cells' values, drawn at random (after scaling)."""
        if self.sparse:
            data = self.csr.data
            return data if len(data) <= n else data[rng.choice(len(data), n, replace=False)]
        rows = min(self.shape[0], max(1, -(-n // max(self.shape[1], 1))))
        idx = np.sort(rng.choice(self.shape[0], rows, replace=False))
        values, mask = self._take(0, idx)
        return values.ravel() if mask is None else values[mask]

    def column_counts(self) -> np.ndarray:
        """Observed cells per column (dense: one pass, made once; scaling does not change it)."""
        if self.sparse:
            return np.diff(self.csc.indptr).astype(np.float64)
        if self._column_counts is None:
            count = np.zeros(self.shape[1])
            for values, mask in self._chunks():
                count += len(values) if mask is None else mask.sum(axis=0)
            self._column_counts = count
        return self._column_counts

    def standardize(self) -> None:
        """Scale every column to mean 0, std 1 over its observed cells (one pass); every later
        read returns scaled values, missing cells stay missing (0 where densified)."""
        n_c = self.shape[1]
        if self.sparse:
            cols, values = self.csr.indices, self.csr.data.astype(np.float64)
            count = np.bincount(cols, minlength=n_c).astype(np.float64)
            total = np.bincount(cols, weights=values, minlength=n_c)
            squares = np.bincount(cols, weights=values * values, minlength=n_c)
        else:
            total, squares, count = np.zeros(n_c), np.zeros(n_c), np.zeros(n_c)
            for values, mask in self._chunks():
                observed = np.ones_like(values, dtype=bool) if mask is None else mask
                v = np.where(observed, values, 0.0).astype(np.float64)
                total += v.sum(axis=0)
                squares += (v * v).sum(axis=0)
                count += observed.sum(axis=0)
        mean = total / np.maximum(count, 1)
        std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean * mean, 0.0))
        self.center = mean.astype(np.float32)
        self.spread = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        if self.sparse:  # applied once to the stored values
            data = (self.csr.data - self.center[self.csr.indices]) / self.spread[self.csr.indices]
            self.csr.data[:] = data.astype(np.float32)
            self.csc = sp.csc_array(self.csr)

    def scale_new(self, values: np.ndarray, role: str) -> np.ndarray:
        """Scale new rows (``role`` row) with the stored column statistics, or new columns
        (``role`` col) each by its own observed cells, as ``standardize`` scaled the data."""
        if self.center is None or self.spread is None:
            return values
        observed = ~np.isnan(values)
        if role == "row":
            mean, std = self.center, self.spread
        else:
            count = np.maximum(observed.sum(axis=1, keepdims=True), 1)
            mean = np.nansum(values, axis=1, keepdims=True) / count
            std = np.sqrt(np.nansum((values - mean) ** 2, axis=1, keepdims=True) / count)
            std = np.where(std > 1e-8, std, 1.0)
        return np.where(observed, (values - mean) / std, np.nan).astype(np.float32)

    def scale_new_rows(self, rows: SparseRows, role: str) -> SparseRows:
        """``scale_new`` for the stored cells of new sparse rows (or columns)."""
        if self.center is None or self.spread is None:
            return rows
        values = rows.values.astype(np.float64)
        if role == "row":
            mean, std = self.center[rows.indices], self.spread[rows.indices]
        else:
            which = np.repeat(np.arange(len(rows)), np.diff(rows.indptr))
            count = np.maximum(np.bincount(which, minlength=len(rows)), 1)
            m = np.bincount(which, weights=values, minlength=len(rows)) / count
            var = np.bincount(which, weights=(values - m[which]) ** 2,
                              minlength=len(rows)) / count
            s = np.sqrt(var)
            mean, std = m[which], np.where(s > 1e-8, s, 1.0)[which]
        scaled = ((values - mean) / std).astype(np.float32)
        return SparseRows(rows.indptr, rows.indices, scaled, rows.width)

    def sketch(self, width: int, seed: int) -> np.ndarray:
        """``Xᵀ R`` for a fixed Gaussian ``R`` (n_r × width, entries N(0, 1/width)), each
        column divided by the square root of its observed cells so the sketch's scale does
        not grow with n_r; one streaming pass over the stored cells (sparse: sparse products).
        """
        rng = np.random.default_rng(seed)
        n_r, n_c = self.shape
        out = np.zeros((n_c, width), dtype=np.float64)
        for start in range(0, n_r, CHUNK):
            stop = min(start + CHUNK, n_r)
            r = rng.standard_normal((stop - start, width)) / np.sqrt(width)
            if self.sparse:
                out += (self.csr[start:stop].T @ r)
            else:
                values, _ = self.rows(np.arange(start, stop))
                out += values.T.astype(np.float64) @ r
        out /= np.sqrt(np.maximum(self.column_counts(), 1.0))[:, None]
        return out.astype(np.float32)

    def has_nan(self) -> bool:
        if self.sparse:
            return bool(np.isnan(self.csr.data).any())
        if not np.issubdtype(self._dense.dtype, np.floating):
            return False
        return any(
            np.isnan(self._dense[s : s + CHUNK]).any() for s in range(0, self.shape[0], CHUNK)
        )

    # ------------------------------------------------------------------ dense reads

    def _take(self, axis: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        values, mask = self._read(axis, idx)
        if self.sparse or self.center is None or self.spread is None:
            return values, mask
        # columns of X are axis 1 of rows(idx) and axis 0 of cols(idx) = X[:, idx]ᵀ
        mean, std = (self.center, self.spread) if axis == 0 else (
            self.center[idx][:, None], self.spread[idx][:, None])
        scaled = (values - mean) / std
        if mask is not None:
            scaled = np.where(mask, scaled, 0.0)
        return scaled.astype(np.float32), mask

    def _read(self, axis: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if self.sparse:  # densified: only for encoders that take dense inputs
            part = self.sparse_rows(idx) if axis == 0 else self.sparse_cols(idx)
            values = np.zeros((len(idx), part.width), dtype=np.float32)
            mask = np.zeros((len(idx), part.width), dtype=bool)
            rows = np.repeat(np.arange(len(idx)), np.diff(part.indptr))
            values[rows, part.indices] = part.values
            mask[rows, part.indices] = True
            return values, mask
        if axis == 1:
            source, given_mask = self._columns()
        else:
            source, given_mask = self._dense, self._mask
        sorted_idx, inverse = sorted_order(idx)
        block = np.asarray(source[sorted_idx])[inverse]
        values, mask = _as_float(block)
        if self.zero_missing:
            zero = values == 0
            if zero.any():
                mask = ~zero if mask is None else (mask & ~zero)
        if given_mask is not None:
            given = np.asarray(given_mask[sorted_idx], dtype=bool)[inverse]
            mask = given if mask is None else (mask & given)
            values = np.where(given, values, 0.0).astype(np.float32)
        return values, mask

    def _columns(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``Xᵀ`` (and its mask) row-major, made once: from the cache next to a memory-mapped
        file, else in memory."""
        if self._dense_t is None:
            self._dense_t = transposed(self._dense)
            self._mask_t = None if self._mask is None else transposed(self._mask)
        return self._dense_t, self._mask_t

    def rows(self, idx: np.ndarray, scaled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``X[idx, :]`` dense (float32, missing cells 0) and its mask (None: all observed);
        ``scaled=False``: as stored, before ``scale: standard`` (dense data)."""
        return self._take(0, idx) if scaled else self._read(0, idx)

    def cols(self, idx: np.ndarray, scaled: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``X[:, idx]ᵀ`` dense (float32, missing cells 0) and its mask."""
        return self._take(1, idx) if scaled else self._read(1, idx)


def transposed(array: np.ndarray) -> np.ndarray:
    """A row-major copy of ``array.T``: cached next to a memory-mapped ``.npy``, in memory
    otherwise (column encoders read at most ``WIDE`` rows, so the copy stays small)."""
    filename = getattr(array, "filename", None)
    if filename is None:
        return np.ascontiguousarray(array.T)
    source = Path(filename)
    st = source.stat()
    key = f"{st.st_size}-{st.st_mtime_ns}-{array.offset if hasattr(array, 'offset') else 0}"

    def compute() -> np.ndarray:
        out = np.empty(array.shape[::-1], dtype=array.dtype)
        for start in range(0, array.shape[0], CHUNK):
            out[:, start : start + CHUNK] = np.asarray(array[start : start + CHUNK]).T
        return out

    result, _ = cached_array(source, "T", key, compute)
    return result


class TensorData:
    """A tensor view: ``take(idx)`` → ``T[idx]`` in its stored dtype.

    ``rows_of`` (``instances:`` in the spec) maps each instance of the entity to its row of
    the array, −1 for an instance without this view: ``take`` gives such an instance zeros
    and ``present`` says which instances have the view.
    """

    def __init__(self, array: np.ndarray, rows_of: np.ndarray | None = None):
        self._array = array
        self.rows_of = rows_of
        n = len(array) if rows_of is None else len(rows_of)
        self.shape: tuple[int, ...] = (n, *array.shape[1:])
        self.dtype = array.dtype

    @property
    def n_present(self) -> int:
        """Instances that have this view."""
        return len(self._array)

    def present(self, idx: np.ndarray) -> np.ndarray | None:
        """Which of instances ``idx`` have this view (None: every one)."""
        if self.rows_of is None:
            return None
        return self.rows_of[np.asarray(idx)] >= 0

    def take(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx)
        if self.rows_of is None:
            return self._read(idx)
        rows = self.rows_of[idx]
        have = rows >= 0
        out = np.zeros((len(idx), *self.shape[1:]), dtype=self.dtype)
        if have.any():
            out[have] = self._read(rows[have])
        return out

    def _read(self, rows: np.ndarray) -> np.ndarray:
        sorted_idx, inverse = sorted_order(rows)
        return np.asarray(self._array[sorted_idx])[inverse]

    def value_sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Every value of a few random instances that have the view (about ``n`` in all), as
        the model sees them (uint8 scaled to [0, 1])."""
        per = int(np.prod(self.shape[1:], dtype=np.int64)) or 1
        count = min(self.n_present, max(1, -(-n // per)))
        values = self._read(np.sort(rng.choice(self.n_present, count, replace=False))).ravel()
        return values / 255.0 if values.dtype == np.uint8 else values.astype(np.float64)


def instance_rows(spec: Spec, vname: str, n_rows: int, ids: dict[str, list[str]]
                  ) -> tuple[np.ndarray | None, list[SpecIssue]]:
    """A tensor view's ``instances``: each instance of its entity → its row of the data
    (−1: the instance has no such view), checked against the data's rows and the ids."""
    v = spec.views[vname]
    loc = ("views", vname, "instances")
    shown = spec.shown(v.instances)
    try:
        listed = read_ids(v.instances, shown)
    except ValueError as exc:
        return None, [spec.issue(loc, str(exc))]
    if v.rows not in ids:
        return None, [spec.issue(loc, f"`instances` names instances by id, and entity "
                                      f"{v.rows!r} has no ids: give it an `ids` file")]
    if len(listed) != n_rows:
        return None, [spec.issue(loc, f"{shown} lists {len(listed):,} instances but the data "
                                      f"has {n_rows:,} rows (one id a row, in order)")]
    at = {name: i for i, name in enumerate(ids[v.rows])}
    unknown = [name for name in listed if name not in at]
    if unknown:
        return None, [spec.issue(loc, f"{shown}: {len(unknown):,} ids are not instances of "
                                      f"entity {v.rows!r} (first: {unknown[0]!r})")]
    rows_of = np.full(len(at), -1, dtype=np.int64)
    rows_of[[at[name] for name in listed]] = np.arange(n_rows)
    return rows_of, []


@dataclass
class Data:
    """Every view of a spec, loaded and checked, with each entity's size and ids."""

    sizes: dict[str, int]
    ids: dict[str, list[str]]
    views: dict[str, MatrixData | TensorData]
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    dataset_message: str | None = None
    #: cells of ``evaluate.holdout`` views kept out of ``views`` (data units)
    held: dict[str, HeldCells] = field(default_factory=dict)
    #: cells of ``train.validation`` kept out of ``views`` (data units), scored every epoch
    validation: dict[str, HeldCells] = field(default_factory=dict)
    #: each featurizer's :attr:`~mmfuse.plugin_api.ViewArray.state` (what featurizes new raw
    #: input of its view), kept in the run folder
    states: dict[str, dict[str, Any]] = field(default_factory=dict)

    def shapes(self) -> dict[str, list[int]]:
        return {name: list(v.shape) for name, v in self.views.items()}


def read_ids(path: Path, shown: str | None = None) -> list[str]:
    """The ids of an ids file: UTF-8 text, one id a line (a trailing newline, or trailing
    blank lines, are fine).  A ValueError says what is wrong: not a file, not UTF-8, no ids,
    a blank line among the ids (it would shift every id after it), an id listed twice;
    messages name the file as ``shown`` (default: the path)."""
    shown = shown or str(path)
    if path.is_dir():
        raise ValueError(f"{shown} is a folder; `ids` names a text file, one id a line")
    if not path.exists():
        raise ValueError(f"file not found: {shown}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{shown}: line {line} is {describe(exc)}") from exc
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise ValueError(f"{shown} lists no ids; write one id a line")
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        more = f" (and {len(blank) - 1} more)" if len(blank) > 1 else ""
        raise ValueError(f"{shown}: line {blank[0]}{more} is blank, among the ids; remove it "
                         "(one id a line: a blank line would shift every id after it)")
    first: dict[str, int] = {}
    for i, ident in enumerate(lines, 1):
        if ident in first:
            n_dup = len(lines) - len(set(lines))
            repeated = f"{n_dup:,} repeated line{'s' * (n_dup != 1)}"
            raise ValueError(f"{shown}: ids are not unique: {ident!r} is on lines {first[ident]} "
                             f"and {i} ({repeated} in all); ids must be unique")
        first[ident] = i
    return lines


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"position {i}: {x!r} where the entity has {y!r}"
    return f"lengths {len(a)} and {len(b)}"


def failure(exc: Exception, what: str) -> str:
    """What a user reads when plugin or third-party code raised ``exc`` while doing ``what``
    ("reader 'npy' cannot read /data/x.npy"): the problem, and the fix where it is known."""
    if isinstance(exc, MemoryError):
        return (f"{what}: not enough memory; keep the data memory-mapped (.npy), store it "
                "sparse (.npz), or use a machine with more memory")
    hint = ""
    if isinstance(exc, IsADirectoryError):
        hint = "; `path` names a folder where a file is expected"
    elif isinstance(exc, PermissionError):
        hint = "; make it readable (chmod u+r) or run as a user who can read it"
    elif not isinstance(exc, (ValueError, OSError)):  # not a message the plugin wrote for us
        hint = "; is the file complete, and in the format this reader reads?"
    return f"{what}: {describe(exc)}{hint}"


def prepare_dataset(spec: Spec, plugins: Plugins) -> str | None:
    """Let the spec's dataset plugin prepare its folder; return what it says about the data."""
    if spec.dataset is None:
        return None
    dataset = plugins.datasets.get(spec.dataset.name)
    try:
        return dataset.ensure(spec.dataset.root, dict(spec.dataset.params))
    except MmfuseError:
        raise
    except Exception as exc:  # plugin code: its message, at the spec's dataset field
        msg = (str(exc) if isinstance(exc, (ValueError, OSError)) and str(exc)
               else failure(exc, f"dataset {spec.dataset.name!r}"))
        raise SpecError([spec.issue(("dataset",), msg)]) from exc


def reader_param_issues(spec: Spec, plugins: Plugins) -> list[SpecIssue]:
    """Every view's ``source.params`` checked against the params model its reader declared
    (:func:`mmfuse.plugin_api.reader_params`): unknown params (with "did you mean") and wrong
    types, each at ``views.VIEW.source.params.KEY``.  An unknown reader is skipped (the
    spec's references report it); an undeclared one checks its params itself."""
    issues: list[SpecIssue] = []
    for vname, v in spec.views.items():
        if v.source.reader not in plugins.readers:
            continue
        model = declared_params(plugins.readers.get(v.source.reader))
        if model is None:
            continue
        _, problems = check_params(model, v.source.params)
        loc = ("views", vname, "source", "params")
        issues += [spec.issue((*loc, *where), f"reader {v.source.reader!r}: {msg}")
                   for where, msg in problems]
    return issues


def _read_entity_ids(spec: Spec, sizes: dict[str, int], ids: dict[str, list[str]]
                     ) -> list[SpecIssue]:
    issues: list[SpecIssue] = []
    for ename, ent in spec.entities.items():
        if ent.ids is None:
            if ent.size is not None:
                sizes[ename] = ent.size
            continue
        try:
            ids[ename] = read_ids(ent.ids, spec.shown(ent.ids))
        except (ValueError, OSError) as exc:
            issues.append(spec.issue(("entities", ename, "ids"), str(exc) if isinstance(
                exc, ValueError) else failure(exc, f"cannot read {spec.shown(ent.ids)}")))
            continue
        if ent.size is not None and ent.size != len(ids[ename]):
            msg = f"size {ent.size} but the ids file lists {len(ids[ename])} ids"
            issues.append(spec.issue(("entities", ename, "size"), msg))
        sizes[ename] = len(ids[ename])
    return issues


def load_data(spec: Spec, plugins: Plugins) -> Data:
    """Read every view and check it (its reader's params, dtype, values, shape, ids), and
    the evaluation targets' labels; raise :class:`SpecError` listing every problem."""
    from mmfuse.evaluate import target_issues  # evaluate imports this module

    message = prepare_dataset(spec, plugins)
    issues = reader_param_issues(spec, plugins)
    bad_params = {i.loc[1] for i in issues}
    sizes: dict[str, int] = {}
    ids: dict[str, list[str]] = {}
    issues += _read_entity_ids(spec, sizes, ids)
    cause: BaseException | None = None  # the first plugin exception, for --debug

    views: dict[str, MatrixData | TensorData] = {}
    info: dict[str, dict[str, Any]] = {}
    states: dict[str, dict[str, Any]] = {}
    holdout = spec.evaluate.holdout if spec.evaluate else None
    held_views = set(holdout.views) if holdout else set()
    held: dict[str, HeldCells] = {}
    validating = validation_split(spec)
    if spec.train.validation and validating is None:
        issues.append(spec.issue(("train", "validation"), (
            "validation cells are scored by a view's factor term, and no view of this spec "
            "has one: use it with a spec that has a matrix view between two entities (`cols:`) "
            "whose factor term is on (`terms.factor`, on in every preset), or set it to 0")))
    validated: dict[str, HeldCells] = {}
    for vname, v in spec.views.items():
        loc = ("views", vname)
        src = v.source
        if vname in bad_params:
            continue
        if src.path is not None and not src.path.exists():
            issues.append(spec.issue((*loc, "source", "path"),
                                     f"file not found: {spec.shown(src.path)}"))
            continue
        ctx = ReadContext(
            view=vname,
            row_ids=ids.get(v.rows),
            col_ids=ids.get(v.cols) if v.cols else None,
            spec_dir=spec.base_dir or Path.cwd(),
        )
        where = spec.shown(src.path) if src.path is not None else f"reader {src.reader!r}"
        try:
            read = plugins.readers.get(src.reader)(src.path, dict(src.params), ctx)
        except MmfuseError:
            raise
        except Exception as exc:  # plugin and third-party code: never an internal error
            what = (f"reader {src.reader!r} cannot read {where}" if src.path is not None
                    else f"reader {src.reader!r}")
            issues.append(spec.issue((*loc, "source"), failure(exc, what)))
            cause = cause or exc
            continue
        if not isinstance(read, ViewArray):
            read = ViewArray(data=read)
        if not (isinstance(read.data, np.ndarray) or sp.issparse(read.data)):
            msg = (f"reader {src.reader!r} returned {type(read.data).__name__} for {where}; a "
                   "reader returns a numpy array or a scipy sparse matrix (a plugin bug)")
            issues.append(spec.issue((*loc, "source"), msg))
            continue
        if v.features and read.data.ndim == 1:  # one feature
            read = replace(read, data=read.data.reshape(-1, 1), mask=None
                                       if read.mask is None else read.mask.reshape(-1, 1))
        found = _check_view(spec, vname, read, sizes, ids, where)
        found += [] if found else _check_values(spec, vname, read, where)
        issues += found
        if found:
            continue
        info[vname] = dict(read.info)
        if read.state is not None:
            states[vname] = dict(read.state)
        if vname in held_views and not issues:
            try:
                train, mask, held[vname] = split_view(vname, read.data, read.mask, holdout,
                                                      zero_missing=v.missing == "zero")
            except ValueError as exc:
                issues.append(spec.issue(("evaluate", "holdout", "views"), str(exc)))
                continue
            read = replace(read, data=train, mask=mask)
            info[vname]["held_out_cells"] = len(held[vname])
        if validating is not None and vname in validating.views and not issues:
            try:  # from the training part, another generator: never a held-out cell
                train, mask, validated[vname] = split_view(
                    vname, read.data, read.mask, validating, zero_missing=v.missing == "zero",
                    stream=(VALIDATION_STREAM,))
            except ValueError as exc:
                issues.append(spec.issue(("train", "validation"), str(exc)))
                continue
            read = replace(read, data=train, mask=mask)
            info[vname]["validation_cells"] = len(validated[vname])
        if v.is_tensor:
            rows_of = None
            if v.instances is not None:
                rows_of, found = instance_rows(spec, vname, len(read.data), ids)
                issues += found
                if found:
                    continue
                info[vname]["instances"] = len(read.data)
                log.info("view %r: %s of %s %s instances have it; the others are trained "
                         "and embedded from their other views", vname, f"{len(read.data):,}",
                         f"{len(rows_of):,}", v.rows)
            views[vname] = TensorData(read.data, rows_of)
        else:
            views[vname] = MatrixData(read.data, read.mask, zero_missing=v.missing == "zero")
            if read.mask is None and v.missing != "zero" and not views[vname].sparse:
                _warn_if_mostly_zero(vname, views[vname])
            if spec.scale_of(vname, views[vname].sparse) == "standard" and not issues:
                views[vname].standardize()
    issues += target_issues(spec, sizes)
    if issues:
        raise SpecError(issues) from cause
    for ename, n in sizes.items():
        ids.setdefault(ename, [str(i) for i in range(n)])
    return Data(sizes=sizes, ids=ids, views=views, info=info, dataset_message=message,
                held=held, validation=validated, states=states)


_KINDS = {"U": "text", "S": "bytes", "O": "Python objects", "c": "complex numbers",
          "M": "dates", "m": "time spans", "V": "structured records"}


def dtype_problem(dtype: np.dtype) -> str | None:
    """Why a view cannot hold data of ``dtype`` (None: numeric or bool, fine)."""
    if dtype.kind in "biuf":
        return None
    kind = _KINDS.get(dtype.kind, f"dtype {dtype}")
    fix = {
        "c": "mmfuse takes real numbers and never drops an imaginary part: store the real and "
             "imaginary parts as separate columns or views, or the magnitude (np.abs)",
        "U": "encode categories as numbers (one-hot), or read documents with a text "
             "featurizer (reader tfidf, word2vec or glove)",
        "M": "convert them to numbers (e.g. days since a date)",
        "m": "convert them to numbers (e.g. seconds)",
    }.get(dtype.kind, "save it as a numeric array (e.g. np.save(path, x.astype(np.float32)))")
    return f"holds {kind} (dtype {dtype}), not numbers: a view's data must be numeric or " \
           f"boolean; {fix}"


def _value_stats(read: ViewArray) -> tuple[int, int, float, int]:
    """(infinite cells, NaN cells, largest finite magnitude, cells looked at) over the
    observed cells: a sparse matrix's stored values only, a dense array (memory-mapped
    or not) in blocks of ``SCAN_CELLS`` cells, never all at once."""
    data = read.data
    if sp.issparse(data):
        if data.format not in ("csr", "csc", "coo"):
            data = sp.csr_array(data)
        blocks = [(np.asarray(data.data), None)]
    else:
        per_row = max(1, int(np.prod(data.shape[1:], dtype=np.int64)))
        step = max(1, SCAN_CELLS // per_row)
        mask = read.mask
        blocks = ((np.asarray(data[s:s + step]),
                   None if mask is None else np.asarray(mask[s:s + step], dtype=bool))
                  for s in range(0, data.shape[0], step))
    n_inf = n_nan = cells = 0
    largest = 0.0
    floating = data.dtype.kind == "f"
    for values, observed in blocks:
        if observed is not None:
            values = values[observed]
        cells += values.size
        if not values.size:
            continue
        magnitude = np.abs(values)
        if floating:
            nan = np.isnan(magnitude)
            inf = np.isinf(magnitude)
            bad = nan | inf
            if bad.any():
                n_nan += int(nan.sum())
                n_inf += int(inf.sum())
                magnitude = magnitude[~bad]
        if magnitude.size:
            largest = max(largest, float(magnitude.max()))
    return n_inf, n_nan, largest, cells


def _check_values(spec: Spec, vname: str, read: ViewArray, where: str) -> list[SpecIssue]:
    """A view's dtype (numeric or bool), its values (no infinite cell; no NaN where
    ``missing: forbid``) and their scale (a warning when they are too large to train on)."""
    v = spec.views[vname]
    loc = ("views", vname, "source")
    problem = dtype_problem(np.dtype(read.data.dtype))
    if problem is not None:
        return [spec.issue(loc, f"{where} {problem}")]
    if read.data.dtype.kind == "b" or (read.data.dtype.kind in "iu"
                                       and read.data.dtype.itemsize <= 4):
        return []  # no inf, no NaN, nothing beyond 4.3e9
    n_inf, n_nan, largest, cells = _value_stats(read)
    issues = []
    if n_inf:
        issues.append(spec.issue(loc, f"{where} has {n_inf:,} infinite "
                                      f"cell{'s' * (n_inf != 1)} (of {cells:,}); "
                                      "mmfuse takes finite numbers: replace them (by NaN where "
                                      "they mean 'unknown': a NaN cell is missing)"))
    if n_nan and v.missing == "forbid":
        issues.append(spec.issue(("views", vname, "missing"),
                                 f"{where} has {n_nan:,} NaN cell{'s' * (n_nan != 1)}, and "
                                 "`missing: forbid` says "
                                 "no cell may be missing; fill them in, or drop `missing: "
                                 "forbid` (NaN cells are then missing)"))
    if largest > LARGE_VALUE and not (spec.scale_of(vname, sp.issparse(read.data)) == "standard"
                                      and not v.is_tensor):
        fix = ("rescale the file (e.g. to [0, 1])" if v.is_tensor else
               "set `scale: standard` on the view (each column to mean 0, std 1) or rescale "
               "the file")
        log.warning("%s", spec.issue(loc, f"{where} has values as large as {largest:.3g} "
                                          f"(beyond {LARGE_VALUE:.0e}): squared in the loss "
                                          "they overflow or drown every other view, and "
                                          f"training diverges; {fix}"))
    return issues


def _warn_if_mostly_zero(vname: str, matrix: MatrixData, share: float = 0.5) -> None:
    """A dense matrix that is mostly 0 is often a sparse one with 0 for "not observed"
    (ratings, counts): say so, from the first rows (one chunk)."""
    values, mask = matrix._read(0, np.arange(min(CHUNK, matrix.shape[0])))
    observed = values if mask is None else values[mask]
    zeros = float((observed == 0).mean()) if observed.size else 0.0
    if zeros > share:
        log.warning("view %r: %.0f%% of its cells are 0 and all count as observed; if 0 means "
                    "'not observed' (ratings, counts), set `missing: zero`, give the reader a "
                    "`mask:` file, or store it sparse (.npz)", vname, 100 * zeros)


def _check_view(spec, vname, read: ViewArray, sizes, ids, where: str) -> list[SpecIssue]:
    """A view's shape against its spec and its entities' sizes and ids."""
    v = spec.views[vname]
    loc = ("views", vname)
    shape = tuple(read.data.shape)
    issues: list[SpecIssue] = []
    if len(shape) and 0 in shape:
        empty = "rows" if shape[0] == 0 else "columns"
        return [spec.issue((*loc, "source"), f"{where} holds no data: 0 {empty} (shape "
                                             f"{list(shape)}); a view needs at least one cell")]

    def check_axis(axis: int, ename: str, role: str, given_ids: list[str] | None):
        n = shape[axis]
        if ename not in sizes:
            sizes[ename] = n
        elif sizes[ename] != n:
            msg = f"{where} has {n} {role}s but entity {ename!r} has {sizes[ename]} instances"
            issues.append(spec.issue((*loc, role + "s"), msg))
            return
        if given_ids is not None and ename not in ids:  # the first reader that knows them
            ids[ename] = [str(i) for i in given_ids]
            if len(set(ids[ename])) != n:
                msg = f"the {role} ids it gives entity {ename!r} are not unique"
                issues.append(spec.issue((*loc, "source"), msg))
        elif given_ids is not None and list(given_ids) != ids[ename]:
            differ = _first_difference(list(given_ids), ids[ename])
            msg = (f"{role}s are not in the order of entity {ename!r} ids "
                   f"(first difference at {differ})")
            issues.append(spec.issue((*loc, "source"), msg))

    if v.is_tensor:
        want = tuple(v.tensor.shape)
        if shape[1:] != want:
            msg = f"{where} has shape {list(shape)}; expected [n, {', '.join(map(str, want))}]"
            issues.append(spec.issue((*loc, "tensor", "shape"), msg))
            return issues
        if v.instances is None:  # else its rows are matched by ids (``instance_rows``)
            check_axis(0, v.rows, "row", read.row_ids)
    else:
        if len(shape) != 2:
            kind = "a feature view needs 1-D or 2-D" if v.features else "a matrix view needs 2-D"
            hint = ("; an image or other array per row is a tensor view (`tensor: {shape: "
                    f"{list(shape[1:])}}}`)" if len(shape) > 2 else
                    "; a 1-D array is one feature of each row: `features: true`"
                    if len(shape) == 1 else "")
            return [spec.issue((*loc, "source"),
                               f"{where}: {kind} data; got shape {list(shape)}{hint}")]
        check_axis(0, v.rows, "row", read.row_ids)
        if not v.features:
            check_axis(1, v.cols, "col", read.col_ids)
        if read.mask is not None and tuple(read.mask.shape) != shape:
            issues.append(spec.issue((*loc, "source"), f"{where}: the reader's mask has shape "
                                     f"{list(read.mask.shape)}, the data {list(shape)}"))
    return issues

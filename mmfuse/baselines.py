"""Single-view baselines: the raw data of one view (or all of them) as an entity's features.

For entity ``e`` and a view that touches it, an instance's features are its matrix row
``X[i, :]`` (``e`` is the row entity), its column ``X[:, i]`` (``e`` is the column entity),
both concatenated (a square view such as gene × gene), or its flattened tensor.  Missing cells
are 0.  A sparse view stays sparse: its features are a ``scipy.sparse.csr_array`` over the
stored cells (the CSR rows, or the CSC columns read as rows; a read-only view of the stored
arrays, not a copy), never a dense array.

Dense views are read as stored (before the spec's ``scale:``).  ``concat`` joins every
listed view, each block scaled to unit total variance on the train split (so a 12,288-pixel
cover does not drown 100 word2vec dimensions; a sparse block's variance is computed from its
stored cells); it is sparse when any block is.  ``pca`` is ``concat`` (or the one view)
reduced to ``dim`` components fit on the train split only: dense features by PCA, sparse
ones by truncated SVD (no centring, so the matrix stays sparse); sparse features are always
reduced so.  Reduced features are always a dense ``float32`` array.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmfuse.data import Data, MatrixData, TensorData
from mmfuse.spec import Spec

log = logging.getLogger(__name__)

CONCAT = "concat"
PCA_NAME = "pca"  # the concatenation (or the one view) reduced to ``dim`` components

Features = np.ndarray | sp.csr_array


def views_touching(spec: Spec, entity: str) -> list[str]:
    """Views with ``entity`` as row entity, column entity, or both (spec order)."""
    return [name for name, v in spec.views.items() if entity in (v.rows, v.cols)]


def sides(spec: Spec, view: str, entity: str) -> list[str]:
    """Which sides of ``view`` describe ``entity``: ``row``, ``col`` (both when square)."""
    v = spec.views[view]
    if v.is_tensor:
        return ["tensor"]
    return [s for s, e in (("row", v.rows), ("col", v.cols)) if e == entity]


def _read_only(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


def _sparse_side(matrix: MatrixData, side: str) -> sp.csr_array:
    """The stored cells of ``matrix`` as CSR rows of the entity on ``side``: a read-only view
    of the stored arrays (no copy), or a copy with NaN cells set to 0 if there are any."""
    cells = matrix.csr if side == "row" else matrix.csc.T  # csc.T is CSR, no copy
    data = cells.data
    if data.dtype != np.float32 or np.isnan(data).any():
        data = np.nan_to_num(data.astype(np.float32))
    return sp.csr_array((_read_only(data), _read_only(cells.indices), _read_only(cells.indptr)),
                        shape=cells.shape, copy=False)


def raw_features(spec: Spec, data: Data, view: str, entity: str) -> Features:
    """``n_entity × width`` float32 raw data of ``view`` for every instance of ``entity``:
    a ``csr_array`` for a sparse view (cells not stored are 0), else a dense array (zeros
    for an instance without a tensor view, as a five-minute baseline would impute it)."""
    stored = data.views[view]
    idx = np.arange(data.sizes[entity])
    if isinstance(stored, TensorData):
        block = stored.take(idx)
        return np.nan_to_num(block.reshape(len(idx), -1).astype(np.float32))
    matrix: MatrixData = stored
    which = sides(spec, view, entity)
    if matrix.sparse:
        blocks = [_sparse_side(matrix, side) for side in which]
        return blocks[0] if len(blocks) == 1 else sp.csr_array(
            sp.hstack(blocks, format="csr", dtype=np.float32))
    dense = [(matrix.rows(idx, scaled=False) if side == "row" else
              matrix.cols(idx, scaled=False))[0] for side in which]
    return np.nan_to_num(np.concatenate(dense, axis=1).astype(np.float32, copy=False))


def reduction(x: Features, dim: int) -> str | None:
    """How :func:`reduce` reduces ``x``: ``pca`` (dense), ``truncated_svd`` (sparse), or None
    (at most ``dim`` wide: kept as is)."""
    if x.shape[1] <= dim:
        return None
    return "truncated_svd" if sp.issparse(x) else "pca"


def reduce(x: Features, train: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """``x`` itself (densified if sparse) when at most ``dim`` wide, else its first ``dim``
    components fit on ``x[train]`` only and applied to every row: principal components of
    dense ``x``, a truncated SVD (uncentred) of sparse ``x``."""
    method = reduction(x, dim)
    if method is None:
        return x.toarray().astype(np.float32, copy=False) if sp.issparse(x) else x
    from sklearn.decomposition import PCA, TruncatedSVD

    n_components = min(dim, len(train))
    model = (TruncatedSVD(n_components=n_components, random_state=seed) if method ==
             "truncated_svd" else PCA(n_components=n_components, random_state=seed))
    with np.errstate(invalid="ignore", divide="ignore"):  # constant data: 0/0 variance ratio
        model.fit(x[train])
        return np.asarray(model.transform(x), dtype=np.float32)


def train_variance(block: Features, train: np.ndarray) -> float:
    """Total variance (summed over columns) of ``block[train]``; for a sparse block from its
    stored cells, E[x²] − E[x]² per column with cells not stored counting as 0."""
    rows = block[train]
    n = rows.shape[0]
    if n == 0:
        return 0.0
    if not sp.issparse(rows):
        return float(rows.var(axis=0).sum())
    rows = sp.csr_array(rows)
    rows.sum_duplicates()
    values = rows.data.astype(np.float64)
    sums = np.bincount(rows.indices, weights=values, minlength=rows.shape[1])
    total = float(values @ values) / n - float(((sums / n) ** 2).sum())
    return max(total, 0.0)


def block_scaled(blocks: list[Features], train: np.ndarray) -> Features:
    """Concatenate blocks, each divided by the square root of its total train variance;
    a ``csr_array`` if any block is sparse, else a dense float32 array."""
    scaled = []
    for block in blocks:
        total = train_variance(block, train)
        factor = np.float32(1.0 / np.sqrt(total)) if total > 0 else np.float32(1.0)
        scaled.append(sp.csr_array(block * factor, dtype=np.float32) if sp.issparse(block)
                      else (block * factor).astype(np.float32, copy=False))
    if any(sp.issparse(b) for b in scaled):
        return sp.csr_array(sp.hstack([b if sp.issparse(b) else sp.csr_array(b)
                                       for b in scaled], format="csr", dtype=np.float32))
    return np.concatenate(scaled, axis=1)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"|")
    return h.hexdigest()


@dataclass
class BaselineFeatures:
    """Raw and reduced baseline features, computed once per (view, entity, rows, split)."""

    spec: Spec
    data: Data
    dim: int
    _raw: dict[tuple[str, str], Features] = field(default_factory=dict)
    _reduced: dict[tuple[str, ...], tuple[np.ndarray, dict[str, Any]]] = field(
        default_factory=dict)

    def raw(self, view: str, entity: str) -> Features:
        key = (view, entity)
        if key not in self._raw:
            x = self._raw[key] = raw_features(self.spec, self.data, view, entity)
            if sp.issparse(x):
                log.info("baseline %s for %s: %s raw features, sparse, %d stored", view,
                         entity, x.shape, x.nnz)
            else:
                log.info("baseline %s for %s: %s raw features", view, entity, x.shape)
        return self._raw[key]

    def features(self, name: str, views: list[str], entity: str, keep: np.ndarray,
                 train: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Features of the kept instances for baseline ``name``: a view's raw data,
        ``concat`` of ``views`` (each block scaled to unit variance on ``train``), or ``pca``
        (``concat`` — or the one view — reduced to ``dim`` by PCA fit on ``train``, indices
        into the kept rows).  Sparse data is always reduced, by a truncated SVD (no probe
        standardises a sparse matrix).  ``info``: ``width``, ``dim``, ``pca`` (reduced at
        all), ``reduction`` (``pca``, ``truncated_svd`` or ``none``), ``sides`` or ``views``.

        Kept for the next call: reduced features (``dim`` wide) per split, and one view's
        raw features per ``keep`` (they do not depend on the split; all instances kept: the
        raw array itself, no copy).  An unreduced ``concat`` is rebuilt each call, so that
        repeated splits do not hold a copy of every view per split."""
        joined = name in (CONCAT, PCA_NAME) and len(views) > 1
        view = None if joined else views[0] if name == PCA_NAME else name
        shrink = name == PCA_NAME or (view is not None and sp.issparse(self.raw(view, entity)))
        by_split = joined or shrink
        key = (name, *views, entity, _digest(keep, train) if by_split else _digest(keep))
        if key in self._reduced:
            return self._reduced[key]
        if joined:
            x = block_scaled([self._kept(v, entity, keep) for v in views], train)
            info: dict[str, Any] = {"views": list(views)}
            shrink = shrink or sp.issparse(x)
        else:
            x = self._kept(view, entity, keep)
            info = {"sides": sides(self.spec, view, entity)}
        method = reduction(x, self.dim) if shrink else None
        reduced = reduce(x, train, self.dim) if shrink else x
        info.update({"width": int(x.shape[1]), "dim": int(reduced.shape[1]),
                     "pca": method is not None, "reduction": method or "none"})
        if shrink or not joined:
            self._reduced[key] = (reduced, info)
        return reduced, info

    def _kept(self, view: str, entity: str, keep: np.ndarray) -> Features:
        x = self.raw(view, entity)
        return x if keep.all() else x[keep]

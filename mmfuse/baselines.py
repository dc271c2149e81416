"""Single-view baselines: the raw data of one view (or all of them) as an entity's features.

For entity ``e`` and a view that touches it, an instance's features are its matrix row
``X[i, :]`` (``e`` is the row entity), its column ``X[:, i]`` (``e`` is the column entity),
both concatenated (a square view such as gene × gene), or its flattened tensor.  Missing cells
are 0.  Features wider than ``dim`` are reduced to ``dim`` principal components, the PCA being
fit on the train split only.  ``concat`` joins every listed view, each block scaled to unit
total variance on the train split (so a 12,288-pixel cover does not drown 100 word2vec
dimensions), then reduced the same way.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from mmfuse.data import Data, MatrixData, TensorData
from mmfuse.spec import Spec

log = logging.getLogger(__name__)

CONCAT = "concat"


def views_touching(spec: Spec, entity: str) -> list[str]:
    """Views with ``entity`` as row entity, column entity, or both (spec order)."""
    return [name for name, v in spec.views.items() if entity in (v.rows, v.cols)]


def sides(spec: Spec, view: str, entity: str) -> list[str]:
    """Which sides of ``view`` describe ``entity``: ``row``, ``col`` (both when square)."""
    v = spec.views[view]
    if v.is_tensor:
        return ["tensor"]
    return [s for s, e in (("row", v.rows), ("col", v.cols)) if e == entity]


def raw_features(spec: Spec, data: Data, view: str, entity: str) -> np.ndarray:
    """``n_entity × width`` float32 raw data of ``view`` for every instance of ``entity``."""
    stored = data.views[view]
    idx = np.arange(data.sizes[entity])
    if isinstance(stored, TensorData):
        block = stored.take(idx)
        return np.nan_to_num(block.reshape(len(idx), -1).astype(np.float32))
    matrix: MatrixData = stored
    blocks = [(matrix.rows(idx) if side == "row" else matrix.cols(idx))[0]
              for side in sides(spec, view, entity)]
    return np.nan_to_num(np.concatenate(blocks, axis=1).astype(np.float32, copy=False))


def reduce(x: np.ndarray, train: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """``x`` itself when at most ``dim`` wide, else its first ``dim`` principal components
    (PCA fit on ``x[train]`` only, applied to every row)."""
    if x.shape[1] <= dim:
        return x
    n_components = min(dim, len(train))
    with np.errstate(invalid="ignore", divide="ignore"):  # constant data: 0/0 variance ratio
        pca = PCA(n_components=n_components, random_state=seed).fit(x[train])
    return pca.transform(x).astype(np.float32)


def block_scaled(blocks: list[np.ndarray], train: np.ndarray) -> np.ndarray:
    """Concatenate blocks, each divided by the square root of its total train variance."""
    scaled = []
    for block in blocks:
        total = float(block[train].var(axis=0).sum())
        scaled.append(block / np.sqrt(total) if total > 0 else block)
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
    _raw: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    _reduced: dict[tuple[str, ...], tuple[np.ndarray, dict[str, Any]]] = field(
        default_factory=dict)

    def raw(self, view: str, entity: str) -> np.ndarray:
        key = (view, entity)
        if key not in self._raw:
            self._raw[key] = raw_features(self.spec, self.data, view, entity)
            log.info("baseline %s for %s: %s raw features", view, entity, self._raw[key].shape)
        return self._raw[key]

    def features(self, name: str, views: list[str], entity: str, keep: np.ndarray,
                 train: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """Features of the kept instances for baseline ``name`` (a view, or ``concat`` of
        ``views``), reduced with a PCA fit on ``train`` (indices into the kept rows)."""
        key = (name, *views, entity, _digest(keep, train))
        if key not in self._reduced:
            if name == CONCAT:
                x = block_scaled([self.raw(v, entity)[keep] for v in views], train)
                info: dict[str, Any] = {"views": list(views)}
            else:
                x = self.raw(name, entity)[keep]
                info = {"sides": sides(self.spec, name, entity)}
            reduced = reduce(x, train, self.dim)
            info.update({"width": int(x.shape[1]), "dim": int(reduced.shape[1]),
                         "pca": bool(reduced is not x)})
            self._reduced[key] = (reduced, info)
        return self._reduced[key]

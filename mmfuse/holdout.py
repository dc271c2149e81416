"""Held-out cells of matrix views (``evaluate.holdout``): the split, the classic completion
baselines, and the metrics of each method on the same cells.

The split happens as a view is read (:func:`mmfuse.data.load_data`), before anything looks
at its values: held-out cells are dropped from a sparse view's stored cells, or masked in a
dense one, so encoders, ``scale: standard`` statistics and the factor term's intercept never
see them.  Their values, in the data's own units, are kept (``HeldCells``) and written to the
run folder (``holdout/VIEW.npz``).

Every method predicts the same held-out cells (in data units):

- ``mmfuse``: ``link(z_r · z_c + b)`` from the run's embeddings (:mod:`mmfuse.predict`);
- ``global mean``: the mean of the training cells;
- ``biases``: mean + row bias + column bias, shrunk towards 0 (regularised alternating least
  squares, the classic baseline of rating prediction);
- ``svd``: the biases plus a truncated SVD (rank ``model.dim``) of their residuals at the
  training cells;
- ``cmfrec``: cmfrec's CMF (ALS, rank ``model.dim``) on the training cells, where the
  ``bench`` extra is installed (every view but 0/1 ones).

Metrics are those the view's likelihood declares (``metrics``): gaussian RMSE, MAE, R²;
poisson RMSE and the mean Poisson deviance; negbinomial RMSE, MAE and the Poisson deviance;
bernoulli ROC-AUC and AUPRC, and, where the view stores only some cells (sparse), the
ranking of each row's held-out cells among every cell it has no training value for
(recall@k, NDCG@k, MRR).  A sparse 0/1 view's held-out cells are scored against as many
cells drawn at random from those with no stored value (as 0).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmfuse.spec import HoldoutSpec

log = logging.getLogger(__name__)

#: At most this many rows are ranked (sampled, seeded) for the ranking metrics, scored
#: this many at a time (each holds every column's score).
RANKED_ROWS = 2000
RANK_CHUNK = 256


@dataclass(frozen=True)
class HeldCells:
    """Held-out cells of one view: row, column (instance indices) and value (data units)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

#: The stream of ``train.validation``'s split (and its negatives): never the generator of an
#: ``evaluate.holdout`` split, even under the same seed.
VALIDATION_STREAM = zlib.crc32(b"validation")


def _rng(spec: HoldoutSpec, view: str, stream: tuple[int, ...] = ()) -> np.random.Generator:
    """The split's generator: the same cells for a view whatever else the spec holds."""
    return np.random.default_rng([spec.seed, zlib.crc32(view.encode()), *stream])


def factor_views(spec: Any) -> list[str]:
    """The matrix views between two entities whose factor term is on (the view's
    ``terms.factor``, else ``model.terms.factor``, else the preset's), in spec order."""
    from mmfuse.presets import term_on

    return [name for name, v in spec.views.items()
            if not (v.is_tensor or v.features) and term_on(spec, name, "factor")]


def validation_split(spec: Any) -> HoldoutSpec | None:
    """``train.validation`` as a split of its views' cells (None: off, or no view to split)."""
    views = factor_views(spec)
    if not spec.train.validation or not views:
        return None
    return HoldoutSpec(views=views, fraction=spec.train.validation, seed=spec.seed, by="cells")


def _pick(rng: np.random.Generator, owners: np.ndarray, n_cells: int,
          spec: HoldoutSpec) -> np.ndarray:
    """Positions (into the observed cells) held out: cells at random, or every cell of a
    random share of the rows that have any (``owners``: each cell's row)."""
    if spec.by == "cells":
        count = max(1, round(spec.fraction * n_cells))
        return np.sort(rng.choice(n_cells, size=count, replace=False))
    rows = np.unique(owners)
    chosen = rng.choice(rows, size=max(1, round(spec.fraction * len(rows))), replace=False)
    return np.flatnonzero(np.isin(owners, chosen))


def split_view(view: str, array: Any, mask: np.ndarray | None, spec: HoldoutSpec,
               zero_missing: bool = False, stream: tuple[int, ...] = ()
               ) -> tuple[Any, np.ndarray | None, HeldCells]:
    """``(training data, training mask, held-out cells)`` of one matrix view.  A sparse view
    loses the held-out stored cells; a dense one keeps its values and masks them.
    ``stream``: another generator for the same seed (``train.validation``'s split)."""
    rng = _rng(spec, view, stream)
    if sp.issparse(array):
        csr = sp.csr_array(array, copy=True)
        csr.sum_duplicates()
        if zero_missing:
            csr.eliminate_zeros()
        owners = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        held = _pick(rng, owners, csr.nnz, spec)
        cells = HeldCells(owners[held], csr.indices[held].astype(np.int64),
                          csr.data[held].astype(np.float32))
        keep = np.ones(csr.nnz, dtype=bool)
        keep[held] = False
        indptr = np.zeros(csr.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(owners[keep], minlength=csr.shape[0]), out=indptr[1:])
        train = sp.csr_array((csr.data[keep], csr.indices[keep], indptr), shape=csr.shape)
        _check_left(view, train.nnz)
        return train, None, cells
    values = np.asarray(array)
    observed = np.ones(values.shape, dtype=bool) if mask is None else np.array(mask, bool)
    if values.dtype.kind == "f":
        observed &= ~np.isnan(values)
    if zero_missing:
        observed &= values != 0
    rows, cols = np.nonzero(observed)
    held = _pick(rng, rows, len(rows), spec)
    cells = HeldCells(rows[held].astype(np.int64), cols[held].astype(np.int64),
                      values[rows[held], cols[held]].astype(np.float32))
    observed[rows[held], cols[held]] = False
    _check_left(view, int(observed.sum()))
    return array, observed, cells


def _check_left(view: str, left: int) -> None:
    if left == 0:
        raise ValueError(f"holding out cells of view {view!r} left it no training cell")


# ====================================================================== baselines


@dataclass(frozen=True)
class Triplets:
    """Training cells of a view in data units: row, column, value (COO)."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    shape: tuple[int, int]


def biases(t: Triplets, reg: float = 5.0, sweeps: int = 5
           ) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean and shrunk row and column biases (alternating ridge least squares)."""
    mu = float(t.values.mean())
    n_r, n_c = t.shape
    b_r, b_c = np.zeros(n_r), np.zeros(n_c)
    count_r = np.bincount(t.rows, minlength=n_r) + reg
    count_c = np.bincount(t.cols, minlength=n_c) + reg
    for _ in range(sweeps):
        b_r = np.bincount(t.rows, t.values - mu - b_c[t.cols], minlength=n_r) / count_r
        b_c = np.bincount(t.cols, t.values - mu - b_r[t.rows], minlength=n_c) / count_c
    return mu, b_r, b_c


class Baselines:
    """The completion baselines fit on one view's training cells; each predicts cells."""

    def __init__(self, t: Triplets, rank: int, metrics: tuple[str, ...], seed: int):
        self.t = t
        self.counts = "poisson_deviance" in metrics  # rates: positive
        self.mu, self.b_r, self.b_c = biases(t)
        residual = t.values - self.mu - self.b_r[t.rows] - self.b_c[t.cols]
        r = sp.csr_array((residual, (t.rows, t.cols)), shape=t.shape)
        k = max(1, min(rank, min(t.shape) - 1))
        from sklearn.decomposition import TruncatedSVD

        svd = TruncatedSVD(n_components=k, random_state=seed)
        self.u = svd.fit_transform(r)  # U Σ
        self.v = svd.components_  # Vᵀ
        self.cmf = None if "roc_auc" in metrics else _fit_cmfrec(t, rank, seed)

    def predict(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        base = self.mu + self.b_r[rows] + self.b_c[cols]
        out = {"global mean": np.full(len(rows), self.mu),
               "biases": base,
               "svd": base + np.einsum("ij,ji->i", self.u[rows], self.v[:, cols])}
        if self.cmf is not None:
            out["cmfrec"] = np.asarray(self.cmf.predict(user=rows, item=cols), dtype=np.float64)
        if self.counts:  # rates are positive
            out = {k: np.maximum(v, 1e-6) for k, v in out.items()}
        return out

    def row_scores(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every column's score for each row (len(rows) × n_cols), for ranking."""
        base = self.mu + self.b_r[rows, None] + self.b_c[None, :]
        return {"global mean": np.full(base.shape, self.mu), "biases": base,
                "svd": base + self.u[rows] @ self.v}


def _fit_cmfrec(t: Triplets, rank: int, seed: int):
    try:
        import cmfrec
        import pandas as pd
    except ImportError:
        log.info("cmfrec is not installed (the `bench` extra): no cmfrec baseline")
        return None
    frame = pd.DataFrame({"UserId": t.rows, "ItemId": t.cols, "Rating": t.values})
    model = cmfrec.CMF(k=rank, method="als", niter=10, use_cg=False, random_state=seed,
                       verbose=False, nthreads=-1)
    return model.fit(frame)


# ====================================================================== metrics


#: What a likelihood that declares no ``metrics`` is judged by.
DEFAULT_METRICS = ("rmse", "mae", "r2")


def likelihood_metrics(likelihood: Any) -> tuple[str, ...]:
    """The held-out metrics a likelihood declares (default: rmse, mae, r2)."""
    return tuple(getattr(likelihood, "metrics", DEFAULT_METRICS))


def value_metrics(y: np.ndarray, pred: np.ndarray, metrics: tuple[str, ...]
                  ) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_poisson_deviance, r2_score

    err = pred - y
    compute = {
        "rmse": lambda: float(np.sqrt(np.mean(err * err))),
        "mae": lambda: float(mean_absolute_error(y, pred)),
        "r2": lambda: float(r2_score(y, pred)) if len(y) > 1 else float("nan"),
        "poisson_deviance": lambda: float(mean_poisson_deviance(y, np.maximum(pred, 1e-6))),
    }
    return {m: compute[m]() for m in metrics if m in compute}


def class_metrics(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    positive = y > 0.5
    if positive.all() or not positive.any():
        return {"roc_auc": float("nan"), "auprc": float("nan")}
    return {"roc_auc": float(roc_auc_score(positive, score)),
            "auprc": float(average_precision_score(positive, score))}


def held_ranks(scores: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sorted 0-based ranks of columns ``cols`` in one row's ``scores`` (descending; ties in
    column order): the columns scored higher, plus the equal ones before it."""
    at = scores[cols][:, None]
    before = np.arange(len(scores))[None, :] < cols[:, None]
    return np.sort(((scores > at) | ((scores == at) & before)).sum(axis=1))


def ranking_metrics(scores: np.ndarray, held: list[np.ndarray], k: int) -> dict[str, float]:
    """Mean recall@k, NDCG@k and MRR of each row's held-out columns ``held[i]`` in its
    ``scores[i]`` (training cells already set to -inf)."""
    return _mean_ranking([held_ranks(row, cols) for row, cols in zip(scores, held,
                                                                      strict=True)],
                         [len(cols) for cols in held], k)


def _mean_ranking(ranks: list[np.ndarray], sizes: list[int], k: int) -> dict[str, float]:
    recall, ndcg, mrr = [], [], []
    discounts = 1 / np.log2(np.arange(2, k + 2))
    for r, n in zip(ranks, sizes, strict=True):
        hits = r[r < k]
        recall.append(len(hits) / min(k, n))
        ndcg.append(discounts[hits].sum() / discounts[: min(k, n)].sum())
        mrr.append(1 / (r[0] + 1))
    return {f"recall@{k}": float(np.mean(recall)), f"ndcg@{k}": float(np.mean(ndcg)),
            "mrr": float(np.mean(mrr))}


# ====================================================================== evaluation


def training_triplets(matrix: Any) -> Triplets:
    """A view's training cells in data units (``scale: standard`` undone)."""
    if matrix.sparse:
        rows, cols = matrix.cell_rows(), matrix.csr.indices
        values = matrix.csr.data.astype(np.float64)
    else:
        values_all, mask = matrix.rows(np.arange(matrix.shape[0]), scaled=False)
        observed = ~np.isnan(values_all) if mask is None else mask & ~np.isnan(values_all)
        rows, cols = np.nonzero(observed)
        values = values_all[rows, cols].astype(np.float64)
    if matrix.sparse and matrix.center is not None:
        values = values * matrix.spread[cols] + matrix.center[cols]
    return Triplets(rows.astype(np.int64), cols.astype(np.int64), values, matrix.shape)


def _stored(matrix: Any, held: HeldCells) -> np.ndarray:
    """Linear indices (sorted) of every cell with a value: training or held out."""
    n_c = matrix.shape[1]
    return np.union1d(matrix.cell_rows().astype(np.int64) * n_c + matrix.csr.indices,
                      held.rows * n_c + held.cols)


def _negatives(rng: np.random.Generator, shape: tuple[int, int], taken: np.ndarray,
               count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` distinct cells drawn uniformly among those not ``taken`` (``_stored``)."""
    n_r, n_c = shape
    if n_r * n_c - len(taken) < count:
        raise ValueError(f"too few cells without a value to draw {count:,} negatives")
    out = np.empty(0, dtype=np.int64)
    while len(out) < count:
        draw = rng.integers(0, n_r * n_c, size=2 * (count - len(out)) + 16)
        at = np.minimum(np.searchsorted(taken, draw), len(taken) - 1)
        out = np.union1d(out, draw[taken[at] != draw])  # sorted, distinct
    cells = rng.permutation(out)[:count]
    return cells // n_c, cells % n_c


def evaluate_view(view: str, spec: Any, matrix: Any, held: HeldCells, model: Any
                  ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Each method's metrics on the view's held-out cells, and what the split held."""
    h = spec.evaluate.holdout
    likelihood = spec.views[view].likelihood.type
    metrics = likelihood_metrics(model.likelihoods[view])
    binary = "roc_auc" in metrics  # 0/1 cells: scored as classes, against drawn non-links
    t = training_triplets(matrix)
    rng = _rng(h, view)
    rows, cols, y = held.rows, held.cols, held.values.astype(np.float64)
    info: dict[str, Any] = {"by": h.by, "fraction": h.fraction, "seed": h.seed,
                            "n_train": int(len(t.values)), "n_test": int(len(held)),
                            "likelihood": likelihood}
    if binary and matrix.sparse:
        # stored cells are the known links: score them against as many cells without one
        taken = _stored(matrix, held)
        neg_r, neg_c = _negatives(rng, matrix.shape, taken, len(held))
        rows, cols = np.concatenate([rows, neg_r]), np.concatenate([cols, neg_c])
        y = np.concatenate([y, np.zeros(len(neg_r))])
        t_neg_r, t_neg_c = _negatives(rng, matrix.shape, taken, len(t.values))
        t = Triplets(np.concatenate([t.rows, t_neg_r]), np.concatenate([t.cols, t_neg_c]),
                     np.concatenate([t.values, np.zeros(len(t_neg_r))]), t.shape)
        info["n_negatives"] = int(len(neg_r))
    baselines = Baselines(t, spec.model.dim, metrics, h.seed)
    predictions = {"mmfuse": model.cells(view, rows, cols), **baselines.predict(rows, cols)}
    if binary:
        result = {name: class_metrics(y, p) for name, p in predictions.items()}
    else:
        result = {name: value_metrics(y, p, metrics) for name, p in predictions.items()}
    if binary and matrix.sparse:
        ranked = _ranking(view, matrix, held, model, baselines, h.k, rng)
        for name, ranking in ranked.items():
            result[name].update(ranking)
        info["ranked_rows"] = int(min(RANKED_ROWS, len(np.unique(held.rows))))
    return result, info


def _ranking(view: str, matrix: Any, held: HeldCells, model: Any, baselines: Baselines,
             k: int, rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Ranking metrics of every method over (a sample of) the rows with held-out cells."""
    from mmfuse.predict import exclude_observed

    rows = np.unique(held.rows)
    if len(rows) > RANKED_ROWS:
        rows = np.sort(rng.choice(rows, RANKED_ROWS, replace=False))
    order = np.argsort(held.rows, kind="stable")
    starts = np.searchsorted(held.rows[order], rows)
    ends = np.searchsorted(held.rows[order], rows, side="right")
    held_cols = [held.cols[order[a:b]] for a, b in zip(starts, ends, strict=True)]
    r, _ = model.check_view(view)
    z = model.embeddings[r]
    ranks: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(rows), RANK_CHUNK):  # every column's score, a chunk of rows
        part, cols = rows[start:start + RANK_CHUNK], held_cols[start:start + RANK_CHUNK]
        scores = {"mmfuse": model.row_scores(view, z[part]), **baselines.row_scores(part)}
        for name, s in scores.items():
            s = np.array(s, dtype=np.float64)
            exclude_observed(s, matrix, part)
            if name == "global mean":  # a constant ranks nothing: ties broken at random
                s = s + rng.random(s.shape) * 1e-9 * np.isfinite(s)
            ranks.setdefault(name, []).extend(
                held_ranks(row, c) for row, c in zip(s, cols, strict=True))
    sizes = [len(c) for c in held_cols]
    return {name: _mean_ranking(r_, sizes, k) for name, r_ in ranks.items()}


def evaluate_holdout(spec: Any, data: Any, model: Any) -> dict[str, Any]:
    """``{"holdout": {VIEW: {METHOD: metrics}}, "holdout_split": {VIEW: info}}``."""
    out: dict[str, Any] = {"holdout": {}, "holdout_split": {}}
    for view in spec.evaluate.holdout.views:
        result, info = evaluate_view(view, spec, data.views[view], data.held[view], model)
        out["holdout"][view], out["holdout_split"][view] = result, info
    return out

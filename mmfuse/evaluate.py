"""Downstream probes on learnt embeddings, always beside the trivial floor.

Each target of ``evaluate.targets`` is predicted from its entity's embeddings by a probe
trained on the train split; the same metrics are computed for the trivial floor (majority
class / mean of train), so a number can never be read without what "predict nothing" scores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_squared_error,
    precision_score,
    r2_score,
    recall_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mmfuse.errors import SpecError
from mmfuse.spec import Spec, SplitSpec, TargetSpec

log = logging.getLogger(__name__)


def make_probe(target: TargetSpec) -> BaseEstimator:
    """The spec's probe with its params; logistic and ridge see standardised embeddings."""
    p = dict(target.params)
    classify = target.task == "classification"
    try:
        if target.probe == "random_forest":
            return (RandomForestClassifier if classify else RandomForestRegressor)(**p)
        if target.probe == "logistic":
            return make_pipeline(StandardScaler(), LogisticRegression(**{"max_iter": 2000, **p}))
        if target.probe == "ridge":
            return make_pipeline(StandardScaler(), Ridge(**p))
        return LinearRegression(**p)
    except TypeError as exc:
        raise ValueError(f"probe {target.probe!r}: {exc}") from None


def load_labels(path: Path) -> np.ndarray:
    """``.npy`` array, or a text file with one value per line (empty line: missing)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    values = path.read_text(encoding="utf-8").splitlines()
    try:
        return np.array([float(v) if v.strip() else np.nan for v in values])
    except ValueError:
        return np.array([v.strip() or None for v in values], dtype=object)


def split_indices(y: np.ndarray, split: SplitSpec, classify: bool) -> tuple[np.ndarray, np.ndarray]:
    n = len(y)
    idx = np.arange(n)
    if split.method == "position":
        cut = n - round(n * split.test_fraction)
        return idx[:cut], idx[cut:]
    stratify = y if (split.method == "stratified" and classify) else None
    train, test = train_test_split(idx, test_size=split.test_fraction, random_state=split.seed,
                                   stratify=stratify)
    return np.sort(train), np.sort(test)


def scores(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    if task == "regression":
        return {"mse": float(mean_squared_error(y_true, y_pred)),
                "r2": float(r2_score(y_true, y_pred))}
    labels = np.unique(y_true)
    binary = len(labels) <= 2 and set(labels.tolist()) <= {0, 1}
    kw: dict[str, Any] = {"zero_division": 0}
    kw.update({"pos_label": 1, "average": "binary"} if binary else {"average": "macro"})
    return {
        "f1": float(f1_score(y_true, y_pred, **kw)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision": float(precision_score(y_true, y_pred, **kw)),
        "recall": float(recall_score(y_true, y_pred, **kw)),
    }


def evaluate_target(name: str, target: TargetSpec, z: np.ndarray, split: SplitSpec,
                    spec: Spec) -> dict[str, Any]:
    loc = ("evaluate", "targets", name)
    if not target.path.is_file():
        raise SpecError([spec.issue((*loc, "path"), f"file not found: {target.path}")])
    y = load_labels(target.path)
    if len(y) != len(z):
        msg = f"{len(y)} values but entity {target.entity!r} has {len(z)} instances"
        raise SpecError([spec.issue((*loc, "path"), msg)])
    classify = target.task == "classification"
    if y.dtype.kind == "f":
        keep = ~np.isnan(y)
    else:
        keep = np.array([v is not None for v in y]) if y.dtype == object else np.ones(len(y), bool)
    if classify and y.dtype.kind == "f" and np.all(np.mod(y[keep], 1) == 0):
        y = np.where(keep, y, 0).astype(np.int64)
    elif not classify and y.dtype.kind not in "fiu":
        raise SpecError([spec.issue((*loc, "task"), "regression needs numeric values")])
    z, y = z[keep], y[keep]
    train, test = split_indices(y, split, classify)
    try:
        probe = make_probe(target).fit(z[train], y[train])
    except ValueError as exc:
        raise SpecError([spec.issue((*loc, "params"), str(exc))]) from None
    floor = (DummyClassifier(strategy="most_frequent") if classify
             else DummyRegressor(strategy="mean")).fit(z[train], y[train])
    return {
        "entity": target.entity, "task": target.task, "probe": target.probe,
        "params": dict(target.params), "n_train": int(len(train)), "n_test": int(len(test)),
        "n_missing": int((~keep).sum()),
        "metrics": scores(target.task, y[test], probe.predict(z[test])),
        "floor": scores(target.task, y[test], floor.predict(z[test])),
    }


def evaluate_embeddings(spec: Spec, embeddings: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every target of the spec's ``evaluate`` section, on the given embeddings."""
    if spec.evaluate is None:
        raise SpecError([spec.issue(("evaluate",), "the spec has no `evaluate:` section")])
    split = spec.evaluate.split
    return {
        "split": split.model_dump(),
        "targets": {name: evaluate_target(name, t, embeddings[t.entity], split, spec)
                    for name, t in spec.evaluate.targets.items()},
    }

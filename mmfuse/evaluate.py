"""Downstream probes on learnt embeddings, beside the trivial floor and raw-view baselines.

Each target of ``evaluate.targets`` is predicted from its entity's embeddings by a probe
trained on the train split.  Beside it, on the same split and with the same probe:

- ``floor``: the trivial predictor (majority class / mean of train / per-label train
  prevalence, see :mod:`mmfuse.probes`), so a number is never read without what "predict
  nothing" scores;
- ``baselines``: each view that touches the target's entity, its raw data as the features
  (see :mod:`mmfuse.baselines`), and ``concat`` of them all — what the learnt representation
  has to beat to be worth learning.  ``evaluate.baselines`` chooses the views (default
  ``auto``: every view touching the entity; ``none`` turns them off).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from mmfuse.baselines import CONCAT, PCA_NAME, BaselineFeatures, views_touching
from mmfuse.data import Data
from mmfuse.errors import SpecError, SpecIssue, describe
from mmfuse.spec import Spec, SplitSpec, TargetSpec

log = logging.getLogger(__name__)

# scikit-learn (the probes, the split) is imported by the functions that evaluate: the
# checks here run at `mmfuse validate`, which answers without importing it
__all__ = ["evaluate_embeddings", "evaluate_target", "load_labels", "split_indices",
           "baseline_views", "check_evaluate", "target_issues"]


def load_labels(path: Path) -> np.ndarray:
    """``.npy`` array, or a text file with one value per line (empty line: missing)."""
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    values = path.read_text(encoding="utf-8").splitlines()
    try:
        return np.array([float(v) if v.strip() else np.nan for v in values])
    except ValueError:
        return np.array([v.strip() or None for v in values], dtype=object)


def _merge_rare(strata: np.ndarray) -> np.ndarray:
    """Strata with fewer than two members join one ``rare`` stratum (or the largest one)."""
    values, counts = np.unique(strata, return_counts=True)
    rare = np.isin(strata, values[counts < 2])
    if not rare.any():
        return strata
    out = strata.astype(object)
    out[rare] = "__rare__"
    if rare.sum() < 2:
        out[rare] = values[np.argmax(counts)]
    return out


def strata(y: np.ndarray, task: str) -> np.ndarray | None:
    """What a stratified split keeps in proportion: the class, or (multilabel) each
    instance's rarest label (-1 for an instance with none).  None for regression."""
    if task == "regression":
        return None
    if task == "multilabel":
        counts = y.sum(axis=0)
        rarity = np.where(y > 0, counts[None, :], np.inf)
        rarest = np.argmin(rarity, axis=1)
        return _merge_rare(np.where(np.isfinite(rarity.min(axis=1)), rarest, -1))
    return _merge_rare(np.asarray(y))


def split_indices(y: np.ndarray, split: SplitSpec,
                  task: str | bool = "classification") -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices into ``y`` (``task`` True/False: classification or not)."""
    if isinstance(task, bool):
        task = "classification" if task else "regression"
    n = len(y)
    idx = np.arange(n)
    method = split.method or ("random" if task == "regression" else "stratified")
    if method == "position":
        cut = n - round(n * split.test_fraction)
        return idx[:cut], idx[cut:]
    from sklearn.model_selection import train_test_split

    stratify = strata(y, task) if method == "stratified" else None
    try:
        train, test = train_test_split(idx, test_size=split.test_fraction,
                                       random_state=split.seed, stratify=stratify)
    except ValueError as exc:  # e.g. fewer test instances than strata
        log.warning("stratified split impossible (%s); splitting at random", exc)
        train, test = train_test_split(idx, test_size=split.test_fraction,
                                       random_state=split.seed)
    return np.sort(train), np.sort(test)


def _target_values(name: str, target: TargetSpec, n: int | None,
                   spec: Spec) -> tuple[np.ndarray, np.ndarray]:
    """The target's values for the kept instances, and the keep mask (values not missing);
    a :class:`SpecError` at ``evaluate.targets.NAME`` says what is wrong with the labels
    (``n``: the entity's size, None where it is not known)."""
    loc = ("evaluate", "targets", name)
    path, file = target.path, target.path.name

    def fail(field: str, msg: str, cause: BaseException | None = None):
        raise SpecError([spec.issue((*loc, field), msg)]) from cause

    if path.is_dir():
        fail("path", f"{path} is a folder; a target's `path` is a .npy or text file")
    if not path.is_file():
        fail("path", f"file not found: {path}")
    try:
        y = load_labels(path)
    except Exception as exc:  # numpy's and the file's own problems, never an internal error
        fail("path", f"cannot read {path}: {describe(exc)}; save the labels as a .npy array "
                     "of numbers or strings (not pickled objects) or a text file, one value "
                     "a line", exc)
    if target.task != "multilabel" and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 0 or (target.task != "multilabel" and y.ndim != 1):
        fail("path", f"{file} has shape {list(y.shape)}; a {target.task} target has one "
                     "value per instance")
    if n is not None and len(y) != n:
        fail("path", f"{file} has {len(y)} values but entity {target.entity!r} has {n} "
                     "instances; one value per instance, in the entity's order")
    if target.task == "multilabel":
        return _multilabel_values(y, spec, loc)
    if y.dtype.kind not in "biufUO":
        fail("path", f"{file} holds {y.dtype} values; labels are numbers or strings")
    if y.dtype.kind == "f":
        keep = ~np.isnan(y)
    else:
        keep = np.array([v is not None for v in y]) if y.dtype == object else np.ones(len(y), bool)
    if target.task == "regression":
        if y.dtype.kind not in "biuf":
            example = next((str(v) for v in y[keep]), None)
            fail("task", f"{file} holds text (e.g. {example!r}): a regression target needs "
                         "numbers; for categories use `task: classification`")
        if np.isinf(y[keep].astype(np.float64)).any():
            fail("path", f"{file} has {int(np.isinf(y[keep]).sum())} infinite values; "
                         "leave a value missing as NaN (or an empty line)")
    elif y.dtype.kind == "f" and np.all(np.mod(y[keep], 1) == 0):
        y = np.where(keep, y, 0).astype(np.int64)
    if keep.sum() < 2:
        fail("path", f"{file} has {int(keep.sum())} values that are not missing; a target "
                     "needs at least two")
    if target.task == "classification":
        classes = np.unique(y[keep].astype(str) if y.dtype == object else y[keep])
        if len(classes) < 2:
            fail("path", f"{file} has one class ({classes[0].item()!r}) in all its "
                         f"{int(keep.sum())} "
                         "values: a classification target needs two or more classes")
    return y[keep], keep


def target_issues(spec: Spec, sizes: Mapping[str, int]) -> list[SpecIssue]:
    """Every evaluation target's labels checked before training (what ``evaluate`` would
    find after it): the file is there and readable, one value per instance of the entity
    (``sizes``), numbers for regression, two classes or more for classification."""
    if spec.evaluate is None:
        return []
    issues: list[SpecIssue] = []
    for name, target in spec.evaluate.targets.items():
        if target.entity not in spec.entities:
            continue  # an unknown entity: the spec's references report it
        try:
            _target_values(name, target, sizes.get(target.entity), spec)
        except SpecError as exc:
            issues += exc.issues
    return issues


def _multilabel_values(y: np.ndarray, spec: Spec, loc: tuple) -> tuple[np.ndarray, np.ndarray]:
    if y.ndim != 2 or y.dtype.kind not in "biuf":
        msg = f"multilabel needs an n × L 0/1 .npy array; got shape {list(y.shape)}"
        raise SpecError([spec.issue((*loc, "path"), msg)])
    values = y.astype(np.float64)
    keep = ~np.isnan(values).any(axis=1)
    if not np.isin(values[keep], (0.0, 1.0)).all():
        raise SpecError([spec.issue((*loc, "path"), "multilabel values must be 0 or 1")])
    return values[keep].astype(np.int64), keep


def baseline_views(spec: Spec, target: TargetSpec) -> list[str]:
    """The views probed as baselines for ``target`` (``evaluate.baselines``)."""
    chosen = spec.evaluate.baselines if spec.evaluate else "none"
    touching = views_touching(spec, target.entity)
    if chosen == "none":
        return []
    if chosen == "auto":
        return touching
    return [v for v in chosen if v in touching]


def _check_holdout(spec: Spec) -> list[SpecIssue]:
    """Held-out views must be matrix views between two entities (their cells are predicted
    by ``z_row · z_col``)."""
    holdout = spec.evaluate.holdout if spec.evaluate else None
    if holdout is None:
        return []
    issues = []
    for i, view in enumerate(holdout.views):
        loc = ("evaluate", "holdout", "views", i)
        v = spec.views.get(view)
        if v is None:
            known = ", ".join(spec.views)
            issues.append(spec.issue(loc, f"unknown view {view!r}; known: {known}"))
        elif v.is_tensor or v.features:
            kind = "a tensor view" if v.is_tensor else "a feature view (no `cols` entity)"
            issues.append(spec.issue(loc, f"view {view!r} is {kind}: only cells of a matrix "
                                          "view between two entities can be held out"))
        elif (v.terms.factor if v.terms.factor is not None else spec.model.terms.factor) is False:
            issues.append(spec.issue(loc, f"view {view!r} has its factor term switched off: "
                                          "its held-out cells would have no prediction"))
    if len(set(holdout.views)) != len(holdout.views):
        issues.append(spec.issue(("evaluate", "holdout", "views"), "a view is listed twice"))
    return issues


def check_evaluate(spec: Spec) -> list[SpecIssue]:
    """Cross-reference problems of ``evaluate.baselines`` (unknown views, views that touch
    no target's entity)."""
    if spec.evaluate is None:
        return []
    issues = _check_holdout(spec)
    if isinstance(spec.evaluate.baselines, str):
        return issues
    entities = {t.entity for t in spec.evaluate.targets.values()}
    for i, view in enumerate(spec.evaluate.baselines):
        loc = ("evaluate", "baselines", i)
        if view not in spec.views:
            known = ", ".join(spec.views)
            issues.append(spec.issue(loc, f"unknown view {view!r}; known: {known}"))
        elif not entities & {spec.views[view].rows, spec.views[view].cols}:
            issues.append(spec.issue(loc, f"view {view!r} touches no target's entity "
                                          f"({', '.join(sorted(entities))})"))
    return issues


def _run_baselines(target: TargetSpec, views: list[str], features: BaselineFeatures,
                   keep: np.ndarray, y: np.ndarray, train: np.ndarray,
                   test: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    from mmfuse.probes import evaluate_probe

    names = [*views, CONCAT] if len(views) > 1 else list(views)
    raw = [features.raw(v, target.entity) for v in views]
    # sparse data is reduced anyway: then `concat` is already its own reduction
    if sum(x.shape[1] for x in raw) > features.dim and not any(sp.issparse(x) for x in raw):
        names.append(PCA_NAME)
    metrics: dict[str, Any] = {}
    info: dict[str, Any] = {}
    for name in names:
        x, info[name] = features.features(name, views, target.entity, keep, train)
        metrics[name] = evaluate_probe(target, x[train], y[train], x[test], y[test])
    return metrics, info


def evaluate_target(name: str, target: TargetSpec, z: np.ndarray, split: SplitSpec,
                    spec: Spec, features: BaselineFeatures | None = None) -> dict[str, Any]:
    """One target: probe on ``z``, the floor, and (with ``features``) the baselines."""
    from mmfuse.probes import evaluate_probe, floor_scores

    y, keep = _target_values(name, target, len(z), spec)
    train, test = split_indices(y, split, target.task)
    zk = z[keep]
    try:
        metrics = evaluate_probe(target, zk[train], y[train], zk[test], y[test])
        result: dict[str, Any] = {
            "entity": target.entity, "task": target.task, "probe": target.probe,
            "params": dict(target.params), "n_train": int(len(train)), "n_test": int(len(test)),
            "n_missing": int((~keep).sum()), "metrics": metrics,
            "floor": floor_scores(target.task, y[train], y[test]),
        }
        if target.task == "multilabel":
            result["labels"] = {"n_labels": int(y.shape[1]),
                                "n_scored": int((y[test].sum(axis=0) > 0).sum()),
                                "n_without_train_positive": int((y[train].sum(axis=0) == 0).sum())}
        views = baseline_views(spec, target)
        if features is not None and views:
            result["baselines"], result["baseline_features"] = _run_baselines(
                target, views, features, keep, y, train, test)
    except ValueError as exc:
        raise SpecError([spec.issue(("evaluate", "targets", name), str(exc))]) from None
    return result


def _load_data(spec: Spec) -> Data:
    from mmfuse.data import load_data
    from mmfuse.plugins import get_plugins

    return load_data(spec, get_plugins())


def evaluate_embeddings(spec: Spec, embeddings: Mapping[str, np.ndarray],
                        data: Data | None = None) -> dict[str, Any]:
    """Every target of the spec's ``evaluate`` section, on the given embeddings.

    Baselines need the views' data: pass the run's ``data`` (``built.data``) or leave it None
    to have it loaded (only when some target has baseline views).
    """
    if spec.evaluate is None:
        raise SpecError([spec.issue(("evaluate",), "the spec has no `evaluate:` section")])
    issues = check_evaluate(spec)
    if issues:
        raise SpecError(issues)
    ev = spec.evaluate
    features = None
    if any(baseline_views(spec, t) for t in ev.targets.values()):
        features = BaselineFeatures(spec, data if data is not None else _load_data(spec),
                                    ev.baseline_dim)
    return {
        "split": ev.split.model_dump(),
        "baselines": {"views": ev.baselines, "dim": ev.baseline_dim},
        "targets": {name: evaluate_target(name, t, np.asarray(embeddings[t.entity]), ev.split,
                                          spec, features)
                    for name, t in ev.targets.items()},
    }

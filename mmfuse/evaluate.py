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

With ``evaluate.split.repeats: R`` (R > 1) every one of them is scored on R splits (split
``r`` seeded ``split.seed + r``): ``metrics``, ``floor`` and ``baselines`` hold each
metric's mean over the splits, ``metrics_std``, ``floor_std`` and ``baselines_std`` its
sample std, and ``repeats`` says R.  With R = 1 there are no ``*_std`` keys.

With the trained model (:class:`Ablation`) and ``evaluate.ablation`` on, a target whose
entity gets codes from two or more views has an ``ablation``: per view V, the probe on the
embedding without V (V's codes zeroed in the fusion of every instance) on the same splits,
beside ``absence_baseline``, the raw data of the other views (their ``concat``, or the one
view left) — what V adds to the representation, and what the representation makes of the
others without it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
           "repeated_splits", "baseline_views", "check_evaluate", "target_issues", "Ablation",
           "ablation_wanted"]


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


Split = tuple[np.ndarray, np.ndarray]


def repeated_splits(y: np.ndarray, split: SplitSpec, task: str) -> list[Split]:
    """The ``split.repeats`` (train, test) splits of ``y``: split ``r`` seeded
    ``split.seed + r``."""
    return [split_indices(y, split.model_copy(update={"seed": split.seed + r}), task)
            for r in range(split.repeats)]


def _put(result: dict[str, Any], key: str, runs: list[dict[str, float]]) -> None:
    """``result[key]``: the one split's metrics, or with several each metric's mean over
    them (a metric some split lacks, e.g. ROC-AUC of a one-class test split, is left out)
    and ``result[key + "_std"]`` its sample std."""
    if len(runs) == 1:
        result[key] = runs[0]
        return
    names = [m for m in runs[0] if all(m in r for r in runs)]
    values = {m: np.array([r[m] for r in runs], dtype=np.float64) for m in names}
    result[key] = {m: float(v.mean()) for m, v in values.items()}
    result[f"{key}_std"] = {m: float(v.std(ddof=1)) for m, v in values.items()}


def _put_each(result: dict[str, Any], key: str, runs: dict[str, list[dict[str, float]]]
              ) -> None:
    """:func:`_put` for a dict of feature sets (``baselines``: name → metrics per split)."""
    scored: dict[str, Any] = {}
    for name, per_split in runs.items():
        _put(scored, name, per_split)
    result[key] = {name: scored[name] for name in runs}
    if any(f"{name}_std" in scored for name in runs):
        result[f"{key}_std"] = {name: scored[f"{name}_std"] for name in runs}


def _baseline_runs(target: TargetSpec, name: str, views: list[str],
                   features: BaselineFeatures, keep: np.ndarray, y: np.ndarray,
                   splits: list[Split]) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Baseline ``name`` of ``views`` probed on every split (its features fit on each
    split's train part); the metrics per split and the first split's feature info."""
    from mmfuse.probes import evaluate_probe

    runs, info = [], None
    for train, test in splits:
        x, about = features.features(name, views, target.entity, keep, train)
        info = about if info is None else info
        runs.append(evaluate_probe(target, x[train], y[train], x[test], y[test]))
    return runs, info


def _run_baselines(target: TargetSpec, views: list[str], features: BaselineFeatures,
                   keep: np.ndarray, y: np.ndarray, splits: list[Split], result: dict[str, Any]
                   ) -> None:
    names = [*views, CONCAT] if len(views) > 1 else list(views)
    raw = [features.raw(v, target.entity) for v in views]
    # sparse data is reduced anyway: then `concat` is already its own reduction
    if sum(x.shape[1] for x in raw) > features.dim and not any(sp.issparse(x) for x in raw):
        names.append(PCA_NAME)
    runs: dict[str, list[dict[str, float]]] = {}
    info: dict[str, Any] = {}
    for name in names:
        runs[name], info[name] = _baseline_runs(target, name, views, features, keep, y, splits)
    _put_each(result, "baselines", runs)
    result["baseline_features"] = info


@dataclass
class Ablation:
    """What the view ablation needs of a trained model: the views that feed each entity's
    fusion, and its embedding without one of them (cached: targets of one entity share it)."""

    views: Mapping[str, Sequence[str]]  # entity -> the views giving it codes
    embed: Callable[[str, frozenset[str]], np.ndarray]  # (entity, views left out) -> z
    _cache: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, built: Any) -> Ablation | None:
        """The ablation of a built, trained model (:class:`mmfuse.build.Built`); None for a
        model whose entities are not fused from view codes (presets ``dcmf``, ``cmf``)."""
        if built.plan.preset.codes != "view":
            return None
        from mmfuse.training import embed_all

        views = {e: list(dict.fromkeys(view for view, _ in keys))
                 for e, keys in built.plan.codes.items()}
        return cls(views, lambda entity, without: embed_all(built, entity, without=without))

    def without(self, entity: str, view: str) -> np.ndarray:
        key = (entity, view)
        if key not in self._cache:
            self._cache[key] = np.asarray(self.embed(entity, frozenset({view})))
        return self._cache[key]


def ablation_wanted(spec: Spec) -> bool:
    """Whether the spec asks for a view ablation that can happen (``evaluate.ablation`` on,
    a preset fusing view codes, some target's entity touched by two or more views): what
    decides loading a run's model for it."""
    ev = spec.evaluate
    if ev is None or not ev.ablation or spec.model.preset in ("dcmf", "cmf"):
        return False
    return any(len(views_touching(spec, t.entity)) > 1 for t in ev.targets.values())


def _run_ablation(target: TargetSpec, ablation: Ablation, features: BaselineFeatures | None,
                  keep: np.ndarray, y: np.ndarray, splits: list[Split],
                  scored: Mapping[str, Any]) -> dict[str, Any]:
    """Per view V feeding the target's entity: the probe on the embedding without V, and
    (with ``features``) V's absence baseline, the raw data of the other views (their
    ``concat``, or the one view left: taken from the baselines ``scored`` already, on the
    same splits, where it is among them)."""
    from mmfuse.probes import evaluate_probe

    views = list(ablation.views.get(target.entity, ()))
    out: dict[str, Any] = {}
    for view in views:
        z = ablation.without(target.entity, view)[keep]
        entry: dict[str, Any] = {}
        _put(entry, "metrics", [evaluate_probe(target, z[tr], y[tr], z[te], y[te])
                                for tr, te in splits])
        others = [v for v in views if v != view]
        entry["absence_views"] = others
        if features is not None:
            name = CONCAT if len(others) > 1 else others[0]
            if len(others) == 1 and name in scored.get("baselines", {}):
                entry["absence_baseline"] = scored["baselines"][name]
                if name in scored.get("baselines_std", {}):
                    entry["absence_baseline_std"] = scored["baselines_std"][name]
            else:
                runs, _ = _baseline_runs(target, name, others, features, keep, y, splits)
                _put(entry, "absence_baseline", runs)
        out[view] = entry
    return out


def evaluate_target(name: str, target: TargetSpec, z: np.ndarray, split: SplitSpec,
                    spec: Spec, features: BaselineFeatures | None = None,
                    ablation: Ablation | None = None) -> dict[str, Any]:
    """One target: probe on ``z``, the floor, and (with ``features``) the baselines, on each
    of the ``split.repeats`` splits; with ``ablation``, the probe again without each view of
    an entity fused from two or more."""
    from mmfuse.probes import evaluate_probe, floor_scores

    y, keep = _target_values(name, target, len(z), spec)
    splits = repeated_splits(y, split, target.task)
    train, test = splits[0]
    zk = z[keep]
    try:
        result: dict[str, Any] = {
            "entity": target.entity, "task": target.task, "probe": target.probe,
            "params": dict(target.params), "n_train": int(len(train)), "n_test": int(len(test)),
            "n_missing": int((~keep).sum()),
        }
        _put(result, "metrics", [evaluate_probe(target, zk[tr], y[tr], zk[te], y[te])
                                 for tr, te in splits])
        _put(result, "floor", [floor_scores(target.task, y[tr], y[te]) for tr, te in splits])
        if len(splits) > 1:
            result["repeats"] = len(splits)
        if target.task == "multilabel":  # of the first split
            result["labels"] = {"n_labels": int(y.shape[1]),
                                "n_scored": int((y[test].sum(axis=0) > 0).sum()),
                                "n_without_train_positive": int((y[train].sum(axis=0) == 0).sum())}
        views = baseline_views(spec, target)
        if features is not None and views:
            _run_baselines(target, views, features, keep, y, splits, result)
        if ablation is not None and len(ablation.views.get(target.entity, ())) > 1:
            absence = features if spec.evaluate.baselines != "none" else None
            result["ablation"] = _run_ablation(target, ablation, absence, keep, y, splits,
                                               result)
    except ValueError as exc:
        raise SpecError([spec.issue(("evaluate", "targets", name), str(exc))]) from None
    return result


def _load_data(spec: Spec) -> Data:
    from mmfuse.data import load_data
    from mmfuse.plugins import get_plugins

    return load_data(spec, get_plugins())


def evaluate_embeddings(spec: Spec, embeddings: Mapping[str, np.ndarray],
                        data: Data | None = None, ablation: Ablation | None = None
                        ) -> dict[str, Any]:
    """Every target of the spec's ``evaluate`` section, on the given embeddings, each
    metric over ``evaluate.split.repeats`` splits.

    Baselines need the views' data: pass the run's ``data`` (``built.data``) or leave it None
    to have it loaded (only when some target has baseline views).  ``ablation`` (the trained
    model's, :meth:`Ablation.of`) adds each target's view ablation when
    ``evaluate.ablation`` is on.
    """
    if spec.evaluate is None:
        raise SpecError([spec.issue(("evaluate",), "the spec has no `evaluate:` section")])
    issues = check_evaluate(spec)
    if issues:
        raise SpecError(issues)
    ev = spec.evaluate
    if not ev.ablation:
        ablation = None
    ablated = ablation is not None and ev.baselines != "none" and any(
        len(ablation.views.get(t.entity, ())) > 1 for t in ev.targets.values())
    features = None
    if ablated or any(baseline_views(spec, t) for t in ev.targets.values()):
        features = BaselineFeatures(spec, data if data is not None else _load_data(spec),
                                    ev.baseline_dim)
    # one split: the output of an mmfuse without `repeats`
    split = ev.split.model_dump(exclude={"repeats"} if ev.split.repeats == 1 else None)
    return {
        "split": split,
        "baselines": {"views": ev.baselines, "dim": ev.baseline_dim},
        "targets": {name: evaluate_target(name, t, np.asarray(embeddings[t.entity]), ev.split,
                                          spec, features, ablation)
                    for name, t in ev.targets.items()},
    }

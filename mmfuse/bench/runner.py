"""Run the benchmark rows over seeds: train, time, watch memory, evaluate."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.bench.methods import Context, Method, Skip, all_methods, variant
from mmfuse.bench.packaged import load_bench_spec
from mmfuse.data import prepare_dataset
from mmfuse.errors import MmfuseError
from mmfuse.evaluate import evaluate_embeddings
from mmfuse.plugins import Plugins, get_plugins
from mmfuse.spec import Spec

log = logging.getLogger(__name__)

QUICK_EPOCHS = 3


class PeakMemory:
    """Peak resident memory (MiB) of this process while the block runs (sampled)."""

    def __init__(self, interval: float = 0.05):
        self.interval = interval
        self.peak = 0.0
        self._stop = threading.Event()

    @staticmethod
    def rss_mib() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss_mib())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self.peak = self.rss_mib()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss_mib())


@dataclass
class BenchResult:
    dataset: str
    spec: Spec
    seeds: list[int]
    quick: bool
    rows: dict[str, dict[str, Any]]  # method → {label, published, runs: [...], skipped}
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    projection: dict[str, Any] | None = None
    dataset_message: str | None = None
    spec_shown: str = ""  # where the spec came from
    holdout_split: dict[str, Any] = field(default_factory=dict)  # view → what was held out
    total_runs: int = 0  # row × seed runs of this bench
    finished_runs: int = 0  # of them, done (or skipped)
    resumed_runs: int = 0  # of them, kept from an earlier, interrupted bench (--resume)
    complete: bool = False


@dataclass
class BenchStatus:
    """Where the bench is, for a progress display."""

    done: int  # runs finished (including those kept by --resume and rows skipped)
    total: int
    row: str  # "mmeda2 (seed 1)", or what the bench does between rows
    stage: str  # what that row does now: "featurizing …", "epoch 3/30, loss 0.12"
    fraction: float  # of the current run, 0..1
    eta_seconds: float | None  # the whole bench's time left (None until measurable)


class Eta:
    """The whole bench's time left, from the pace of the runs done in this session."""

    def __init__(self, todo: int):
        self.todo, self.finished = todo, 0.0
        self.started = time.perf_counter()

    def drop(self, runs: int) -> None:  # runs that will not run (a row skipped)
        self.todo -= runs

    def left(self, fraction: float) -> float | None:
        done = self.finished + fraction
        elapsed = time.perf_counter() - self.started
        if done <= 0.02 or elapsed < 1:
            return None
        return max(elapsed / done * (self.todo - done), 0.0)


def select(names: Sequence[str] | None) -> list[Method]:
    methods = all_methods()
    if not names:
        return methods
    known = {m.name: m for m in methods}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise MmfuseError(f"unknown bench methods {unknown}; known: {', '.join(known)}")
    return [known[n] for n in names]


def _supervised_spec(spec: Spec, seed: int) -> Spec:
    """The spec's targets with the supervised MLP as every probe (multilabel excluded)."""
    targets = {name: {**t.model_dump(mode="json"), "probe": "mlp",
                      "params": {"hidden_layer_sizes": [100], "random_state": seed,
                                 "early_stopping": True}}
               for name, t in spec.evaluate.targets.items() if t.task != "multilabel"}
    ev = {**spec.evaluate.model_dump(mode="json"), "targets": targets, "baselines": "none"}
    return variant(spec, [], {"evaluate": ev})


def _seed_spec(base: Spec, seed: int) -> Spec:
    """The model seed and every split seed (probes, held-out cells) set to ``seed``."""
    changes = [f"seed={seed}", f"evaluate.split.seed={seed}"]
    if base.evaluate is not None and base.evaluate.holdout is not None:
        changes.append(f"evaluate.holdout.seed={seed}")
    return variant(base, changes)


def _earlier(out: Path, digest: str, resume: bool) -> dict[str, Any] | None:
    """The results of an earlier bench in ``out`` to continue (``--resume``), or None.
    Without ``--resume`` a folder that holds one is refused: nothing finished is lost."""
    from mmfuse.bench.report import RESULTS

    file = out / RESULTS
    earlier = None
    if file.is_file():
        try:
            earlier = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise MmfuseError(f"{file} cannot be read ({exc}): not a bench's results; "
                              "choose another --out") from None
    runs = out / "runs"
    started = earlier is not None or (runs.is_dir() and any(runs.iterdir()))
    if not resume:
        if started:
            raise MmfuseError(f"{out} holds an earlier bench: add --resume to keep its "
                              "finished rows and run the rest, or choose another --out")
        return None
    if earlier is None:
        return None
    if earlier.get("spec_digest") != digest:
        raise MmfuseError(f"{out} holds a bench of another spec (a different data set, "
                          "--spec, --set or --quick): rerun with the same ones to resume it, "
                          "or choose another --out")
    return earlier


def run_bench(dataset: str, *, methods: Sequence[str] | None = None, seeds: int = 3,
              quick: bool = False, out: Path, overrides: Sequence[str] = (),
              spec_path: Path | None = None, plugins: Plugins | None = None,
              resume: bool = False, command: str = "",
              on_progress: Callable[[BenchStatus], None] | None = None) -> BenchResult:
    """Every selected row × seed (a row's seeds one after the other); the baselines and
    the floor come with each seed's first evaluation.  ``out`` gets the report, rewritten
    after every run: an interrupted bench keeps what it finished, and ``resume`` runs
    only the rest."""
    from mmfuse.bench.report import write_report

    plugins = plugins or get_plugins()
    quick_set = [f"train.epochs={QUICK_EPOCHS}"] if quick else []
    chosen_spec = load_bench_spec(dataset, spec_path, [*quick_set, *overrides])
    base = chosen_spec.spec
    if base.evaluate is None:
        raise MmfuseError(f"{chosen_spec.shown} has no `evaluate:` section: nothing to "
                          "benchmark")
    chosen = select(methods)
    earlier = _earlier(out, base.digest(), resume)

    def status(row: str, stage: str, fraction: float = 0.0) -> None:
        if on_progress:
            on_progress(BenchStatus(result.finished_runs, result.total_runs, row, stage,
                                    fraction, eta.left(fraction) if eta else None))

    rows: dict[str, dict[str, Any]] = {
        m.name: {"label": m.label, "published": m.published, "runs": [], "skipped": None}
        for m in chosen}
    rows["floor"] = {"label": "trivial floor (majority class / train mean)", "runs": [],
                     "published": None, "skipped": None}
    result = BenchResult(dataset, base, list(range(seeds)), quick, rows,
                         spec_shown=chosen_spec.shown, total_runs=len(chosen) * seeds)
    eta: Eta | None = None
    if earlier is not None:
        _restore(result, earlier, chosen)
    status("preparing the data set", base.dataset.name if base.dataset else "")
    result.dataset_message = prepare_dataset(base, plugins)
    todo = [(m, seed) for m in chosen for seed in result.seeds
            if not _finished(rows[m.name], seed)]
    result.finished_runs = result.resumed_runs = result.total_runs - len(todo)
    eta = Eta(len(todo))
    seed_specs = {seed: _seed_spec(base, seed) for seed in result.seeds}
    for method, seed in todo:
        row = rows[method.name]
        if row["skipped"]:  # a later seed of a row this bench skipped
            result.finished_runs += 1
            continue
        what = f"{method.name} (seed {seed})"
        status(what, "starting")
        ctx = Context(seed_specs[seed], seed, out.resolve() / "runs", plugins,
                      stage=lambda stage, fraction, what=what: status(what, stage, fraction))
        _run_one(result, method, ctx)
        result.finished_runs += 1
        eta.finished += 1
        if row["skipped"]:
            left = sum(1 for m, s in todo if m is method and s > seed)
            eta.drop(left + 1)
            eta.finished -= 1
        status(what, "writing the report", 1.0)
        write_report(result, out, command)
    result.finished_runs = result.total_runs
    result.complete = True
    write_report(result, out, command)
    status("done", "", 1.0)
    return result


def _finished(row: dict[str, Any], seed: int) -> bool:
    return any(r["seed"] == seed for r in row["runs"])


def _restore(result: BenchResult, earlier: dict[str, Any], chosen: list[Method]) -> None:
    """Keep every run an earlier bench finished (rows not chosen this time too); a skipped
    row is tried again (what it lacked may be here now)."""
    names = {m.name for m in chosen}
    for name, row in earlier.get("rows", {}).items():
        kept = {"label": row["label"], "published": row.get("published"),
                "runs": row.get("runs", []), "skipped": None}
        if name in names or name == "floor":
            result.rows[name]["runs"] = kept["runs"]
        elif kept["runs"]:
            result.rows[name] = kept
    result.histories.update(earlier.get("histories") or {})
    result.projection = earlier.get("projection")
    result.holdout_split = earlier.get("holdout_split") or {}


def _run_one(result: BenchResult, method: Method, ctx: Context) -> None:
    """One row × seed: train (or skip, saying why), time, evaluate, record."""
    rows, seed, spec = result.rows, ctx.seed, ctx.spec
    row = rows[method.name]
    try:
        with PeakMemory() as mem:
            output = method.run(ctx)
    except Skip as exc:
        row["skipped"] = str(exc)
        log.info("%s skipped: %s", method.name, exc)
        return
    ctx.stage("evaluating (probes)", 1.0)
    baselines_done = _finished(rows["floor"], seed)
    if output.supervised:  # the MLP is trained inside the evaluation: time it there
        started = time.perf_counter()
        evaluation = evaluate_embeddings(_supervised_spec(spec, seed), output.embeddings)
        output.train_seconds = time.perf_counter() - started
    else:
        evaluation = evaluate_embeddings(
            variant(spec, ["evaluate.baselines=none"]) if baselines_done else spec,
            output.embeddings)
    run: dict[str, Any] = {
        "seed": seed, "train_seconds": round(output.train_seconds, 3),
        "samples_per_second": (output.instances / output.train_seconds
                               if output.train_seconds > 0 and output.instances else None),
        "peak_rss_mib": round(mem.peak, 1),
        "targets": {n: t["metrics"] for n, t in evaluation["targets"].items()}}
    if output.holdout:
        run["holdout"] = {v: m["mmfuse"] for v, m in output.holdout["holdout"].items()}
    row["runs"].append(run)
    if not baselines_done and not output.supervised:
        _baseline_rows(rows, seed, evaluation)
    if output.holdout and not any(_finished(r, seed) for n, r in rows.items()
                                  if n.startswith("cells_")):
        _holdout_rows(result, seed, output.holdout)
    if seed == 0 and not output.supervised:
        result.histories[method.name] = ctx.histories.get(method.name, [])
        if method.name == "mmeda2" or result.projection is None:  # mmeda2's, or the first
            result.projection = _projection(spec, output.embeddings, method.label)


def _holdout_rows(result: BenchResult, seed: int, holdout: dict[str, Any]) -> None:
    """The completion baselines of this seed's held-out cells (global mean, biases, a
    truncated SVD, cmfrec), as rows."""
    for view, methods in holdout["holdout"].items():
        for name, metrics in methods.items():
            if name == "mmfuse":
                continue
            key = "cells_" + name.replace(" ", "_")
            row = result.rows.setdefault(key, {"label": f"held-out baseline: {name}",
                                               "runs": [], "published": None,
                                               "skipped": None})
            run = next((r for r in row["runs"] if r["seed"] == seed), None)
            if run is None:
                run = {"seed": seed, "targets": {}, "holdout": {}}
                row["runs"].append(run)
            run["holdout"][view] = metrics
    for view, info in holdout.get("holdout_split", {}).items():
        result.holdout_split.setdefault(view, info)


def _baseline_rows(rows: dict[str, dict[str, Any]], seed: int, evaluation: dict) -> None:
    """The floor and the raw-view baselines of this seed's evaluation, as rows."""
    rows["floor"]["runs"].append({"seed": seed, "targets": {
        n: t["floor"] for n, t in evaluation["targets"].items()}})
    per_view: dict[str, dict[str, Any]] = {}
    for name, t in evaluation["targets"].items():
        for view, metrics in (t.get("baselines") or {}).items():
            per_view.setdefault(view, {})[name] = metrics
    for view, targets in per_view.items():
        key = f"raw_{view}"
        label = ("raw views concatenated (PCA)" if view == "concat"
                 else f"raw view {view!r} alone (PCA)")
        rows.setdefault(key, {"label": label, "runs": [], "published": None, "skipped": None})
        rows[key]["runs"].append({"seed": seed, "targets": targets})


def class_names(path: Path, codes: np.ndarray) -> list[str]:
    """A label per instance: the class's name where a names file lies beside the labels
    (``category.npy`` → ``categories.txt``, ``category.names.txt`` or
    ``category_names.txt``, one name per line in code order), else the code itself."""
    stem = path.name.split(".")[0]
    plural = stem[:-1] + "ies" if stem.endswith("y") else stem + "s"
    values = [v for v in codes.tolist()]
    for name in (f"{stem}.names.txt", f"{stem}_names.txt", f"{plural}.txt"):
        file = path.parent / name
        if not file.is_file():
            continue
        names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
        try:
            idx = [int(v) for v in values]
        except (TypeError, ValueError):
            break
        if idx and min(idx) >= 0 and max(idx) < len(names):
            return [names[i] for i in idx]
    return [str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v)
            for v in values]


def _projection(spec: Spec, embeddings: dict[str, np.ndarray], row: str
                ) -> dict[str, Any] | None:
    """2-D PCA of the evaluated entity's embeddings, with its first classification labels
    (class names where the data set has them) and the variance each axis explains."""
    from sklearn.decomposition import PCA

    from mmfuse.evaluate import load_labels

    for name, t in spec.evaluate.targets.items():
        if t.task == "classification":
            z = np.asarray(embeddings[t.entity])
            y = load_labels(t.path)
            pca = PCA(n_components=2, random_state=0).fit(z)
            return {"target": name, "entity": t.entity, "row": row,
                    "xy": np.round(pca.transform(z), 5).tolist(),
                    "explained": [float(v) for v in pca.explained_variance_ratio_],
                    "labels": class_names(Path(t.path), y)}
    return None

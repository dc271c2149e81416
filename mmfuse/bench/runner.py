"""Run the benchmark rows over seeds: train, time, watch memory, evaluate."""

from __future__ import annotations

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
from mmfuse.data import prepare_dataset
from mmfuse.errors import MmfuseError
from mmfuse.evaluate import evaluate_embeddings
from mmfuse.plugins import Plugins, get_plugins
from mmfuse.spec import Spec, load_spec

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


def run_bench(dataset: str, *, methods: Sequence[str] | None = None, seeds: int = 3,
              quick: bool = False, out: Path, overrides: Sequence[str] = (),
              spec_path: Path | None = None, plugins: Plugins | None = None,
              on_progress: Callable[[str, int, int], None] | None = None) -> BenchResult:
    """Every selected row × seed; baselines and the floor come with the mmeda2 evaluation."""
    plugins = plugins or get_plugins()
    path = spec_path or Path("specs") / f"{dataset}.yaml"
    quick_set = [f"train.epochs={QUICK_EPOCHS}"] if quick else []
    base = load_spec(path, [*quick_set, *overrides])
    if base.evaluate is None:
        raise MmfuseError(f"{path} has no `evaluate:` section: nothing to benchmark")
    chosen = select(methods)
    rows: dict[str, dict[str, Any]] = {
        m.name: {"label": m.label, "published": m.published, "runs": [], "skipped": None}
        for m in chosen}
    rows["floor"] = {"label": "trivial floor (majority class / train mean)", "runs": [],
                     "published": None, "skipped": None}
    result = BenchResult(dataset, base, list(range(seeds)), quick, rows,
                         dataset_message=prepare_dataset(base, plugins))
    total, done = len(chosen) * seeds, 0
    for seed in range(seeds):
        spec = variant(base, [f"seed={seed}", f"evaluate.split.seed={seed}"])
        no_baselines = variant(spec, ["evaluate.baselines=none"])
        baselines_done = False
        ctx = Context(spec, seed, out / "runs", plugins)
        for method in chosen:
            if on_progress:
                on_progress(f"{method.name} (seed {seed})", done, total)
            done += 1
            row = rows[method.name]
            if row["skipped"]:
                continue
            try:
                with PeakMemory() as mem:
                    output = method.run(ctx)
            except Skip as exc:
                row["skipped"] = str(exc)
                log.info("%s skipped: %s", method.name, exc)
                continue
            if output.supervised:  # the MLP is trained inside the evaluation: time it there
                started = time.perf_counter()
                evaluation = evaluate_embeddings(_supervised_spec(spec, seed), output.embeddings)
                output.train_seconds = time.perf_counter() - started
            else:
                evaluation = evaluate_embeddings(no_baselines if baselines_done else spec,
                                                 output.embeddings)
            row["runs"].append({
                "seed": seed, "train_seconds": round(output.train_seconds, 3),
                "samples_per_second": (output.instances / output.train_seconds
                                       if output.train_seconds > 0 and output.instances
                                       else None),
                "peak_rss_mib": round(mem.peak, 1),
                "targets": {n: t["metrics"] for n, t in evaluation["targets"].items()}})
            if not baselines_done and not output.supervised:
                _baseline_rows(rows, seed, evaluation)
                baselines_done = True
            if seed == 0 and not output.supervised:
                result.histories[method.name] = ctx.histories.get(method.name, [])
                if method.name == "mmeda2":
                    result.projection = _projection(spec, output.embeddings)
    if on_progress:
        on_progress("done", total, total)
    return result


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


def _projection(spec: Spec, embeddings: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """2-D PCA of the evaluated entity's embeddings, with its first classification labels."""
    from sklearn.decomposition import PCA

    from mmfuse.evaluate import load_labels

    for name, t in spec.evaluate.targets.items():
        if t.task == "classification":
            z = embeddings[t.entity]
            y = load_labels(t.path)
            xy = PCA(n_components=2, random_state=0).fit_transform(z)
            return {"target": name, "entity": t.entity, "xy": xy.tolist(),
                    "labels": [str(v) for v in y.tolist()]}
    return None

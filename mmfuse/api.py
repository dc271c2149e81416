"""The Python API behind the CLI: train a spec into a run folder, evaluate it, embed with it.

    from mmfuse.api import train
    result = train(load_spec("specs/goodreads.yaml"), out="runs/gr")
"""

from __future__ import annotations

import contextlib
import functools
import logging
import platform
import resource
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

import mmfuse
from mmfuse.batching import sparse_to_device
from mmfuse.build import Built, build, count_parameters
from mmfuse.cost import check_memory, estimate
from mmfuse.data import Data, MatrixData, SparseRows, load_data
from mmfuse.errors import DataError, MmfuseError, SpecError
from mmfuse.evaluate import evaluate_embeddings
from mmfuse.holdout import evaluate_holdout
from mmfuse.inputs import (
    ARRAY_SUFFIXES,
    RETRAIN,
    build_stored,
    describe_inputs,
    featurize_new,
    featurizes,
    load_new_data,
    stored_data,
)
from mmfuse.model import Batch
from mmfuse.plugin_api import Callback
from mmfuse.plugins import Plugins, get_plugins
from mmfuse.predict import CellModel
from mmfuse.run import RunDir, RunFolderError
from mmfuse.spec import Spec
from mmfuse.strategy import make_strategy
from mmfuse.training import Trainer, embed_all

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run: RunDir
    built: Built
    trainer: Trainer
    evaluation: dict[str, Any] | None  # None in every process of a job but rank 0

    @property
    def main(self) -> bool:
        """Whether this process wrote the run folder (rank 0, or the only process)."""
        return self.trainer.strategy.is_main


def default_run_dir(spec: Spec) -> Path:
    return Path("runs") / spec.name / datetime.now().strftime("%Y%m%d-%H%M%S")


def _manifest(built: Built, trainer: Trainer, started: float, status: str,
              plugins: Plugins) -> dict[str, Any]:
    spec, data = built.spec, built.data
    return {
        "name": spec.name,
        "status": status,
        "spec_digest": spec.digest(),
        "seed": spec.seed,
        "device": str(built.device),
        "cpu_threads": torch.get_num_threads(),
        "versions": {"mmfuse": mmfuse.__version__, "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "mmfuse_git": git_checkout(),
        "plugins": plugins_used(spec, plugins),
        "dataset": data.dataset_message,
        "data": {"entities": data.sizes, "views": data.shapes(), "readers": data.info},
        "model": {"preset": built.plan.preset.name,
                  "parameters": count_parameters(built.model),
                  "terms": built.plan.terms, "sparse_sides": sorted(
                      f"{v}:{r}" for v, r in built.plan.sparse), "notes": list(built.plan.notes)},
        "training": {
            "epochs_run": trainer.epoch, "converged": trainer.converged,
            "final_loss": trainer.history[-1]["loss"] if trainer.history else None,
            "seconds_total": round(time.time() - started, 2),
            "seconds_per_epoch": [h["seconds"] for h in trainer.history],
            "steps_per_epoch": built.batcher.steps_per_epoch(),
            "primary": built.batcher.primary,
            "batch_size": built.batcher.batch_sizes[built.batcher.primary]
            if not built.batcher.primary_is_view else None,
            "step_cells": built.batcher.step_cells(),
            "lr": built.lr,
            **_validation(trainer),
        },
        "distributed": _distributed(built, trainer),
        "cost": {"steps_per_epoch": built.batcher.steps_per_epoch(),
                 "peak_rss_mib": round(_peak_rss_mib(), 1)},
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _validation(trainer: Trainer) -> dict[str, Any]:
    """``train.validation``: its cells per view, the best epoch and its validation loss
    (the embeddings' weights); nothing when it is off."""
    if trainer.validation is None:
        return {}
    return {"validation": {"fraction": trainer.spec.train.validation,
                           "cells": trainer.validation.counts()},
            "best_epoch": trainer.best_epoch, "best_val_loss": trainer.best_val_loss}


@functools.cache
def git_checkout() -> dict[str, Any] | None:
    """mmfuse's git commit (and whether its tracked files differ from it) when mmfuse runs
    from a git checkout — its package folder the top of a work tree; None otherwise (an
    installed wheel, no git) and on any failure."""
    root = Path(mmfuse.__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()

    try:
        if not (root / ".git").exists() or Path(git("rev-parse", "--show-toplevel")) != root:
            return None
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {"commit": commit, "dirty": dirty}


def plugins_used(spec: Spec, plugins: Plugins) -> dict[str, dict[str, Any]]:
    """Every plugin loaded, with the package (and version) that installed it and what of it
    the spec names (``reader word2vec``, ``encoder conv``, ...)."""
    named: list[tuple[str, str]] = [("readers", v.source.reader) for v in spec.views.values()]
    for v in spec.views.values():
        named += [("encoders", e.type) for e in (v.encoder, v.col_encoder) if e.type != "auto"]
        named.append(("likelihoods", v.likelihood.type))
    named += [("callbacks", c) for c in spec.train.callbacks]
    if spec.dataset is not None:
        named.append(("datasets", spec.dataset.name))
    out: dict[str, dict[str, Any]] = {}
    for name, _ in plugins.manager.list_name_plugin():
        out[name] = {"distribution": plugins.distribution(name), "uses": []}
    for kind, name in dict.fromkeys(named):
        registry = plugins.registry(kind)
        if name in registry:
            owner = registry.entries[name].plugin
            out.setdefault(owner, {"distribution": plugins.distribution(owner), "uses": []})
            out[owner]["uses"].append(f"{kind[:-1]} {name}")
    return out


def _distributed(built: Built, trainer: Trainer) -> dict[str, Any]:
    """The job: processes, backend, and each one's throughput (after training)."""
    batcher, ranks = built.batcher, trainer.throughput
    unit = "cells" if batcher.primary_is_view else f"{batcher.primary} instances"
    rates = [r["per_second"] for r in ranks if r["per_second"] is not None]
    return {**trainer.strategy.describe(), "unit": unit, "ranks": ranks,
            "per_second": round(sum(rates), 1) if rates else None}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(spec: Spec, out: Path | str | None = None, *, resume: bool = False,
          callbacks: Sequence[Callback] = (), plugins: Plugins | None = None,
          device: str | None = None, evaluate: bool = True,
          ignore_memory: bool = False) -> TrainResult:
    """Train ``spec``; write the run folder (checkpoint every epoch); embed every entity;
    evaluate when the spec says how.  ``resume`` continues from ``out``'s checkpoint.
    A spec whose peak-memory estimate exceeds the machine's is refused unless
    ``ignore_memory``.

    Started by a launcher (``mmfuse train --nproc N``, torchrun), each process calls this:
    ``train.strategy`` (:mod:`mmfuse.strategy`) makes it one process of a DDP job, training
    its shard of each epoch; rank 0 alone writes the run folder while the others wait."""
    plugins = plugins or get_plugins()
    strategy = make_strategy(spec, device)
    try:
        with contextlib.ExitStack() as held:
            run = RunDir(strategy.broadcast(Path(out) if out else default_run_dir(spec)))
            _claim(run, resume, strategy, held)
            return _train(spec, run, resume, callbacks, plugins, strategy, evaluate,
                          ignore_memory)
    finally:
        strategy.close()


def _claim(run: RunDir, resume: bool, strategy, held: contextlib.ExitStack) -> None:
    """Rank 0 takes the run folder (checked, locked until ``held`` closes); every process
    of a job raises the same error when it may not."""
    refused = None
    if strategy.is_main:
        try:
            held.enter_context(run.claim(resume))
        except MmfuseError as exc:
            refused = exc
    message = strategy.broadcast(str(refused) if refused else None)
    if refused is not None:
        raise refused
    if message is not None:
        raise RunFolderError(message)


def _train(spec: Spec, run: RunDir, resume: bool, callbacks: Sequence[Callback],
           plugins: Plugins, strategy, evaluate: bool, ignore_memory: bool) -> TrainResult:
    with strategy.main_first():  # rank 0 prepares data sets and caches
        built = build(spec, plugins, strategy.device, strategy.shard)
    cost = estimate(built)
    log.info("estimated peak memory %.0f MiB", cost.peak_bytes / 2**20)
    if not ignore_memory:
        check_memory(cost)
    observers = [plugins.callbacks.get(name)() for name in spec.train.callbacks]
    trainer = Trainer(built, run, [*observers, *callbacks], strategy)
    if resume:
        trainer.resume()
    started = time.time()
    if strategy.is_main:  # the manifest first: it marks the folder as a run (RunDir.is_run)
        run.write_manifest(_manifest(built, trainer, started, "training", plugins))
        run.write_spec(spec)
        run.write_inputs(*describe_inputs(spec, built.data, plugins))
    trainer.fit()
    evaluation = None
    if strategy.is_main:
        if trainer.best_epoch is not None:  # train.validation: the best epoch's weights
            run.load_checkpoint(built.device, spec=spec, model=built.model)
        for entity in spec.entities:
            run.write_embeddings(entity, embed_all(built, entity), built.data.ids[entity])
        for view, cells in built.data.held.items():
            run.write_holdout(view, cells)
        if evaluate and spec.evaluate is not None:
            evaluation = evaluate_run(run, spec, built.data, built)
        run.write_manifest(_manifest(built, trainer, started, "done", plugins))
    strategy.barrier()  # the others wait for rank 0's run folder
    return TrainResult(run, built, trainer, evaluation)


def evaluate_run(run: RunDir, spec: Spec | None = None, data: Data | None = None,
                 built: Built | None = None) -> dict[str, Any]:
    """Probe the run's embeddings on the spec's targets (beside the floor and raw-view
    baselines, read from ``data`` or loaded); with the trained model ``built``, the view
    ablation too (``evaluate.ablation``); writes ``evaluation.json``."""
    from mmfuse.evaluate import Ablation

    spec = spec or run.read_spec()
    entities = {t.entity for t in spec.evaluate.targets.values()} if spec.evaluate else set()
    embeddings = {e: run.read_embeddings(e)[0] for e in entities}
    if spec.evaluate is not None and spec.evaluate.holdout is not None and data is None:
        data = load_data(spec, get_plugins())  # the same split: it is seeded
    ablation = Ablation.of(built) if built is not None else None
    result = evaluate_embeddings(spec, embeddings, data=data, ablation=ablation)
    if spec.evaluate is not None and spec.evaluate.holdout is not None:
        result.update(evaluate_holdout(spec, data, CellModel.from_run(run, data, spec)))
    run.write_evaluation(result)
    return result


def load_trained(run: RunDir, plugins: Plugins | None = None) -> Built:
    """Rebuild a run's model from its folder alone — resolved spec, ``inputs.json`` (and
    ``inputs/``), checkpoint — on the CPU; no training file is read, so a run folder that
    was moved, or whose training data is gone, still embeds.  A run folder of an older
    mmfuse (no ``inputs.json``) is rebuilt from its training data, where that still is."""
    plugins = plugins or get_plugins()
    spec = run.read_spec()
    inputs = run.read_inputs()
    if inputs is None:
        log.warning("%s keeps no inputs.json (an older mmfuse made it): reading its training "
                    "data", run.root)
        try:
            built = build(spec, plugins, device="cpu")
        except SpecError as exc:
            raise MmfuseError(f"{run.root} was made by an older mmfuse: it keeps no "
                              "inputs.json (what embedding needs from the training data), and "
                              f"its training data cannot be read ({exc.issues[0].message}); "
                              f"{RETRAIN}") from exc
    else:
        built = build_stored(spec, plugins, stored_data(run, spec, inputs))
    run.load_checkpoint("cpu", spec=spec, model=built.model)
    built.model.eval()
    return built


def new_inputs(built: Built, entity: str, data: Mapping[str, Any],
               ids: Sequence[str] | None = None, plugins: Plugins | None = None
               ) -> dict[str, Any]:
    """The arrays :func:`embed_new` takes, from what a user gives for each view: an array,
    a scipy sparse matrix or a DataFrame (in the view's input space); a ``.npy``/``.npz``
    file (the same, saved); or new raw input of a view whose reader featurizes it
    (:func:`mmfuse.plugin_api.featurizer`): a file of the kind the reader read in training
    (new documents, one a line, for ``word2vec``, ``tfidf``, ``glove``), or a list of str
    (one document each: written one a line, then featurized).  ``ids`` go to the
    featurizer (a reader that finds instances by id)."""
    plugins = plugins or get_plugins()
    spec = built.spec
    if entity not in built.plan.codes:
        raise DataError(f"unknown entity {entity!r}; known: "
                        f"{', '.join(sorted(built.plan.codes))}")
    unknown = sorted(set(data) - set(spec.views))
    if unknown:
        views = sorted({view for view, _ in built.plan.codes.get(entity, [])})
        raise DataError(f"unknown view {', '.join(map(repr, unknown))}; the views of entity "
                        f"{entity!r} are {', '.join(views) or '(none)'}")
    arrays: dict[str, Any] = {}
    for view, value in data.items():
        if isinstance(value, (list, tuple)) and all(isinstance(x, str) for x in value):
            arrays[view] = _featurize_documents(built, plugins, view, list(value), ids)
        elif isinstance(value, (str, Path)):
            path = Path(value)
            if path.suffix in ARRAY_SUFFIXES or not featurizes(spec, plugins, view):
                arrays[view] = load_new_data(view, path)
            else:
                arrays[view] = featurize_new(built, plugins, view, path, ids)
        elif hasattr(value, "columns") and hasattr(value, "index"):  # a DataFrame
            arrays[view] = value.to_numpy()
        else:
            arrays[view] = value
    return arrays


def _featurize_documents(built: Built, plugins: Plugins, view: str, docs: list[str],
                         ids: Sequence[str] | None) -> np.ndarray:
    import tempfile

    bad = next((i for i, d in enumerate(docs) if "\n" in d or "\r" in d), None)
    if bad is not None:
        raise DataError(f"view {view!r}: document {bad} holds a line break; give one line "
                        "per document")
    with tempfile.TemporaryDirectory(prefix="mmfuse-new-") as folder:
        path = Path(folder) / f"{view}.txt"
        path.write_text("".join(f"{d}\n" for d in docs), encoding="utf-8")
        return featurize_new(built, plugins, view, path, list(ids) if ids is not None else None)


def _stored_cells(array: np.ndarray) -> sp.coo_array:
    """The cells of a dense array that are not NaN (NaN cells are missing)."""
    array = np.asarray(array, dtype=np.float32)
    rows, cols = np.nonzero(~np.isnan(array))
    return sp.coo_array((array[rows, cols], (rows, cols)), shape=array.shape)


def _missing_as_nan(matrix) -> np.ndarray:
    """A sparse matrix as a dense array whose cells not stored are NaN (missing)."""
    coo = sp.coo_array(matrix)
    dense = np.full(coo.shape, np.nan, dtype=np.float32)
    dense[coo.row, coo.col] = coo.data
    return dense


@torch.no_grad()
def embed_new(built: Built, entity: str, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Embed new instances of ``entity`` through the trained encoders.

    ``arrays`` maps each view that gives ``entity`` a code to the new instances' data in that
    view's input space: rows (n × n_cols) where the entity is the row entity, columns
    (n × n_rows) where it is the column entity, tensors (n × *shape) for tensor views.
    Matrix data is a dense array (NaN cells missing) or a scipy sparse matrix (cells not
    stored are missing, stored zeros observed).  Where the model fuses view codes, a view
    may be left out: the instances are embedded from the others (its codes left out of the
    fusion, as under ``model.view_dropout`` in training); so is, per instance, a matrix
    view in which an instance has no observed cell (a row of NaN, or none stored).
    """
    plan = built.plan
    if plan.preset.codes == "free":
        raise DataError("preset cmf learns free embeddings: it cannot embed new instances")
    if entity not in plan.codes:
        raise DataError(f"unknown entity {entity!r}; known: {', '.join(sorted(plan.codes))}")
    keys = plan.codes[entity]
    needed = {view for view, _ in keys}
    missing, extra = needed - set(arrays), set(arrays) - needed
    if extra or not arrays or (missing and plan.preset.codes != "view"):
        raise DataError(f"entity {entity!r} needs data for views {sorted(needed)}"
                        + (f"; missing {sorted(missing)}" if missing else "")
                        + (f"; not used: {sorted(extra)}" if extra else ""))
    if missing:
        log.warning("embedding %r from %s only (no data for %s)%s", entity,
                    ", ".join(sorted(set(arrays))), ", ".join(sorted(missing)),
                    "" if plan.view_dropout else ": this model was trained without view "
                    "dropout (model.view_dropout 0), so it never saw an instance without a "
                    "view; expect a poorer embedding")
    n = {a.shape[0] for a in arrays.values()}
    if len(n) != 1:
        raise DataError(f"the --data arrays have different numbers of instances: {sorted(n)}")
    count = n.pop()
    batch = Batch(idx={entity: torch.arange(count)})
    for key in keys:
        view, role = key
        if view in missing:  # an input of no cells: its code is left out of the fusion
            width = plan.in_shapes[key]
            batch.sides[key] = (sparse_to_device(SparseRows(
                np.zeros(count + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                width[0]), torch.device("cpu")) if key in plan.sparse
                else torch.zeros((count, *width)))
            continue
        if role == "col" and plan.column_mode[view] in ("embedding", "sketch"):
            raise DataError(f"view {view!r} has `columns: {plan.column_mode[view]}`: new "
                            "columns cannot be encoded")
        array = arrays[view]
        want = plan.in_shapes[key]
        if tuple(array.shape[1:]) != want:
            raise DataError(f"view {view!r}: data has shape {list(array.shape)}; expected "
                            f"[n, {', '.join(map(str, want))}]")
        store = built.data.views[view]
        if sp.issparse(array) and not isinstance(store, MatrixData):
            raise DataError(f"view {view!r} is a tensor view: give a dense array")
        if key in plan.sparse:  # the stored cells: a sparse matrix's, or a dense one's non-NaN
            csr = sp.csr_array(array if sp.issparse(array) else _stored_cells(array),
                               dtype=np.float32)
            if getattr(store, "zero_missing", False):  # `missing: zero`: 0 cells missing
                csr.eliminate_zeros()
            part = store.scale_new_rows(
                SparseRows(csr.indptr, csr.indices, csr.data, csr.shape[1]), role)
            batch.sides[key] = sparse_to_device(part, torch.device("cpu"))
            _mark_present(batch, key, np.diff(csr.indptr) > 0)
            continue
        if sp.issparse(array):  # a dense side: cells not stored are missing (NaN)
            array = _missing_as_nan(array)
        array = np.asarray(array)
        if array.dtype != np.uint8:
            array = array.astype(np.float32)
            if isinstance(store, MatrixData):
                if store.zero_missing:  # `missing: zero`: as in training, 0 cells missing
                    array = np.where(array == 0, np.nan, array)
                array = store.scale_new(array, role)
                _mark_present(batch, key, ~np.isnan(array).all(axis=1))
        values = array if array.dtype == np.uint8 else np.nan_to_num(array)
        t = torch.from_numpy(np.ascontiguousarray(values))
        batch.sides[key] = t.float().div_(255.0) if t.dtype == torch.uint8 else t
    if batch.present and len(needed) > 1:
        has = np.zeros(count, dtype=bool)
        for key in keys:
            if key[0] not in missing:
                has |= batch.present[key].numpy() if key in batch.present else True
        if not has.all():
            log.warning("%s of the %s new instances have no observed cell in any view: "
                        "each is embedded as the fusion of no view (one vector for all)",
                        f"{int((~has).sum()):,}", f"{count:,}")
    zs, _ = built.model.encode(batch, without=frozenset(missing))
    return zs[entity].float().numpy()


def _mark_present(batch: Batch, key, present: np.ndarray) -> None:
    """Record the instances that have side ``key`` where some do not (their code is left
    out of the fusion, as in training)."""
    if not present.all():
        batch.present[key] = torch.from_numpy(np.ascontiguousarray(present))

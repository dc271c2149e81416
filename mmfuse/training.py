"""The training loop: one optimiser step per batch, convergence, checkpoints, observers."""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmfuse.allocator import keep_freed_memory
from mmfuse.batching import negative_rate, prefetch
from mmfuse.build import Built
from mmfuse.errors import Interrupted, MmfuseError
from mmfuse.optim import RowAdam, RowSGD
from mmfuse.plugin_api import Callback
from mmfuse.run import RunDir
from mmfuse.strategy import Single

log = logging.getLogger(__name__)


#: An epoch whose mean loss is this many times the first epoch's has diverged (a loss only
#: grows like this when the steps overshoot: the learning rate is too high).
DIVERGED = 1e3
#: On an accelerator the step's loss terms stay on the device, summed there, and are read
#: (one transfer for all of them) every this many steps and at the epoch's end, not at
#: every step: each read waits for the device to finish.  On the CPU a read costs nothing
#: and every step is checked.
READ_EVERY = 50


class TrainingError(MmfuseError):
    """Training cannot go on; ``lr``: the learning rate to resume with, when a lower one
    is the fix (the last good checkpoint is kept)."""

    def __init__(self, message: str, lr: float | None = None):
        super().__init__(message)
        self.lr = lr


@contextlib.contextmanager
def deferred_signals(active: bool = True) -> Iterator[list[int]]:
    """In the block, SIGINT and SIGTERM are noted in the list it yields, for the loop to
    stop at the end of its step (:meth:`Trainer.fit`); a second one stops at once.  Only
    in the main thread (which receives signals), when ``active``, and for signals not
    ignored."""
    noted: list[int] = []

    def note(signum: int, frame) -> None:
        if noted:
            raise _interruption(signum)
        noted.append(signum)

    if not active or threading.current_thread() is not threading.main_thread():
        yield noted
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:  # an ignored signal stays ignored (nohup, &)
            signal.signal(s, note)
    try:
        yield noted
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _interruption(signum: int) -> BaseException:
    """What a signal raises: KeyboardInterrupt for SIGINT (exit 130), else
    :class:`~mmfuse.errors.Interrupted` (SIGTERM: exit 143)."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Interrupted(signum)


class Optimizers:
    """The dense parameters' optimiser (torch's fused Adam/AdamW, or SGD) and, for tables
    with sparse gradients (free factors, the sparse encoder's tables), the same method in
    :mod:`mmfuse.optim`'s row form: a step then updates only the table rows it used."""

    def __init__(self, built: Built):
        o, lr = built.spec.train.optimizer, built.lr
        model = built.model
        sparse = model.sparse_parameters()
        ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if id(p) not in ids]
        self.parts: list[torch.optim.Optimizer] = []
        if o.type == "sgd":
            if dense:
                self.parts.append(torch.optim.SGD(dense, lr=lr, momentum=o.momentum,
                                                  weight_decay=o.weight_decay))
            if sparse:
                self.parts.append(RowSGD(sparse, lr=lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay))
            return
        cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
        # fused: one pass over each parameter's memory (CPU and CUDA), not ten
        if dense:
            self.parts.append(cls(dense, lr=lr, weight_decay=o.weight_decay, fused=True))
        if sparse:
            self.parts.append(RowAdam(sparse, lr=lr, weight_decay=o.weight_decay,
                                      decoupled=o.type == "adamw"))

    def zero_grad(self) -> None:
        for opt in self.parts:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.parts:
            opt.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.parts]

    def load_state_dict(self, states: list[dict[str, Any]], lr: float) -> None:
        """A checkpoint's state, with the learning rate ``lr`` (a resume may change it)."""
        for opt, state in zip(self.parts, states, strict=True):
            opt.load_state_dict(state)
            for group in opt.param_groups:
                group["lr"] = lr


def relative_change(previous: float, current: float) -> float:
    return abs(previous - current) / max(abs(previous), 1e-12)


class Validation:
    """The cells ``train.validation`` kept out of training, in training units (``scale:
    standard`` applied as to the training cells), and their score: each view's factor term
    (``val.VIEW``) and their sum (``val_loss``) under the current weights.

    A sparse view whose steps score sampled negatives (``negatives``; bernoulli views) gets
    as many per validation cell, drawn once (seeded) among the cells with no stored value
    (training, validation or held out), scored as 0.  Scoring embeds only the instances the
    cells touch, ``chunk`` at a time, and scores ``CELLS`` cells at a time."""

    CELLS = 1 << 16

    def __init__(self, built: Built, chunk: int = 256):
        from mmfuse.holdout import VALIDATION_STREAM, _negatives, _rng, validation_split

        spec, data = built.spec, built.data
        self.chunk = chunk
        split = validation_split(spec)
        self.cells: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for view, held in data.validation.items():
            matrix = data.views[view]
            rows, cols = held.rows.astype(np.int64), held.cols.astype(np.int64)
            values = held.values.astype(np.float64)
            if matrix.center is not None:  # scale: standard, as the training cells
                values = (values - matrix.center[cols]) / matrix.spread[cols]
            count = int(round(negative_rate(spec, view) * len(values))) if matrix.sparse else 0
            if count:
                n_c = matrix.shape[1]
                taken = [matrix.cell_rows().astype(np.int64) * n_c + matrix.csr.indices,
                         rows * n_c + cols]
                if view in data.held:
                    taken.append(data.held[view].rows * n_c + data.held[view].cols)
                taken_cells = np.unique(np.concatenate(taken))
                count = min(count, matrix.shape[0] * n_c - len(taken_cells))
                if count > 0 and split is not None:
                    rng = _rng(split, view, (VALIDATION_STREAM, 1))  # not the split's own
                    neg_r, neg_c = _negatives(rng, matrix.shape, taken_cells, count)
                    rows, cols = np.concatenate([rows, neg_r]), np.concatenate([cols, neg_c])
                    values = np.concatenate([values, np.zeros(len(neg_r))])
            self.cells[view] = (rows, cols, values.astype(np.float32))
        self.entities: dict[str, tuple[str, str]] = {
            view: (spec.views[view].rows, spec.views[view].cols) for view in self.cells}
        touched: dict[str, list[np.ndarray]] = defaultdict(list)
        for view, (rows, cols, _) in self.cells.items():
            r, c = self.entities[view]
            touched[r].append(rows)
            touched[c].append(cols)
        #: each entity's instances that the cells touch (sorted), and each view's cells as
        #: positions among them
        self.instances = {e: np.unique(np.concatenate(parts)) for e, parts in touched.items()}
        self.at = {view: (np.searchsorted(self.instances[self.entities[view][0]], rows),
                          np.searchsorted(self.instances[self.entities[view][1]], cols))
                   for view, (rows, cols, _) in self.cells.items()}

    def counts(self) -> dict[str, int]:
        """Cells scored per view (negatives among them)."""
        return {view: len(values) for view, (_, _, values) in self.cells.items()}

    @torch.no_grad()
    def score(self, built: Built) -> dict[str, float]:
        """``{"val.VIEW": ..., "val_loss": ...}`` under the model's current weights (in eval
        mode: no view dropout; put back in training mode after)."""
        model, device = built.model, built.device
        was_training = model.training
        model.eval()
        try:
            z = {}
            for entity, idx in self.instances.items():
                parts = []
                for start in range(0, len(idx), self.chunk):
                    batch = built.batcher.make({entity: idx[start:start + self.chunk]})
                    zs, _ = model.encode(batch)
                    parts.append(zs[entity].float())
                z[entity] = torch.cat(parts)
            out: dict[str, float] = {}
            for view, (_, _, values) in self.cells.items():
                r, c = self.entities[view]
                at_r, at_c = self.at[view]
                total = 0.0
                for start in range(0, len(values), self.CELLS):
                    part = slice(start, start + self.CELLS)
                    loss = model.score_cells(
                        view, z[r], z[c], torch.from_numpy(at_r[part]).to(device),
                        torch.from_numpy(at_c[part]).to(device),
                        torch.from_numpy(values[part]).to(device))
                    total += float(loss) * len(values[part])
                out[f"val.{view}"] = total / len(values)
        finally:
            model.train(was_training)
        out["val_loss"] = sum(out.values())
        return out


class StepTerms(Mapping[str, float]):
    """One step's loss terms (``loss`` and each term) as floats, read from the device on
    first access, all at once: an observer that does not look costs no transfer."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self._tensors = tensors
        self._values: dict[str, float] | None = None

    def _read(self) -> dict[str, float]:
        if self._values is None:
            keys = list(self._tensors)
            values = torch.stack([self._tensors[k].float() for k in keys]).tolist()
            self._values = dict(zip(keys, values, strict=True))
        return self._values

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


class Trainer:
    """Trains a built model, writing metrics and an atomic checkpoint every epoch.

    One loop for every strategy (:mod:`mmfuse.strategy`): alone, or as one process of a DDP
    job, where each process trains its shard of every epoch (DDP averages the gradients),
    the epoch's metrics are means over every process's steps, and rank 0 alone writes and
    runs the observers.  Observers (``callbacks``) see every step and epoch; the CLI's
    progress bar is one.
    """

    def __init__(self, built: Built, run: RunDir, callbacks: Sequence[Callback] = (),
                 strategy: Single | None = None):
        self.built = built
        self.run = run
        self.callbacks = list(callbacks)
        self.spec = built.spec
        train = self.spec.train
        self.strategy = strategy or Single(built.device, train.precision, train.compile)
        self.model = built.model  # the checkpoint holds its state
        self.net = self.strategy.prepare(built.model)  # what a step calls (compiled, DDP)
        self.optimizer = Optimizers(built)
        self.history: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.stalled = 0  # consecutive epochs with relative change under tol
        self.converged = False
        self.term_scale: dict[str, float] = {}  # running mean of each term (train.balance)
        self.initial_loss: float | None = None  # the first step's (divergence guard)
        self.read_every = 1 if built.device.type == "cpu" else READ_EVERY  # steps a read
        self.throughput: list[dict[str, Any]] = []  # per process, after fit
        # train.validation: its cells, and the best epoch so far (lowest val_loss)
        self.validation = Validation(built) if built.data.validation else None
        self.best_epoch: int | None = None
        self.best_val_loss: float | None = None

    # ------------------------------------------------------------------ state

    def _process_state(self) -> dict[str, Any]:
        """What differs between the processes of a job: RNG state, running term means."""
        state: dict[str, Any] = {"torch_rng": torch.get_rng_state(),
                                 "term_scale": dict(self.term_scale)}
        if self.built.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.built.device)
        return state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint, with every process's own state (a collective: each calls it)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "stalled": self.stalled,
            "converged": self.converged,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "world_size": self.strategy.world_size,
            "processes": self.strategy.gather(self._process_state()),
            "spec_digest": self.spec.digest_model(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A checkpoint's state, but the weights (:meth:`resume` loads them, checked, through
        :meth:`RunDir.load_checkpoint`)."""
        world, saved = self.strategy.world_size, int(state["world_size"])
        if saved != world:
            raise TrainingError(
                f"the checkpoint was written by a job of {saved} process(es) and this one has "
                f"{world}: resume it with {saved} (`--nproc {saved}`, or torchrun with "
                f"{saved} in all)" + (" and no --nproc" if saved == 1 else ""))
        self.optimizer.load_state_dict(state["optimizer"], self.built.lr)
        self.epoch, self.stalled = int(state["epoch"]), int(state["stalled"])
        self.converged = bool(state["converged"])
        self.history = list(state["history"])
        self.best_epoch = state.get("best_epoch")
        self.best_val_loss = state.get("best_val_loss")
        mine = state["processes"][self.strategy.rank]
        torch.set_rng_state(mine["torch_rng"])
        if "cuda_rng" in mine and self.built.device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda_rng"], self.built.device)
        self.term_scale = dict(mine["term_scale"])

    def resume(self) -> None:
        state = self.run.load_checkpoint(self.built.device, spec=self.spec, model=self.model,
                                         resume=True)
        self.load_state_dict(state)
        if self.strategy.is_main and self.best_epoch is not None:
            self._repair_best(state)
        log.info("resumed %s after epoch %d", self.run.root, self.epoch)

    def _repair_best(self, state: dict[str, Any]) -> None:
        """The best checkpoint is written after the last one: a run killed between the two
        writes of an epoch that was the best holds that epoch's weights in the last one
        only; write them as the best again."""
        saved = self.run.best_epoch_saved()
        if saved != self.best_epoch and self.best_epoch == self.epoch:
            log.info("writing the best checkpoint of epoch %d again (the run was stopped "
                     "before it was written)", self.epoch)
            self.run.save_best(self._best_state(state))

    def _best_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """What ``checkpoint.best.pt`` holds: the best epoch's weights, which epoch, its
        validation loss, the spec digest."""
        return {"model": state["model"], "epoch": self.best_epoch,
                "val_loss": self.best_val_loss, "spec_digest": state["spec_digest"]}

    # ------------------------------------------------------------------ steps

    def _step(self, batch) -> dict[str, torch.Tensor]:
        with self.strategy.autocast():
            terms = self.net(batch)
        loss = torch.stack([t.float() for t in terms.values()]).sum()
        objective = self._balanced(terms) if self.spec.train.balance else loss
        self.optimizer.zero_grad()
        objective.backward()
        self.optimizer.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in terms.items()}}

    def _balanced(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each term divided by its running mean (``train.balance``): every term then pulls
        with the same relative strength, whatever the scale of its view's data."""
        out = []
        for name, term in terms.items():
            value = float(term.detach())
            previous = self.term_scale.get(name, value)
            self.term_scale[name] = 0.9 * previous + 0.1 * value
            out.append(term.float() / max(self.term_scale[name], 1e-12))
        return torch.stack(out).sum()

    # ------------------------------------------------------------------ loop

    def _notify(self, event: str, *args) -> None:
        """Call the observers (rank 0's only, in a job of several processes)."""
        if self.strategy.is_main:
            for cb in self.callbacks:
                getattr(cb, event)(self, *args)

    def fit(self) -> None:
        """Train until converged or ``train.epochs``.  SIGINT or SIGTERM stops it at the end
        of the current step (KeyboardInterrupt, :class:`~mmfuse.errors.Interrupted`), the
        last epoch's checkpoint intact (alone; in a job of several processes, the launcher
        stops them)."""
        if self.strategy.world_size == 1:  # see mmfuse.allocator: not beside gloo's threads
            keep_freed_memory()  # no mmap / munmap of every step's activations (glibc)
        with deferred_signals(self.strategy.world_size == 1) as signals:
            self._fit(signals)

    def _fit(self, signals: list[int]) -> None:
        train = self.spec.train
        batcher = self.built.batcher
        steps_run, seconds_run = 0, 0.0
        self._notify("on_train_start")
        while self.epoch < train.epochs and not self.converged:
            epoch = self.epoch
            started = time.perf_counter()
            self.model.train()
            sums: dict[str, torch.Tensor] = {}  # on the device (READ_EVERY)
            steps = 0
            self._notify("on_epoch_start", epoch + 1, batcher.steps_per_epoch())
            # batches are made in a background thread beside an accelerator; on the CPU
            # the same cores would both make and train them (measured slower: 13.0 s vs
            # 11.1 s an epoch, benchmarks/scale.py at 20k × 10k)
            batches = batcher.epoch(epoch)
            if self.built.device.type != "cpu":
                batches = prefetch(batches)
            for batch in batches:
                tensors = self._step(batch)
                for k, v in tensors.items():
                    v = v.to(self._sum_dtype)
                    sums[k] = sums[k] + v if k in sums else v
                steps += 1
                terms = StepTerms(tensors)
                if self.initial_loss is None:
                    self.initial_loss = terms["loss"]
                if steps % self.read_every == 0:
                    self._check_finite(sums, terms, epoch, steps)
                self._notify("on_step_end", steps, terms)
                if signals:
                    log.info("stopping at epoch %d, step %d (signal %d)", epoch + 1, steps,
                             signals[0])
                    raise _interruption(signals[0])
            if steps % self.read_every:  # the steps since the last read
                self._check_finite(sums, terms, epoch, steps)
            seconds = time.perf_counter() - started
            steps_run, seconds_run = steps_run + steps, seconds_run + seconds
            self._end_epoch(epoch, self._epoch_means(sums, steps), seconds)
        self.throughput = self.strategy.gather(self._rates(steps_run, seconds_run))
        self._notify("on_train_end")

    @property
    def _sum_dtype(self) -> torch.dtype:
        """Loss terms are summed in float64 (float32 where the device has none)."""
        return torch.float32 if self.built.device.type == "mps" else torch.float64

    def _check_finite(self, sums: dict[str, torch.Tensor], terms: StepTerms, epoch: int,
                      steps: int) -> None:
        """Stop where the epoch's summed loss is no longer finite (one read)."""
        if math.isfinite(float(sums["loss"])):
            return
        bad = ", ".join(k for k, v in terms.items() if not math.isfinite(v)) or "an earlier step"
        where = f"step {steps}" if self.read_every == 1 else f"by step {steps}"
        raise self._diverged(f"the loss is not finite at epoch {epoch + 1}, {where} ({bad})")

    def _epoch_means(self, sums: dict[str, torch.Tensor], steps: int) -> dict[str, float]:
        """Each term's mean over the epoch's steps, in every process of the job."""
        read = dict(zip(sums, torch.stack(list(sums.values())).tolist(), strict=True)) \
            if sums else {}
        parts = self.strategy.gather((read, steps))
        keys = list(dict.fromkeys(k for part, _ in parts for k in part))
        total = sum(n for _, n in parts)
        return {k: sum(part.get(k, 0.0) for part, _ in parts) / total for k in keys}

    def _rates(self, steps: int, seconds: float) -> dict[str, Any]:
        """This process's throughput in this session: steps, and the primary's instances
        (or cells) per second."""
        batcher = self.built.batcher
        items = batcher.shard_size() * steps / batcher.steps_per_epoch()
        return {"rank": self.strategy.rank, "host": socket.gethostname(),
                "device": str(self.built.device), "steps": steps,
                "steps_per_epoch": batcher.steps_per_epoch(), "seconds": round(seconds, 3),
                "per_second": round(items / seconds, 1) if seconds else None}

    def _diverged(self, what: str) -> TrainingError:
        """Training went astray (``what``): the error, saying what is kept and what to do."""
        lr = self.built.lr
        kept = (f"the checkpoint of epoch {self.epoch} is kept" if self.epoch
                else "no epoch ended well: no checkpoint was written")
        return TrainingError(f"{what}, with learning rate {lr:g}; {kept}: lower the learning "
                             f"rate (--set train.optimizer.lr={lr / 10:g})", lr=lr / 10)

    def _check_epoch(self, epoch: int, loss: float) -> None:
        """Refuse a diverged epoch before its checkpoint replaces the last good one: a mean
        loss :data:`DIVERGED` times the first epoch's (or the run's first step's), or
        weights that are no longer finite."""
        if self.history:
            first = self.history[0]["loss"]
        else:  # every process's first step (a collective: the same verdict in each)
            firsts = [f for f in self.strategy.gather(self.initial_loss) if f is not None]
            first = min(firsts) if firsts else None
        if first is not None and loss > DIVERGED * max(first, 1e-12):
            raise self._diverged(f"training diverged at epoch {epoch + 1}: its mean loss "
                                 f"{loss:.3g} is {loss / max(first, 1e-12):.2g} times the "
                                 f"first {'epoch' if self.history else 'step'}'s ({first:.3g})")
        bad = [name for name, p in self.model.named_parameters()
               if not bool(torch.isfinite(p).all())]
        if bad:
            raise self._diverged(f"weights are no longer finite after epoch {epoch + 1} "
                                 f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")

    def _validate(self) -> dict[str, float]:
        """The validation cells' score, measured by rank 0 (every process of a job gets its
        numbers: the stopping rule must decide alike in each)."""
        assert self.validation is not None
        scores = self.validation.score(self.built) if self.strategy.is_main else None
        return self.strategy.broadcast(scores) if self.strategy.world_size > 1 else scores

    def _judge(self, val_loss: float) -> bool:
        """The stopping rule on the validation loss: an epoch that does not improve the best
        so far by a relative ``tol`` counts towards ``patience``; whether it is the best."""
        best = self.best_val_loss
        finite = math.isfinite(val_loss)
        if best is None:
            return finite
        gain = (best - val_loss) / max(abs(best), 1e-12) if finite else -math.inf
        self.stalled = self.stalled + 1 if gain < self.spec.train.tol else 0
        return finite and val_loss < best

    def _end_epoch(self, epoch: int, metrics: dict[str, float], seconds: float) -> None:
        self._check_epoch(epoch, metrics["loss"])
        best = False
        if self.validation is not None:  # the rule reads the validation loss
            metrics = {**metrics, **self._validate()}
            best = self._judge(metrics["val_loss"])
        elif self.history:
            change = relative_change(self.history[-1]["loss"], metrics["loss"])
            self.stalled = self.stalled + 1 if change < self.spec.train.tol else 0
        self.converged = self.stalled >= self.spec.train.patience
        self.history.append({"epoch": epoch + 1, **metrics, "seconds": round(seconds, 4)})
        self.epoch = epoch + 1
        if best:
            self.best_epoch, self.best_val_loss = epoch + 1, metrics["val_loss"]
        state = self.state_dict()
        if self.strategy.is_main:
            self.run.write_metrics(self.history)
            self.run.save_checkpoint(state)
            if best:  # after the last checkpoint, which says it is coming (resume repairs)
                self.run.save_best(self._best_state(state))
        self._notify("on_epoch_end", epoch + 1, metrics)


@torch.no_grad()
def embed_all(built: Built, entity: str, chunk: int = 64,
              without: frozenset[str] = frozenset()) -> np.ndarray:
    """``z`` of every instance of ``entity`` (n, d), in instance order, ``chunk`` at a time
    (64: at 3×224×224 covers a chunk of 256 took twice as long — its activations, 0.8 GB,
    leave the caches — and at 64×64 the two are level).  ``without``: views left out of
    the fusion (their codes zeroed: the view-ablation of :mod:`mmfuse.evaluate`)."""
    model = built.model
    model.eval()
    parts = []
    for batch in built.batcher.chunks(entity, chunk):
        zs, _ = model.encode(batch, without=frozenset(without))
        parts.append(zs[entity].float().cpu().numpy())
    z = np.concatenate(parts, axis=0).astype(np.float32)
    if not np.isfinite(z).all():
        lr = built.lr
        raise TrainingError(f"the embeddings of {entity!r} are not finite (the weights "
                            f"overflow), with learning rate {lr:g}; the last checkpoint is "
                            f"kept: lower the learning rate (--set train.optimizer.lr="
                            f"{lr / 10:g})", lr=lr / 10)
    return z

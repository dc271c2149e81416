"""The training loop: one optimiser step per batch, convergence, checkpoints, observers."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmfuse.batching import prefetch
from mmfuse.build import Built
from mmfuse.errors import MmfuseError
from mmfuse.plugin_api import Callback
from mmfuse.run import RunDir

log = logging.getLogger(__name__)


class TrainingError(MmfuseError):
    pass


class Optimizers:
    """The dense parameters' optimiser and, for free tables with sparse gradients (``cmf``,
    ``columns: embedding``), ``SparseAdam`` (Adam/AdamW) or the same SGD: a step then
    updates only the table rows it used."""

    def __init__(self, built: Built):
        o = built.spec.train.optimizer
        model = built.model
        sparse = model.sparse_parameters()
        ids = {id(p) for p in sparse}
        dense = [p for p in model.parameters() if id(p) not in ids]
        if o.type == "sgd":
            self.parts = [torch.optim.SGD(dense + sparse, lr=o.lr, momentum=o.momentum,
                                          weight_decay=o.weight_decay)]
            return
        cls = torch.optim.AdamW if o.type == "adamw" else torch.optim.Adam
        # fused: one pass over each parameter's memory (CPU and CUDA), not ten
        self.parts = [cls(dense, lr=o.lr, weight_decay=o.weight_decay, fused=True)
                      ] if dense else []
        if sparse:
            if o.weight_decay:
                log.warning("weight_decay is not applied to free factor tables (SparseAdam "
                            "updates only the rows a step used)")
            self.parts.append(torch.optim.SparseAdam(sparse, lr=o.lr))

    def zero_grad(self) -> None:
        for opt in self.parts:
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        for opt in self.parts:
            opt.step()

    def state_dict(self) -> list[dict[str, Any]]:
        return [opt.state_dict() for opt in self.parts]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        for opt, state in zip(self.parts, states, strict=True):
            opt.load_state_dict(state)


def relative_change(previous: float, current: float) -> float:
    return abs(previous - current) / max(abs(previous), 1e-12)


class Trainer:
    """Trains a built model, writing metrics and an atomic checkpoint every epoch.

    Observers (``callbacks``) see every step and epoch; the CLI's progress bar is one.
    """

    def __init__(self, built: Built, run: RunDir, callbacks: Sequence[Callback] = ()):
        self.built = built
        self.run = run
        self.callbacks = list(callbacks)
        self.spec = built.spec
        self.model = built.model
        self.optimizer = Optimizers(built)
        self.history: list[dict[str, float]] = []
        self.epoch = 0  # epochs completed
        self.stalled = 0  # consecutive epochs with relative change under tol
        self.converged = False
        self.term_scale: dict[str, float] = {}  # running mean of each term (train.balance)
        self.step_fn = self._compiled_step() if self.spec.train.compile else self._step

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "stalled": self.stalled,
            "converged": self.converged,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "term_scale": dict(self.term_scale),
            "spec_digest": self.spec.digest_model(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("spec_digest") != self.spec.digest_model():
            raise TrainingError(
                "the checkpoint was trained with a different model, data or seed; "
                "resume with the run's own resolved_spec.yaml")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.stalled = int(state["epoch"]), int(state["stalled"])
        self.converged = bool(state["converged"])
        self.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        self.term_scale = dict(state.get("term_scale", {}))

    def resume(self) -> None:
        self.load_state_dict(self.run.load_checkpoint(self.built.device))
        log.info("resumed %s after epoch %d", self.run.root, self.epoch)

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        precision = self.spec.train.precision
        device = self.built.device
        if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _step(self, batch) -> dict[str, torch.Tensor]:
        with self._autocast():
            terms = self.model(batch)
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

    def _compiled_step(self):
        self.model = torch.compile(self.built.model)  # type: ignore[assignment]
        return self._step

    # ------------------------------------------------------------------ loop

    def fit(self) -> None:
        train = self.spec.train
        batcher = self.built.batcher
        for cb in self.callbacks:
            cb.on_train_start(self)
        while self.epoch < train.epochs and not self.converged:
            epoch = self.epoch
            started = time.perf_counter()
            self.model.train()
            sums: dict[str, float] = defaultdict(float)
            steps = 0
            for cb in self.callbacks:
                cb.on_epoch_start(self, epoch + 1, batcher.steps_per_epoch())
            # batches are made in a background thread beside an accelerator; on the CPU
            # the same cores would both make and train them (measured slower: 13.0 s vs
            # 11.1 s an epoch, benchmarks/scale.py at 20k × 10k)
            batches = batcher.epoch(epoch)
            if self.built.device.type != "cpu":
                batches = prefetch(batches)
            for batch in batches:
                terms = {k: float(v) for k, v in self.step_fn(batch).items()}
                if not math.isfinite(terms["loss"]):
                    bad = ", ".join(k for k, v in terms.items() if not math.isfinite(v))
                    raise TrainingError(f"loss is not finite at epoch {epoch + 1}, step "
                                        f"{steps + 1} ({bad}); lower the learning rate?")
                for k, v in terms.items():
                    sums[k] += v
                steps += 1
                for cb in self.callbacks:
                    cb.on_step_end(self, steps, terms)
            metrics = {k: v / steps for k, v in sums.items()}
            self._end_epoch(epoch, metrics, time.perf_counter() - started)
        for cb in self.callbacks:
            cb.on_train_end(self)

    def _end_epoch(self, epoch: int, metrics: dict[str, float], seconds: float) -> None:
        if self.history:
            change = relative_change(self.history[-1]["loss"], metrics["loss"])
            self.stalled = self.stalled + 1 if change < self.spec.train.tol else 0
        self.converged = self.stalled >= self.spec.train.patience
        self.history.append({"epoch": epoch + 1, **metrics, "seconds": round(seconds, 4)})
        self.epoch = epoch + 1
        self.run.write_metrics(self.history)
        self.run.save_checkpoint(self.state_dict())
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch + 1, metrics)



@torch.no_grad()
def embed_all(built: Built, entity: str, chunk: int = 256) -> np.ndarray:
    """``z`` of every instance of ``entity`` (n, d), in instance order."""
    model = built.model
    model.eval()
    parts = []
    for batch in built.batcher.chunks(entity, chunk):
        zs, _ = model.encode(batch)
        parts.append(zs[entity].float().cpu().numpy())
    return np.concatenate(parts, axis=0).astype(np.float32)

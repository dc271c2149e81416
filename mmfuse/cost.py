"""Cost before training: what a step and an epoch read, and an estimate of peak memory.

``mmfuse validate`` prints it; ``mmfuse train`` refuses a spec whose estimate exceeds the
machine's memory (``--ignore-memory`` to train anyway).  Cells are counted from the data
and from one real batch; memory is the process's resident memory after building (libraries,
the data held in memory, the model) plus what training adds: gradients and optimiser state
(3× the parameters for Adam), the epoch's permutations of stored cells, and the activations
of a step (taken as 8× the bytes of one batch's inputs and cells).  It is an estimate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from mmfuse.build import Built, count_parameters
from mmfuse.data import MatrixData
from mmfuse.errors import MmfuseError
from mmfuse.model import Batch
from mmfuse.plugin_api import SparseBatch

MiB = 1 << 20


@dataclass(frozen=True)
class ViewCost:
    view: str
    stored: int  # stored cells (matrix) or instances (tensor)
    per_step: int  # cells the step scores (matrix) or instances it encodes (tensor)
    per_epoch: int
    inputs_per_step: int  # encoder input values (dense) or stored cells (sparse) per step


@dataclass(frozen=True)
class Cost:
    views: list[ViewCost]
    steps_per_epoch: int
    primary: str
    step: str  # what a step takes of the primary
    lr: float
    parameters: int
    resident_bytes: int
    training_bytes: int
    machine_bytes: int | None

    @property
    def peak_bytes(self) -> int:
        return self.resident_bytes + self.training_bytes


def _bytes(t) -> int:
    if isinstance(t, SparseBatch):
        return sum(_bytes(getattr(t, k)) for k in ("crow", "col", "values", "totals"))
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


def _entries(t) -> int:
    return len(t.values) if isinstance(t, SparseBatch) else t.numel()


def resident_bytes() -> int:
    """This process's resident memory now (Linux; 0 where unknown)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def machine_bytes() -> int | None:
    """Physical memory of the machine (None where unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def estimate(built: Built, batch: Batch | None = None) -> Cost:
    """Cells per step and epoch of every view, and the peak-memory estimate."""
    batcher, spec = built.batcher, built.spec
    batch = batch or next(iter(batcher.epoch(0)))
    steps = batcher.steps_per_epoch()
    views = []
    for name, vspec in spec.views.items():
        data = built.data.views[name]
        inputs = sum(_entries(t) for (v, _), t in batch.sides.items() if v == name)
        if isinstance(data, MatrixData):
            per_step = len(batch.cells[name]) if name in batch.cells else 0
            # a sparse view's epoch visits each stored cell once, plus its negatives
            per_epoch = (round(data.nnz * (1 + batcher.negatives[name])) if name in
                         batcher.nnz else per_step * steps)
            views.append(ViewCost(name, data.nnz, per_step, per_epoch, inputs))
        else:
            n = len(batch.idx.get(vspec.rows, []))
            views.append(ViewCost(name, data.shape[0], n, n * steps, inputs))
    params = count_parameters(built.model)
    batch_bytes = (sum(_bytes(t) for t in batch.sides.values())
                   + sum(_bytes(t) for t in batch.masks.values() if t is not None)
                   + sum(_bytes(c.rows) + _bytes(c.cols) + _bytes(c.values)
                         for c in batch.cells.values()))
    perms = sum(8 * n for n in batcher.nnz.values())
    training = 3 * 4 * params + perms + 8 * batch_bytes
    return Cost(views, steps, batcher.primary, describe_step(batcher), built.lr, params,
                resident_bytes(), training, machine_bytes())


def describe_step(batcher) -> str:
    """What a step takes of the primary: its instances and their cells, or cells."""
    cells = batcher.step_cells()
    if batcher.primary_is_view:
        return f"{cells:,.0f} cells"
    taken = f"{batcher.batch_sizes[batcher.primary]:,} instances"
    return taken if cells is None else f"{taken} (about {cells:,.0f} cells)"


def check_memory(cost: Cost) -> None:
    """Refuse a run whose estimated peak exceeds the machine's memory."""
    if cost.machine_bytes and cost.peak_bytes > cost.machine_bytes:
        raise MmfuseError(
            f"estimated peak memory {cost.peak_bytes / MiB:,.0f} MiB exceeds this machine's "
            f"{cost.machine_bytes / MiB:,.0f} MiB (resident after building "
            f"{cost.resident_bytes / MiB:,.0f} MiB + training {cost.training_bytes / MiB:,.0f}"
            " MiB); reduce batch sizes, dims or `columns:`, or pass --ignore-memory")


def render(cost: Cost) -> str:
    lines = [f"cost: {cost.steps_per_epoch:,} steps per epoch over {cost.primary!r}, "
             f"{cost.step} a step, learning rate {cost.lr:g}; {cost.parameters:,} parameters",
             f"  {'view':<16} {'stored':>13} {'per step':>10} {'per epoch':>13} "
             f"{'inputs/step':>12}"]
    for v in cost.views:
        lines.append(f"  {v.view:<16} {v.stored:>13,} {v.per_step:>10,} {v.per_epoch:>13,} "
                     f"{v.inputs_per_step:>12,}")
    machine = f" of {cost.machine_bytes / MiB:,.0f} MiB" if cost.machine_bytes else ""
    lines.append(f"  peak memory (estimate): {cost.peak_bytes / MiB:,.0f} MiB{machine} "
                 f"(resident {cost.resident_bytes / MiB:,.0f} + training "
                 f"{cost.training_bytes / MiB:,.0f})")
    lines.append("  (matrix views: stored cells, cells scored; tensor views: instances; "
                 "inputs: encoder input values or stored cells)")
    return "\n".join(lines)

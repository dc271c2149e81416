"""Optimisers for tables with sparse gradients: a step moves only the rows it touched.

Free factor tables (``cmf``, ``columns: embedding``) and the sparse encoder's output table
(its input table too with ``sparse_grad: all``) get gradients as sparse rows
(``nn.Embedding(sparse=True)``, ``gather_rows``, ``SparseBatch.mm(..., sparse_grad=True)``).
Their optimiser updates those rows alone, as
torch's ``SparseAdam`` does ("lazy" Adam: a row's moments and value change only in steps
that touch it; bias corrections follow the table's step count), so a step costs the rows it
used, not the table: on a 100k-row table a step touching 5 % of it no longer pays Adam over
every row, nor a zeroed table-sized gradient.

A gradient holding every row (a step that touched most of a table gives one: see
:mod:`mmfuse.sparse_mm`) gets the ordinary step over the whole table.  The update itself
is torch's fused Adam/AdamW kernel, run on the touched rows gathered.  Measured per
training step of the sparse encoder with ``sparse_grad: all`` (one thread, CPU time, 4 runs):
a 500k × 200k, 20 M-cell sparse view 29–35 ms against 49–62 ms with dense gradients and
fused Adam over every row; at 100k × 50k, where a step touches 5 % of the column tables,
20–23 ms against 19–21 ms (gathering 5 % of a table's rows costs about what streaming all
of it does).  Lazy updates learn less per epoch where rows are touched rarely (see
``plugins/mmfuse_encoders/sparse.py``).  ``torch.optim.SparseAdam`` was slower than dense
fused Adam at these sizes, and ``torch.optim.SGD`` keeps a sparse momentum buffer that grows
every step, hence these two.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch

from mmfuse.sparse_mm import touched_rows

LR = 1e-3  # the default learning rate, for steps of up to REFERENCE_CELLS
REFERENCE_CELLS = 5_000  # the sparse step LR was measured at (50 items of 100 ratings)


def default_lr(step_cells: float | None) -> float:
    """``train.optimizer.lr`` when the spec leaves it out: ``LR``, times the square root of
    how many times ``REFERENCE_CELLS`` a step of a sparse primary holds (``step_cells``, over
    every process of a job), where it holds more
    (square-root scaling of Adam's rate with the batch).  Measured on planted ratings
    (``benchmarks/scale.py --cases sparse-small``, 5 epochs, user / item R²): 5,000-cell
    steps at 1e-3 0.898 / 0.950; 20,000-cell steps at 1e-3 0.837 / 0.897, at 2e-3 0.899 /
    0.959."""
    if step_cells is None or step_cells <= REFERENCE_CELLS:
        return LR
    return LR * math.sqrt(step_cells / REFERENCE_CELLS)


def _rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse gradient's rows (sorted, distinct) and their values, duplicates summed; by
    marking rather than ``coalesce()``'s sort (autograd drops the coalesced flag)."""
    index, values = grad._indices()[0], grad._values()
    if len(index) < 2 or bool((index[1:] > index[:-1]).all()):  # already sorted, distinct
        return index, values
    rows, position = touched_rows(index, grad.shape[0])
    return rows, values.new_zeros((len(rows), *values.shape[1:])).index_add_(0, position,
                                                                             values)


class _RowOptimizer(torch.optim.Optimizer):
    """Base: a step visits each parameter with a gradient, sparse or dense."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, p.grad, self.state[p], group)
        return loss

    def _update(self, p, grad, state, group) -> None:
        raise NotImplementedError


class RowAdam(_RowOptimizer):
    """Adam (``decoupled``: AdamW) where a sparse gradient updates only its rows."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      decoupled=decoupled))

    def _update(self, p, grad, state, group) -> None:
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        step, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        step += 1
        kernel = torch._fused_adamw_ if group["decoupled"] else torch._fused_adam_
        beta1, beta2 = group["betas"]

        def fused(p_, g_, m_, v_):
            kernel([p_], [g_], [m_], [v_], [], [step], lr=group["lr"], beta1=beta1,
                   beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                   amsgrad=False, maximize=False)

        rows, values = _rows(grad) if grad.is_sparse else (None, grad)
        if rows is None or len(rows) == len(p):  # every row: Adam's step over the table
            fused(p, values.view_as(p), m, v)
            return
        part = [t.index_select(0, rows) for t in (p, m, v)]
        fused(part[0], values.contiguous(), part[1], part[2])
        for t, s in zip((p, m, v), part, strict=True):
            t.index_copy_(0, rows, s)


class RowSGD(_RowOptimizer):
    """SGD with momentum and weight decay where a sparse gradient updates only its rows (a
    dense momentum buffer per table: torch's SGD keeps a sparse one that grows each step)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, momentum: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def _update(self, p, grad, state, group) -> None:
        rows = None
        if grad.is_sparse:
            rows, grad = _rows(grad)
            if len(rows) == len(p):  # every row: SGD's step over the table
                rows, grad = None, grad.view_as(p)
        value = p if rows is None else p.index_select(0, rows)
        if group["weight_decay"]:
            grad = grad.add(value, alpha=group["weight_decay"])
        if group["momentum"]:
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            buf = state["momentum_buffer"]
            if rows is None:
                grad = buf.mul_(group["momentum"]).add_(grad)
            else:
                grad = buf.index_select(0, rows).mul_(group["momentum"]).add_(grad)
                buf.index_copy_(0, rows, grad)
        if rows is None:
            p.add_(grad, alpha=-group["lr"])
        else:
            p.index_add_(0, rows, grad, alpha=-group["lr"])

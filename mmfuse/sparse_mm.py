"""The product of a sparse batch and a dense table, ``X @ W``, differentiable in ``W``.

Its cost is the stored cells (times the table's width), never the batch's ``b × width``.
Forward ``X @ W`` is a bag of the cells (``embedding_bag``); backward ``Xᵀ @ G`` reads
the same CSR parts, so no column order is built and nothing is sorted at step time: on
the CPU in scipy (``csc_matvecs`` on zero-copy views of the tensors; measured on a
2,200-row batch with 220k cells: 4.4 ms, where building the column order alone took
6.7 ms and ``embedding_bag``'s own backward, which sorts, 39 ms), elsewhere ``index_add_``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from mmfuse.plugin_api import SparseBatch


def _csr(x: SparseBatch, weights: torch.Tensor) -> sp.csr_array:
    m = sp.csr_array(x.shape)  # built from its parts: no format check or index copy
    m.data, m.indices, m.indptr = weights.numpy(), x.col.numpy(), x.crow.numpy()
    return m


def forward(x: SparseBatch, weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``X @ table`` where ``X`` holds ``weights`` at the batch's cells: (b, k)."""
    return F.embedding_bag(x.col, table, x.crow[:-1], mode="sum",
                           per_sample_weights=weights.to(table.dtype))


def backward(x: SparseBatch, weights: torch.Tensor, grad: torch.Tensor,
             width: int) -> torch.Tensor:
    """``Xᵀ @ grad``: (width, k), nonzero on the batch's columns only."""
    if grad.device.type == "cpu" and grad.dtype == weights.dtype == torch.float32:
        return torch.from_numpy(np.ascontiguousarray(_csr(x, weights).T @ grad.numpy()))
    out = grad.new_zeros((width, grad.shape[1]))
    cells = grad[x.cell_rows()] * weights.to(grad.dtype)[:, None]
    return out.index_add_(0, x.col, cells)


class SparseMM(torch.autograd.Function):
    """``X @ table``, with the gradient of ``table`` as ``Xᵀ @ grad``."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, x: SparseBatch, weights: torch.Tensor):
        ctx.x, ctx.width = x, table.shape[0]
        ctx.save_for_backward(weights)
        return forward(x, weights, table)

    @staticmethod
    def backward(ctx, grad):
        (weights,) = ctx.saved_tensors
        return backward(ctx.x, weights, grad.contiguous(), ctx.width), None, None


def sparse_mm(x: SparseBatch, table: torch.Tensor,
              row_scale: torch.Tensor | None = None) -> torch.Tensor:
    """``X @ table`` (b, k) for a sparse batch ``X`` (each row's cells times ``row_scale``,
    where given), differentiable in ``table``."""
    weights = x.values
    if row_scale is not None:
        weights = weights * row_scale.repeat_interleave(x.counts(), output_size=len(weights))
    return SparseMM.apply(table, x, weights.contiguous())

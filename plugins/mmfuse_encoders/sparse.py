"""Sparse autoencoder for the rows (or columns) of a sparse matrix view: cost per stored cell.

The first layer sums the weight vectors of a row's stored cells, each times its value
(the sparse product ``X @ W``: :meth:`SparseBatch.mm`), divided by the square root of the
row's stored cells (all of them, where the batch holds a rescaled sample:
``SparseBatch.totals``) so that a code does not grow with the row's length; further layers
are an MLP.  The decoder mirrors the MLP, and its last layer is evaluated only at the cells
asked for (``decode_at``): a weight vector and a bias per output column, gathered per cell.
A row with ``m`` stored cells costs ``O(m × width)``, never ``O(n_cols)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmfuse.model import mlp
from mmfuse.plugin_api import SparseBatch, accepts, gather_rows


class SparseAutoencoder(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], code_dim: int, hidden: Sequence[int],
                 decode: bool, sparse_grad: str = "output"):
        super().__init__()
        self.in_shape = tuple(in_shape)
        (n_in,) = self.in_shape
        widths = [*hidden, code_dim]
        # a sparse table's gradient is the batch's columns only, and the optimiser moves those
        # rows alone (mmfuse.optim), never the whole n_in-row table (a strategy may switch
        # it off, e.g. DDP over nccl: the flags are read at every step)
        self.first = nn.EmbeddingBag(n_in, widths[0], mode="sum", sparse=sparse_grad == "all")
        # codes start small, as free factors do (std 0.1): a large random start puts the
        # factor term far above the data's variance, which Adam at lr 1e-3 is slow to undo
        nn.init.normal_(self.first.weight, std=0.1)
        self.first_bias = nn.Parameter(torch.zeros(widths[0]))
        self.rest = nn.Sequential(nn.ReLU(), mlp(widths)) if hidden else nn.Identity()
        self.decoder = None
        if decode:
            back = [code_dim, *reversed(hidden)]
            self.decoder = nn.Sequential(mlp(back), nn.ReLU()) if hidden else nn.Identity()
            # the last layer: a weight vector and a bias (last entry) per output column
            bound = 1 / math.sqrt(back[-1])
            self.out = nn.Embedding(n_in, back[-1] + 1, sparse=sparse_grad != "none")
            nn.init.uniform_(self.out.weight, -bound, bound)

    def encode(self, x: SparseBatch) -> torch.Tensor:
        """``x``: the stored cells of b rows → codes (b, code_dim)."""
        row_scale = x.totals.clamp_min(1).to(x.values.dtype).rsqrt()
        h = x.mm(self.first.weight, row_scale, sparse_grad=self.first.sparse)
        return self.rest(h + self.first_bias)

    def _trunk(self, h: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this autoencoder was built without a decoder (decode=False)")
        return self.decoder(h)

    def decode_at(self, h: torch.Tensor, which: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Decoded values of cells ``(which[k], at[k])`` only: (m,)."""
        t = self._trunk(h)[which]
        out = gather_rows(self.out.weight, at) if self.out.sparse else self.out(at)
        return (t * out[:, :-1]).sum(-1) + out[:, -1]

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Every output (b, n_in): n-wide, for inspection; training uses ``decode_at``."""
        weight = self.out.weight
        return self._trunk(h) @ weight[:, :-1].T + weight[:, -1]


@accepts("sparse")
def build_sparse(in_shape: tuple[int, ...], code_dim: int, *, decode: bool = True,
                 hidden: Sequence[int] = (), sparse_grad: str = "output") -> SparseAutoencoder:
    """``hidden``: widths of hidden layers (default none: a linear code of the stored cells;
    each stored cell costs the first width, so keep it small on big matrices).

    ``sparse_grad``: which per-column tables take row-sparse gradients and a lazy optimiser
    step (only the rows a step touched move; :mod:`mmfuse.optim`): ``output`` (default: the
    decoder's per-column weights, which a step reads at its cells only), ``all`` (the input
    table too) or ``none``.  Measured on planted ratings (``benchmarks/scale.py``, quiet
    machine, 2 threads; steps of 50 items, 5,000 cells, at lr 1e-3; s per epoch, user / item
    R²):

    ======================  ==========================  ===========================
    ``sparse_grad``         100k × 50k, after 5 epochs  500k × 200k, after 1 epoch
    ======================  ==========================  ===========================
    ``none``                19.3 s, 0.900 / 0.959       189 s, 0.601 / 0.629
    ``output``              14.8 s, 0.898 / 0.950       127 s, 0.575 / 0.596
    ``all``                 14.5–17.6 s, 0.881 / 0.921  100 s, 0.149 / 0.114
    ======================  ==========================  ===========================

    A lazy input table learns far less per epoch where its rows are touched rarely (likely
    because dense Adam keeps moving a row for several steps after a touch; lazy Adam does
    not)."""
    if len(in_shape) != 1:
        raise ValueError(f"sparse takes matrix rows (1-D inputs); got shape {list(in_shape)}")
    if any(int(h) <= 0 for h in hidden):
        raise ValueError(f"hidden widths must be positive; got {list(hidden)}")
    if sparse_grad not in ("output", "all", "none"):
        raise ValueError(f"sparse_grad is output, all or none; got {sparse_grad!r}")
    return SparseAutoencoder(tuple(in_shape), code_dim, [int(h) for h in hidden], decode,
                             sparse_grad)

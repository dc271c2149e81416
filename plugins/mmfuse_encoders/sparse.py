"""Sparse autoencoder for the rows (or columns) of a sparse matrix view: cost per stored cell.

The first layer sums the weight vectors of a row's stored cells, each times its value
(``nn.EmbeddingBag`` with per-sample weights), divided by the square root of the row's stored
cells so that a code does not grow with the row's length; further layers are an MLP.  The
decoder mirrors the MLP, and its last layer is evaluated only at the cells asked for
(``decode_at``): a weight vector and a bias per output column, gathered per cell.  A row with
``m`` stored cells costs ``O(m × width)``, never ``O(n_cols)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmfuse.model import mlp
from mmfuse.plugin_api import accepts


class SparseAutoencoder(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], code_dim: int, hidden: Sequence[int],
                 decode: bool):
        super().__init__()
        self.in_shape = tuple(in_shape)
        (n_in,) = self.in_shape
        widths = [*hidden, code_dim]
        self.first = nn.EmbeddingBag(n_in, widths[0], mode="sum")
        nn.init.uniform_(self.first.weight, -1.0, 1.0)  # variance 1/3, as nn.Linear on n inputs
        self.first_bias = nn.Parameter(torch.zeros(widths[0]))
        self.rest = nn.Sequential(nn.ReLU(), mlp(widths)) if hidden else nn.Identity()
        self.decoder = None
        if decode:
            back = [code_dim, *reversed(hidden)]
            self.decoder = nn.Sequential(mlp(back), nn.ReLU()) if hidden else nn.Identity()
            bound = 1 / math.sqrt(back[-1])
            self.out_weight = nn.Parameter(torch.empty(n_in, back[-1]).uniform_(-bound, bound))
            self.out_bias = nn.Parameter(torch.empty(n_in).uniform_(-bound, bound))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: a ``torch.sparse_csr`` tensor (b, n_in) → codes (b, code_dim)."""
        crow, cols, values = x.crow_indices(), x.col_indices(), x.values()
        counts = crow.diff()
        scale = counts.clamp_min(1).to(values.dtype).rsqrt()
        weights = values * torch.repeat_interleave(scale, counts, output_size=len(values))
        h = self.first(cols, crow[:-1], per_sample_weights=weights) + self.first_bias
        return self.rest(h)

    def _trunk(self, h: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this autoencoder was built without a decoder (decode=False)")
        return self.decoder(h)

    def decode_at(self, h: torch.Tensor, which: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        """Decoded values of cells ``(which[k], at[k])`` only: (m,)."""
        t = self._trunk(h)[which]
        return (t * self.out_weight[at]).sum(-1) + self.out_bias[at]

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Every output (b, n_in): n-wide, for inspection; training uses ``decode_at``."""
        return self._trunk(h) @ self.out_weight.T + self.out_bias


@accepts("sparse")
def build_sparse(in_shape: tuple[int, ...], code_dim: int, *, decode: bool = True,
                 hidden: Sequence[int] = ()) -> SparseAutoencoder:
    """``hidden``: widths of hidden layers (default none: a linear code of the stored cells;
    each stored cell costs the first width, so keep it small on big matrices)."""
    if len(in_shape) != 1:
        raise ValueError(f"sparse takes matrix rows (1-D inputs); got shape {list(in_shape)}")
    if any(int(h) <= 0 for h in hidden):
        raise ValueError(f"hidden widths must be positive; got {list(hidden)}")
    return SparseAutoencoder(tuple(in_shape), code_dim, [int(h) for h in hidden], decode)

"""Dense (MLP) autoencoder for matrix rows, columns, or any flattened input."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from mmfuse.model import mlp


class DenseAutoencoder(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], code_dim: int, hidden: Sequence[int],
                 decode: bool):
        super().__init__()
        self.in_shape = tuple(in_shape)
        n_in = math.prod(in_shape)
        self.encoder = mlp([n_in, *hidden, code_dim])
        self.decoder = mlp([code_dim, *reversed(hidden), n_in]) if decode else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x.flatten(1))  # (b, k)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this autoencoder was built without a decoder (decode=False)")
        return self.decoder(h).view(-1, *self.in_shape)  # (b, *in_shape)


def build_dense(
    in_shape: tuple[int, ...], code_dim: int, *, decode: bool = True, hidden: Sequence[int] = (256,)
) -> DenseAutoencoder:
    """``in → hidden… → code_dim`` with ReLU between layers; the decoder mirrors it.

    ``hidden``: widths of the hidden layers (``[]`` for a linear map).
    """
    if any(int(h) <= 0 for h in hidden):
        raise ValueError(f"hidden widths must be positive; got {list(hidden)}")
    return DenseAutoencoder(in_shape, code_dim, [int(h) for h in hidden], decode)

"""2-D convolutional autoencoder for image-like tensors ``C×H×W`` (H, W ≥ 16).

With the defaults it is the paper's MMEDA encoder: Conv(C→16,k3)-ReLU-MaxPool2-Conv(16→4,k3)-
ReLU-MaxPool2 → Linear(→512)-ReLU-Linear(512→k) (each ReLU after its pool, which computes the
same); the decoder mirrors it with transposed convolutions and crops to ``H×W``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    def __init__(self, in_shape: tuple[int, int, int], code_dim: int, channels: Sequence[int],
                 hidden: int, kernel_size: int, decode: bool, channels_last: bool = True):
        super().__init__()
        c, h, w = in_shape
        self.in_shape = in_shape
        convs: list[nn.Module] = []
        prev = c
        for ch in channels:
            # max-pool, then ReLU: the same values and gradients as ReLU then max-pool (max
            # commutes with a non-decreasing function, and ties resolve alike), with the ReLU
            # over a quarter of the cells
            convs += [nn.Conv2d(prev, ch, kernel_size, padding=kernel_size // 2),
                      nn.MaxPool2d(2, ceil_mode=True), nn.ReLU()]
            prev = ch
        hh, ww = h, w
        for _ in channels:
            hh, ww = math.ceil(hh / 2), math.ceil(ww / 2)
        self.feature_shape = (prev, hh, ww)
        flat = prev * hh * ww
        self.encoder = nn.Sequential(*convs, nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(),
                                     nn.Linear(hidden, code_dim))
        self.decoder = None
        if decode:
            deconvs: list[nn.Module] = []
            outs = [*reversed(channels[:-1]), c]
            for i, ch in enumerate(outs):
                deconvs.append(nn.ConvTranspose2d(prev, ch, 2, stride=2))
                if i < len(outs) - 1:
                    deconvs.append(nn.ReLU())
                prev = ch
            self.decoder = nn.Sequential(
                nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, flat), nn.ReLU(),
                nn.Unflatten(1, self.feature_shape), *deconvs)
        # channels_last: the convolutions' fast layout on the CPU (oneDNN) and on GPUs (a
        # conv autoencoder step at 3×224×224 ≈ 15-20 % shorter); the same values, in
        # another memory order, so checkpoints of either layout load into the other
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x)  # (b, C, H, W) → (b, k)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise RuntimeError("this autoencoder was built without a decoder (decode=False)")
        _, height, width = self.in_shape
        return self.decoder(h)[:, :, :height, :width]  # (b, C, H, W)


def build_conv(in_shape: tuple[int, ...], code_dim: int, *, decode: bool = True,
               channels: Sequence[int] = (16, 4), hidden: int = 512,
               kernel_size: int = 3, channels_last: bool = True) -> ConvAutoencoder:
    """``channels``: conv widths, each followed by a 2×2 max-pool; ``hidden``: the dense layer;
    ``channels_last``: convolve in the NHWC memory layout (faster; false: NCHW)."""
    if len(in_shape) != 3 or in_shape[1] < 16 or in_shape[2] < 16:
        raise ValueError(f"conv takes C×H×W tensors with H, W ≥ 16; got shape {list(in_shape)}")
    if not channels or any(int(c) <= 0 for c in channels) or hidden <= 0 or kernel_size % 2 == 0:
        raise ValueError("channels and hidden must be positive and kernel_size odd")
    return ConvAutoencoder(tuple(in_shape), code_dim, [int(c) for c in channels], int(hidden),
                           int(kernel_size), decode, bool(channels_last))

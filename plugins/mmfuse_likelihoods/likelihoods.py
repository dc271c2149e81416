"""The built-in likelihoods: ``gaussian`` (MSE), ``bernoulli`` (BCE on logits), ``poisson``.

Each loss is the mean over observed cells only (``mask`` True), so missing cells never count.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mean(cells: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return cells.mean()
    mask = mask.to(cells.dtype)
    return (cells * mask).sum() / mask.sum().clamp_min(1.0)


class Gaussian:
    """Squared error; identity link."""

    def loss(self, pred, target, mask):
        return masked_mean(F.mse_loss(pred, target, reduction="none"), mask)

    def link(self, pred):
        return pred

    def inverse_link(self, mean: float) -> float:
        return mean


class Bernoulli:
    """Binary cross-entropy on logits; sigmoid link.  Targets in [0, 1]."""

    def loss(self, pred, target, mask):
        cells = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        return masked_mean(cells, mask)

    def link(self, pred):
        return torch.sigmoid(pred)

    def inverse_link(self, mean: float) -> float:
        p = min(max(mean, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))


class Poisson:
    """Poisson negative log-likelihood on the log rate; exp link.  Counts ≥ 0."""

    def loss(self, pred, target, mask):
        cells = F.poisson_nll_loss(pred, target, log_input=True, full=False, reduction="none")
        return masked_mean(cells, mask)

    def link(self, pred):
        return torch.exp(pred)

    def inverse_link(self, mean: float) -> float:
        return math.log(max(mean, 1e-6))


GAUSSIAN, BERNOULLI, POISSON = Gaussian(), Bernoulli(), Poisson()

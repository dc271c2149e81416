"""The built-in likelihoods, one module per view (``likelihood: {type, params}``):

- ``gaussian``: squared error, identity link; ``noise: learn`` learns the view's noise scale;
- ``bernoulli``: cross-entropy on logits, sigmoid link (0/1 data, networks);
- ``poisson``: counts, log link;
- ``negbinomial``: over-dispersed counts (variance μ + μ²/r), log link, the dispersion ``r``
  learnt (or fixed by a number).

Each loss is the mean over observed cells only (``mask`` True), so missing cells never count,
and each says which held-out metrics judge it (``metrics``: :mod:`mmfuse.holdout`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(cells: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return cells.mean()
    mask = mask.to(cells.dtype)
    return (cells * mask).sum() / mask.sum().clamp_min(1.0)


def _entropy_against(y: np.ndarray, p) -> np.ndarray:
    """−y log p − (1 − y) log(1 − p), with 0 log 0 = 0."""
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def poisson_null_deviance(values: np.ndarray) -> float:
    """Half the Poisson deviance per cell of predicting the mean: mean(y log(y/μ) − (y − μ))."""
    y = np.maximum(np.asarray(values, dtype=np.float64), 0.0)
    mu = max(float(y.mean()), 1e-12) if y.size else 1.0
    ratio = np.where(y > 0, y / mu, 1.0)
    return float(np.mean(y * np.log(ratio) - (y - mu)))


class Gaussian(nn.Module):
    """Squared error; identity link.

    ``noise``: ``fixed`` (default): the loss is the mean squared error; ``learn``: a noise
    scale σ is learnt with the model and the loss is the mean of (y − μ)²/σ² + 2 log σ —
    twice the negative log-likelihood up to a constant, the mean squared error at σ = 1 —
    so a view weighs by how well it can be fit (noisy views less), whatever its units."""

    metrics = ("rmse", "mae", "r2")

    def __init__(self, noise: str = "fixed"):
        super().__init__()
        if noise not in ("fixed", "learn"):
            raise ValueError(f"params.noise {noise!r}: fixed or learn")
        self.log_scale = nn.Parameter(torch.zeros(())) if noise == "learn" else None

    def loss(self, pred, target, mask):
        cells = F.mse_loss(pred, target, reduction="none")
        if self.log_scale is not None:
            cells = cells * torch.exp(-2 * self.log_scale) + 2 * self.log_scale
        return masked_mean(cells, mask)

    def link(self, pred):
        return pred

    def inverse_link(self, mean: float) -> float:
        return mean

    def null_deviance(self, values: np.ndarray) -> float:
        """The variance (with a learnt noise scale the loss is scale-free already: 1)."""
        return 1.0 if self.log_scale is not None else float(np.var(values, dtype=np.float64))

    def learnt(self) -> dict[str, float]:
        """The learnt parameters, in data units."""
        if self.log_scale is None:
            return {}
        return {"noise_scale": float(self.log_scale.detach().exp())}


class Bernoulli(nn.Module):
    """Binary cross-entropy on logits; sigmoid link.  Targets in [0, 1]."""

    metrics = ("roc_auc", "auprc")

    def loss(self, pred, target, mask):
        cells = F.binary_cross_entropy_with_logits(pred, target, reduction="none")
        return masked_mean(cells, mask)

    def link(self, pred):
        return torch.sigmoid(pred)

    def null_deviance(self, values: np.ndarray) -> float:
        """Cross-entropy of the mean less the targets' own entropy."""
        y = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        p = min(max(float(y.mean()), 1e-6), 1 - 1e-6) if y.size else 0.5
        return float(np.mean(_entropy_against(y, p) - _entropy_against(y, y)))

    def inverse_link(self, mean: float) -> float:
        p = min(max(mean, 1e-6), 1 - 1e-6)
        return math.log(p / (1 - p))


class Poisson(nn.Module):
    """Poisson negative log-likelihood on the log rate; exp link.  Counts ≥ 0."""

    metrics = ("rmse", "poisson_deviance")

    def loss(self, pred, target, mask):
        cells = F.poisson_nll_loss(pred, target, log_input=True, full=False, reduction="none")
        return masked_mean(cells, mask)

    def link(self, pred):
        return torch.exp(pred)

    def inverse_link(self, mean: float) -> float:
        return math.log(max(mean, 1e-6))

    def null_deviance(self, values: np.ndarray) -> float:
        return poisson_null_deviance(values)


class NegativeBinomial(nn.Module):
    """Over-dispersed counts: mean μ = exp(pred), variance μ + μ²/r (Poisson as r → ∞).

    ``dispersion``: ``learn`` (default; r starts at 1) or a positive number, r fixed."""

    metrics = ("rmse", "mae", "poisson_deviance")

    def __init__(self, dispersion: str | float = "learn"):
        super().__init__()
        if dispersion == "learn":
            self.log_r = nn.Parameter(torch.zeros(()))
        elif isinstance(dispersion, int | float) and not isinstance(dispersion, bool) \
                and math.isfinite(dispersion) and dispersion > 0:
            self.register_buffer("log_r", torch.tensor(math.log(dispersion)))
        else:
            raise ValueError(f"params.dispersion {dispersion!r}: learn, or a positive number")

    def loss(self, pred, target, mask):
        log_r = self.log_r.to(pred.dtype)
        r = torch.exp(log_r)
        log_total = torch.logaddexp(log_r, pred)  # log(r + μ)
        log_lik = (torch.lgamma(target + r) - torch.lgamma(r) - torch.lgamma(target + 1)
                   + r * (log_r - log_total) + target * (pred - log_total))
        return masked_mean(-log_lik, mask)

    def link(self, pred):
        return torch.exp(pred)

    def inverse_link(self, mean: float) -> float:
        return math.log(max(mean, 1e-6))

    def null_deviance(self, values: np.ndarray) -> float:
        return poisson_null_deviance(values)

    def learnt(self) -> dict[str, float]:
        return {"dispersion": float(self.log_r.detach().exp())} if isinstance(
            self.log_r, nn.Parameter) else {}

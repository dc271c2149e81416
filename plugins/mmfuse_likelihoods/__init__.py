"""Built-in likelihoods (:mod:`.likelihoods`): ``gaussian`` (squared error; a learnt noise
scale with ``noise: learn``), ``bernoulli`` (cross-entropy on logits), ``poisson`` and
``negbinomial`` (over-dispersed counts, learnt dispersion)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_likelihoods(register: Register) -> None:
    # classes by import path: torch is imported when a model first needs them
    for name, cls in [("gaussian", "Gaussian"), ("bernoulli", "Bernoulli"),
                      ("poisson", "Poisson"), ("negbinomial", "NegativeBinomial")]:
        register.add(name, f"mmfuse_likelihoods.likelihoods:{cls}")

"""Built-in likelihoods: ``gaussian`` (MSE), ``bernoulli`` (BCE on logits), ``poisson``.

Each loss is the mean over observed cells only (``mask`` True), so missing cells never count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_likelihoods(register: Register) -> None:
    # import paths (:mod:`.likelihoods`): torch is imported when a model first needs it
    register.add("gaussian", "mmfuse_likelihoods.likelihoods:GAUSSIAN")
    register.add("bernoulli", "mmfuse_likelihoods.likelihoods:BERNOULLI")
    register.add("poisson", "mmfuse_likelihoods.likelihoods:POISSON")

"""Built-in encoders: ``dense`` (MLP autoencoder), ``sparse`` (stored cells of sparse rows) and
``conv`` (2-D convolutional autoencoder)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugin_api import ViewSide
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_encoders(register: Register) -> None:
    # import paths: each module (and torch) is imported when a model first needs it
    register.add("dense", "mmfuse_encoders.dense:build_dense")
    register.add("sparse", "mmfuse_encoders.sparse:build_sparse")
    register.add("conv", "mmfuse_encoders.conv:build_conv")


@hookimpl(trylast=True)
def mmfuse_default_encoder(view: ViewSide) -> str | None:
    """Rank-3 tensors (C×H×W) get ``conv``; sparse matrix rows and columns ``sparse``; dense
    ones ``dense``."""
    if view.side == "tensor" and len(view.in_shape) == 3:
        return "conv"
    return "sparse" if view.input == "sparse" else "dense"

"""Built-in encoders: ``dense`` (MLP autoencoder) and ``conv`` (2-D convolutional autoencoder)."""

from __future__ import annotations

from mmfuse import hookimpl
from mmfuse.plugin_api import ViewSide
from mmfuse.plugins import Register

from .conv import build_conv
from .dense import build_dense


@hookimpl
def mmfuse_register_encoders(register: Register) -> None:
    register.add("dense", build_dense)
    register.add("conv", build_conv)


@hookimpl(trylast=True)
def mmfuse_default_encoder(view: ViewSide) -> str | None:
    """Rank-3 tensors (C×H×W) get ``conv``; matrix rows and columns get ``dense``."""
    if view.side == "tensor" and len(view.in_shape) == 3:
        return "conv"
    return "dense"

"""Built-in encoders: ``dense`` (MLP autoencoder), ``sparse`` (stored cells of sparse rows) and
``conv`` (2-D convolutional autoencoder)."""

from __future__ import annotations

from mmfuse import hookimpl
from mmfuse.plugin_api import ViewSide
from mmfuse.plugins import Register

from .conv import build_conv
from .dense import build_dense
from .sparse import build_sparse


@hookimpl
def mmfuse_register_encoders(register: Register) -> None:
    register.add("dense", build_dense)
    register.add("sparse", build_sparse)
    register.add("conv", build_conv)


@hookimpl(trylast=True)
def mmfuse_default_encoder(view: ViewSide) -> str | None:
    """Rank-3 tensors (C×H×W) get ``conv``; sparse matrix rows and columns ``sparse``; dense
    ones ``dense``."""
    if view.side == "tensor" and len(view.in_shape) == 3:
        return "conv"
    return "sparse" if view.input == "sparse" else "dense"

"""The presets: named sets of switches on the one model (:mod:`mmfuse.model`), torch-free so
that the spec checks and the data loading can read them.

``mmfuse`` is mmfuse's own recipe (the default for new specs); the other four reproduce the
paper's models and Deep Collective Matrix Factorization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mmfuse.spec import Spec


@dataclass(frozen=True)
class Preset:
    """A named set of switches on the one model."""

    name: str
    codes: Literal["view", "entity", "free"]  # per-view encoders | one AE per entity | tables
    row: bool
    col: bool
    factor: bool
    tensor: bool
    decode_from: Literal["code", "fused"]
    #: sides also decoded from their entity's fused representation (``view.role.fused``):
    #: every side (True), none, or ``unfactored``: the sides of views without a factor term
    #: (tensor and feature views), whose content nothing else asks the fused representation
    #: to carry (mmfuse; README "How the default was chosen")
    cross: bool | Literal["unfactored"] = False
    #: share of an instance's view codes dropped (zeroed) before fusion, per training step
    view_dropout: float = 0.0
    #: each view's terms divided by its null deviance (the loss of predicting its mean)
    scale_free: bool = False
    #: ``scale: auto`` of a dense gaussian matrix view
    scale: Literal["none", "standard"] = "none"


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("mmfuse", "view", row=True, col=True, factor=True, tensor=True, decode_from="code",
           cross="unfactored", view_dropout=0.25, scale_free=True, scale="standard"),
    Preset("mmeda2", "view", row=True, col=True, factor=True, tensor=True, decode_from="code"),
    Preset("mmeda1", "view", row=False, col=False, factor=True, tensor=True,
           decode_from="fused"),
    Preset("dcmf", "entity", row=True, col=True, factor=True, tensor=False, decode_from="code"),
    Preset("cmf", "free", row=False, col=False, factor=True, tensor=False, decode_from="code"),
)}


def term_on(spec: Spec, view: str, term: str) -> bool:
    """Whether ``view``'s loss term ``term`` is on: the view's ``terms``, else
    ``model.terms``, else the preset's (a feature view's rows are reconstructed; under
    ``cross: unfactored`` tensor and feature views are decoded from z)."""
    v = spec.views[view]
    preset = PRESETS[spec.model.preset]
    default = getattr(preset, term)
    if term == "row" and v.features:  # a feature view's own term
        default = True
    elif term == "cross" and preset.cross == "unfactored":  # nothing else decodes these
        default = v.is_tensor or v.features
    return next(x for x in (getattr(v.terms, term), getattr(spec.model.terms, term), default)
                if x is not None)

"""From a validated spec to everything a run needs: graph, data, plan, model, batcher."""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import networkx as nx
import numpy as np
import torch

from mmfuse.batching import Batcher
from mmfuse.data import Data, load_data
from mmfuse.errors import MmfuseError
from mmfuse.graph import build_graph
from mmfuse.model import FusionModel, Plan, make_plan
from mmfuse.plugins import Plugins
from mmfuse.spec import Spec

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda if available, else mps, else cpu; an unavailable device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MmfuseError(f"device {name!r} requested but CUDA is not available here")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise MmfuseError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise MmfuseError("device 'mps' requested but MPS is not available here")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class Built:
    spec: Spec
    graph: nx.MultiDiGraph
    data: Data
    plan: Plan
    model: FusionModel
    batcher: Batcher
    device: torch.device


def build(spec: Spec, plugins: Plugins, device: str | None = None) -> Built:
    """Check the spec and its data, then build the model on the device (seeded)."""
    graph = build_graph(spec, plugins)
    data = load_data(spec, plugins)
    shapes = {name: tuple(v.shape) for name, v in data.views.items()}
    plan = make_plan(spec, graph, shapes)
    dev = resolve_device(device or spec.train.device)
    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    seed_everything(spec.seed)
    model = FusionModel(spec, plan, plugins, data.sizes)
    init_factor_bias(model, data)
    model = model.to(dev)
    return Built(spec, graph, data, plan, model, Batcher(spec, data, plan, dev), dev)


def init_factor_bias(model: FusionModel, data: Data) -> None:
    """Start each factor term's intercept at the link-scale mean of its observed cells
    (e.g. the logit of a sparse network's density), where a likelihood says how."""
    with torch.no_grad():
        for view, bias in model.factor_bias.items():
            inverse = getattr(model.likelihoods[view], "inverse_link", None)
            if inverse is not None:
                mean = data.views[view].observed_mean()  # type: ignore[union-attr]
                bias.fill_(float(inverse(mean)))


def describe_model(built: Built) -> str:
    """The resolved model: each module with its parameter count."""
    model = built.model
    lines = [f"preset {built.plan.preset}, d={model.dim}, device {built.device}",
             "terms: " + ", ".join(t for t, on in built.plan.terms.items() if on)]
    for group in ("codecs", "entity_codecs", "free", "fusion"):
        for name, module in getattr(model, group).items():
            lines.append(f"  {group}.{name:<28} {count_parameters(module):>12,}  "
                         f"{type(module).__name__}")
    lines.append(f"parameters: {count_parameters(model):,}")
    return "\n".join(lines)

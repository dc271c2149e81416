"""From a validated spec to everything a run needs: graph, data, plan, model, batcher."""

from __future__ import annotations

import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import networkx as nx
import numpy as np
import torch

from mmfuse.batching import Batcher, negative_rate
from mmfuse.checks import check
from mmfuse.data import Data, MatrixData
from mmfuse.errors import MmfuseError, SpecError, SpecIssue, describe
from mmfuse.model import (
    TERMS,
    WIDE,
    Codecs,
    FusionModel,
    Key,
    Plan,
    free_table,
    fusion_net,
    make_plan,
)
from mmfuse.optim import default_lr
from mmfuse.plugin_api import ViewSide, accepted_inputs
from mmfuse.plugins import Plugins
from mmfuse.spec import EncoderSpec, Spec

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

    @property
    def lr(self) -> float:
        """The learning rate: the spec's, or the default for the job's steps (a step of
        every process: their gradients are averaged into one)."""
        cells = self.batcher.step_cells()
        return self.spec.train.optimizer.lr or default_lr(
            None if cells is None else cells * self.batcher.world)


def build(spec: Spec, plugins: Plugins, device: str | torch.device | None = None,
          shard: tuple[int, int] = (0, 1),
          checked: tuple[nx.MultiDiGraph, Data] | None = None) -> Built:
    """Check the spec and its data, then build the model on the device (seeded); its
    batcher walks ``shard`` (rank, processes) of each epoch.  ``checked``: what
    :func:`mmfuse.checks.check` returned for this spec, when the caller checked it first
    (``mmfuse validate`` does, before importing torch)."""
    graph, data = checked or check(spec, plugins)
    plan, model = make_model(spec, plugins, graph, data)
    dev = resolve_device(str(device or spec.train.device))
    if spec.train.threads:
        torch.set_num_threads(spec.train.threads)
    with _fits(spec, ("model", "dim"), "the model"):
        model = model.to(dev)
    return Built(spec, graph, data, plan, model, Batcher(spec, data, plan, dev, shard), dev)


def make_model(spec: Spec, plugins: Plugins, graph: nx.MultiDiGraph, data: Data,
               start_intercepts: bool = True) -> tuple[Plan, FusionModel]:
    """The plan and the model (seeded, on the CPU) of ``spec`` on ``data`` — data whose
    views need only know their shapes and layout (a run folder's :mod:`mmfuse.inputs`)
    unless ``start_intercepts`` (each factor term's intercept at its observed cells' mean,
    :func:`init_factor_bias`: for training)."""
    shapes = {name: tuple(v.shape) for name, v in data.views.items()}
    sparse_views = frozenset(v for v, d in data.views.items()
                             if isinstance(d, MatrixData) and d.sparse)
    plan = make_plan(spec, graph, shapes, sparse_views)
    if start_intercepts:  # training: say what the plan changed (embedding: said already)
        for note in plan.notes:
            log.warning(note)
    seed_everything(spec.seed)
    with _fits(spec, ("model", "dim"), "the model"):
        likelihoods, issues = make_likelihoods(spec, plugins)
        try:
            codecs, plan = build_codecs(spec, plan, plugins, data.sizes)
        except SpecError as exc:  # every problem of the model in one round
            raise SpecError(issues + exc.issues) from exc.__cause__
        if issues:
            raise SpecError(issues)
        model = FusionModel(
            plan, codecs, likelihoods=likelihoods,
            weights={v: s.weight for v, s in spec.views.items()},
            view_entities={v: (s.rows, s.cols) for v, s in spec.views.items() if s.cols},
            dim=spec.model.dim)
        if start_intercepts:
            init_factor_bias(model, data)
            if plan.scale_free:
                init_null_deviance(model, spec, data)
    return plan, model


def make_likelihoods(spec: Spec, plugins: Plugins) -> tuple[dict[str, Any], list[SpecIssue]]:
    """Each view's likelihood, made by its plugin's factory from ``likelihood.params``; a
    factory that refuses its params is an issue at the view's ``likelihood``."""
    out: dict[str, Any] = {}
    issues: list[SpecIssue] = []
    for vname, v in spec.views.items():
        factory = plugins.likelihoods.get(v.likelihood.type)
        try:
            out[vname] = factory(**v.likelihood.params)
        except MmfuseError:
            raise
        except Exception as exc:  # plugin code: a TypeError (unknown param), a ValueError
            issues.append(spec.issue(("views", vname, "likelihood"),
                                     f"likelihood {v.likelihood.type!r}: {describe(exc)}"))
    return out, issues


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and ("allocate" in str(exc) or "out of memory" in str(exc)))


@contextmanager
def _fits(spec: Spec, loc: tuple[str, ...], what: str):
    """An allocation that fails while building is a spec error at ``loc``, not a crash."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not _out_of_memory(exc):
            raise
        raise SpecError([spec.issue(loc, f"{what} does not fit in memory ({describe(exc)}); "
                                    "lower model.dim or the encoders' widths")]) from exc


def build_codecs(spec: Spec, plan: Plan, plugins: Plugins, sizes: dict[str, int]
                 ) -> tuple[Codecs, Plan]:
    """Every encoder the plan needs, chosen by the spec or the plugins; the plan comes back
    with the sides whose encoder takes sparse rows.  Raises :class:`SpecError`."""
    d = spec.model.dim
    k = spec.model.code_dim or d
    codecs = Codecs({}, {}, {}, {})
    sparse: set[Key] = set()
    issues: list[SpecIssue] = []
    causes: list[BaseException] = []  # kept for --debug

    def make(key: Key, enc: EncoderSpec, width: int, decode: bool, shape=None):
        view, role = key
        shape = shape or plan.in_shapes[key]
        is_sparse = view in plan.sparse_views and role in ("row", "col") and not (
            role == "col" and plan.column_mode[view] == "sketch")
        field_ = "col_encoder" if role == "col" else "encoder"
        loc = ("views", view, field_) if view in spec.views else ("model", "entity_encoder")
        side = ViewSide(view=view, side=role, in_shape=shape, spec=spec.views.get(view),
                        input="sparse" if is_sparse else "dense")
        name = enc.type
        if name == "auto":
            name = plugins.manager.hook.mmfuse_default_encoder(view=side)
            if name is None:
                issues.append(spec.issue(loc, f"no plugin picks an encoder for {role} inputs "
                                         f"of shape {list(shape)}; name one"))
                return None
        factory = plugins.encoders.get(name)
        kinds = accepted_inputs(factory)
        if is_sparse and "sparse" not in kinds:
            if shape[0] > WIDE:
                issues.append(spec.issue(loc, f"encoder {name!r} takes dense inputs, and the "
                                         f"{role}s of sparse view {view!r} are {shape[0]:,} "
                                         f"wide (over {WIDE:,}): use encoder 'sparse' (or "
                                         "auto), which reads only the stored cells"))
                return None
            is_sparse = False  # densified: small enough
        elif not is_sparse and "dense" not in kinds:
            issues.append(spec.issue(loc, f"encoder {name!r} takes sparse rows only; this "
                                     f"{role} side of {view!r} is dense"))
            return None
        try:
            module = factory(shape, width, decode=decode, **enc.params)
        except MmfuseError:
            raise
        except Exception as exc:  # plugin code: its error becomes an issue at the view
            if _out_of_memory(exc):
                msg = (f"encoder {name!r} does not fit in memory ({describe(exc)}): lower "
                       f"its widths (params) or model.dim ({spec.model.dim})")
            else:
                msg = f"encoder {name!r}: {describe(exc)}"
            issues.append(spec.issue(loc, msg))
            causes.append(exc)
            return None
        if is_sparse:
            sparse.add(key)
        return module

    if plan.preset.codes == "free":
        for ename, n in sizes.items():
            codecs.free[ename] = free_table(n, d)
        return codecs, plan
    if plan.preset.codes == "entity":
        for ename, keys in plan.codes.items():
            for view, role in keys:
                if view in plan.sparse_views and plan.in_shapes[(view, role)][0] > WIDE:
                    msg = (f"preset 'dcmf' joins every side of {ename!r} into one dense "
                           f"input; the {role}s of sparse view {view!r} are too wide "
                           f"({plan.in_shapes[(view, role)][0]:,}): use mmeda2 or cmf")
                    issues.append(spec.issue(("model", "preset"), msg))
            width = sum(plan.in_shapes[key][0] for key in keys)
            decode = any(plan.term(*key) for key in keys)
            module = make((ename, "entity"), spec.model.entity_encoder, d, decode, (width,))
            if module is not None:
                codecs.entities[ename] = module
        if issues:
            raise SpecError(issues) from (causes[0] if causes else None)
        return codecs, plan
    for ename, keys in plan.codes.items():
        for key in keys:
            view, role = key
            vspec = spec.views[view]
            if role == "tensor":
                width = d if plan.decode_from[view] == "fused" else k
                module = make(key, vspec.encoder, width, plan.decodes(key))
            elif role == "col" and plan.column_mode[view] == "embedding":
                width, module = k, free_table(sizes[ename], k)
            else:
                width = k
                enc = vspec.col_encoder if role == "col" else vspec.encoder
                module = make(key, enc, k, plan.decodes(key))
            if module is not None:
                codecs.views[f"{view}:{role}"] = module
                codecs.widths[key] = width
        if all(key in codecs.widths for key in keys):  # built after its codecs (seeded order)
            total = sum(codecs.widths[key] for key in keys)
            codecs.fusion[ename] = fusion_net(total, d, list(spec.model.fusion_hidden),
                                              len(keys))
    if issues:
        raise SpecError(issues) from (causes[0] if causes else None)
    return codecs, replace(plan, sparse=frozenset(sparse))


def init_factor_bias(model: FusionModel, data: Data) -> None:
    """Start each factor term's intercept at the link-scale mean of its observed cells
    (e.g. the logit of a sparse network's density), where a likelihood says how."""
    with torch.no_grad():
        for view, bias in model.factor_bias.items():
            inverse = getattr(model.likelihoods[view], "inverse_link", None)
            if inverse is not None:
                mean = data.views[view].observed_mean()  # type: ignore[union-attr]
                bias.fill_(float(inverse(mean)))


#: Cells of each view drawn to measure its null deviance (``model.scale_free``).
NULL_SAMPLE = 200_000


def init_null_deviance(model: FusionModel, spec: Spec, data: Data) -> None:
    """Each view's null deviance (``model.scale_free``): its likelihood's loss of predicting
    the mean of the cells its terms score (a sparse view's sampled negatives among them, as
    zeros), from a seeded sample; the view's terms are divided by it."""
    rng = np.random.default_rng(spec.seed)
    with torch.no_grad():
        for view, i in model.view_index.items():
            store = data.views[view]
            values = np.asarray(store.value_sample(NULL_SAMPLE, rng), dtype=np.float64)
            if isinstance(store, MatrixData) and store.sparse:
                values = np.concatenate([values, np.zeros(int(negative_rate(spec, view)
                                                              * len(values)))])
            measure = getattr(model.likelihoods[view], "null_deviance", None)
            null = float(measure(values)) if measure is not None and values.size else 1.0
            if measure is None:
                log.warning("view %r: likelihood %r has no null_deviance: its terms are not "
                            "rescaled (model.scale_free)", view, spec.views[view].likelihood.type)
            elif not np.isfinite(null) or null <= 1e-12:
                log.warning("view %r: its cells hardly vary (null deviance %.3g): its terms "
                            "are not rescaled (model.scale_free)", view, null)
                null = 1.0
            model.null_deviance[i] = null


def describe_model(built: Built) -> str:
    """The resolved model: each module with its parameter count."""
    model = built.model
    plan = built.plan
    on = sorted({t for view_terms in plan.terms.values() for t, v in view_terms.items() if v})
    lines = [f"preset {plan.preset.name}, d={model.dim}, device {built.device}",
             "terms: " + ", ".join(t for t in TERMS if t in on)]
    for group in ("codecs", "entity_codecs", "free", "fusion"):
        for name, module in getattr(model, group).items():
            lines.append(f"  {group}.{name:<28} {count_parameters(module):>12,}  "
                         f"{type(module).__name__}")
    lines.append(f"parameters: {count_parameters(model):,}")
    return "\n".join(lines)

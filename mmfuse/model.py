"""The generalised MMEDA-II model: per-view autoencoders, per-entity fusion, factor products.

For a matrix view ``v`` (rows ``r``, columns ``c``)::

    h_row = f_v(X[i, :])      X'  = g_v(h_row)          (row autoencoder)
    h_col = f~_v(X[:, j])     X2' = g~_v(h_col)         (column autoencoder)
    X''[i, j] = link_v(z_r(i) · z_c(j) + b_v)           (factor term, with an intercept)

for a tensor view ``t``: ``h = f_t(T[i])``, ``T' = g_t(h)`` (or ``g_t(z_r(i))``, MMEDA-I), and
for every entity ``z_e(i) = F_e([h_1(i) ‖ h_2(i) ‖ …])`` over every code of ``e``.
Presets (mmeda2, mmeda1, dcmf, cmf) are switches on this one model, not separate code paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import nn

from mmfuse.errors import SpecError
from mmfuse.graph import sides_of
from mmfuse.plugin_api import ViewSide
from mmfuse.plugins import Plugins
from mmfuse.spec import EncoderSpec, Spec

Key = tuple[str, str]  # (view, role) with role in row | col | tensor

PRESETS: dict[str, dict[str, object]] = {
    "mmeda2": {"codes": "view", "row": True, "col": True, "factor": True, "tensor": True,
               "decode_from": "code"},
    "mmeda1": {"codes": "view", "row": False, "col": False, "factor": True, "tensor": True,
               "decode_from": "fused"},
    "dcmf": {"codes": "entity", "row": True, "col": True, "factor": True, "tensor": False,
             "decode_from": "code"},
    "cmf": {"codes": "free", "row": False, "col": False, "factor": True, "tensor": False,
            "decode_from": "code"},
}


@dataclass
class Batch:
    """Inputs of one step: instance indices per entity and the view slices they select.

    ``sides[(v, "row")]`` is ``X_v[I_r, :]`` (b_r, n_c); ``sides[(v, "col")]`` is ``X_v[:, I_c]ᵀ``
    (b_c, n_r) or its sketch; ``sides[(t, "tensor")]`` is ``T[I_r]`` as float;
    ``blocks[v]`` is ``X_v[I_r, I_c]``.  Masks are None where every cell is observed.
    """

    idx: dict[str, torch.Tensor]
    sides: dict[Key, torch.Tensor] = field(default_factory=dict)
    masks: dict[Key, torch.Tensor | None] = field(default_factory=dict)
    blocks: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What the graph, the preset and the data decide: which codes feed each entity."""

    preset: str
    terms: dict[str, bool]
    decode_from: dict[str, str]  # tensor view → code | fused
    codes: dict[str, list[Key]]  # entity → the (view, role) sides that give it a code
    factors: list[str]  # matrix views with a factor term
    in_shapes: dict[Key, tuple[int, ...]]
    column_mode: dict[str, str]  # matrix view → autoencoder | sketch | embedding | none

    def inputs(self) -> set[Key]:
        """The sides whose data a batch must carry."""
        if self.preset == "cmf":
            return set()
        keys = {key for ks in self.codes.values() for key in ks}
        return {k for k in keys if k[1] != "col" or self.column_mode[k[0]] != "embedding"}


def make_plan(spec: Spec, graph: nx.MultiDiGraph, shapes: dict[str, tuple[int, ...]]) -> Plan:
    preset = PRESETS[spec.model.preset]
    overrides = spec.model.terms.model_dump()
    terms = {t: (preset[t] if overrides[t] is None else overrides[t]) for t in overrides}
    issues = []
    codes: dict[str, list[Key]] = {}
    in_shapes: dict[Key, tuple[int, ...]] = {}
    column_mode: dict[str, str] = {}
    decode_from: dict[str, str] = {}
    for vname, v in spec.views.items():
        shape = shapes[vname]
        if v.is_tensor:
            in_shapes[(vname, "tensor")] = tuple(shape[1:])
            decode_from[vname] = v.decode_from or str(preset["decode_from"])
            if preset["codes"] != "view":
                msg = (f"preset {spec.model.preset!r} takes matrix views only; featurize this "
                       "tensor into a matrix (e.g. a CNN-features reader) or use mmeda1/mmeda2")
                issues.append(spec.issue(("views", vname, "tensor"), msg))
        else:
            column_mode[vname] = v.columns
            if v.columns == "embedding" and preset["codes"] == "entity":
                msg = "preset 'dcmf' encodes real columns: use autoencoder, sketch or none"
                issues.append(spec.issue(("views", vname, "columns"), msg))
            in_shapes[(vname, "row")] = (shape[1],)
            width = v.sketch_dim if v.columns == "sketch" else shape[0]
            in_shapes[(vname, "col")] = (width,)
    for ename in spec.entities:
        keys: list[Key] = []
        for vname, role in sides_of(graph, ename):
            if spec.views[vname].is_tensor:
                keys.append((vname, "tensor"))
            elif role == "row" or column_mode[vname] != "none":
                keys.append((vname, role))
        codes[ename] = keys
        if not keys and preset["codes"] != "free":
            msg = "gets no code from any view (its only views have `columns: none`)"
            issues.append(spec.issue(("entities", ename), msg))
    if issues:
        raise SpecError(issues)
    factors = [v for v in column_mode if terms["factor"]]
    return Plan(spec.model.preset, terms, decode_from, codes, factors, in_shapes, column_mode)


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class FusionModel(nn.Module):
    def __init__(self, spec: Spec, plan: Plan, plugins: Plugins, sizes: dict[str, int]):
        super().__init__()
        self.plan = plan
        self.dim = d = spec.model.dim
        k = spec.model.code_dim or d
        self.likelihoods = {v: plugins.likelihoods.get(s.likelihood) for v, s in spec.views.items()}
        self.weights = {v: s.weight for v, s in spec.views.items()}
        self.view_entities = {v: (s.rows, s.cols) for v, s in spec.views.items() if s.cols}
        self.codecs = nn.ModuleDict()  # "view:role" → autoencoder or embedding table
        self.entity_codecs = nn.ModuleDict()  # dcmf: entity → autoencoder over its matrix sides
        self.free = nn.ModuleDict()  # cmf: entity → embedding table
        self.fusion = nn.ModuleDict()
        # an intercept per factor term: a sparse 0/1 view needs a negative logit that dot
        # products of representations alone reach poorly (e.g. a protein network)
        self.factor_bias = nn.ParameterDict(
            {v: nn.Parameter(torch.zeros(())) for v in plan.factors})
        self.code_widths: dict[Key, int] = {}

        def build(key: Key, enc: EncoderSpec, width: int, decode: bool, shape=None) -> nn.Module:
            shape = shape or plan.in_shapes[key]
            side = ViewSide(view=key[0], side=key[1], in_shape=shape, spec=spec.views.get(key[0]))
            name = enc.type
            if name == "auto":
                name = plugins.manager.hook.mmfuse_default_encoder(view=side)
                if name is None:
                    raise SpecError([spec.issue(("views", key[0], "encoder"),
                                                f"no plugin picks an encoder for {key[1]} "
                                                f"inputs of shape {list(shape)}; name one")])
            try:
                return plugins.encoders.get(name)(shape, width, decode=decode, **enc.params)
            except (TypeError, ValueError) as exc:
                field_ = "col_encoder" if key[1] == "col" else "encoder"
                loc = ("views", key[0], field_) if key[0] in spec.views else ("model", field_)
                raise SpecError([spec.issue(loc, f"encoder {name!r}: {exc}")]) from None

        if plan.preset == "cmf":
            for ename, n in sizes.items():
                self.free[ename] = _embedding(n, d)
            return
        if plan.preset == "dcmf":
            for ename, keys in plan.codes.items():
                width = sum(plan.in_shapes[key][0] for key in keys)
                self.entity_codecs[ename] = build(
                    (ename, "entity"), spec.model.entity_encoder, d, plan.terms["row"]
                    or plan.terms["col"], shape=(width,))
            return
        for ename, keys in plan.codes.items():
            for key in keys:
                view, role = key
                vspec = spec.views[view]
                if role == "tensor":
                    fused = plan.decode_from[view] == "fused"
                    width = d if fused else k
                    self.codecs[f"{view}:{role}"] = build(key, vspec.encoder, width,
                                                          plan.terms["tensor"])
                elif role == "col" and plan.column_mode[view] == "embedding":
                    width = k
                    self.codecs[f"{view}:{role}"] = _embedding(sizes[ename], k)
                else:
                    width = k
                    enc = vspec.col_encoder if role == "col" else vspec.encoder
                    self.codecs[f"{view}:{role}"] = build(key, enc, k, plan.terms[role])
                self.code_widths[key] = width
            total = sum(self.code_widths[key] for key in keys)
            if len(keys) == 1 and total == d and not spec.model.fusion_hidden:
                self.fusion[ename] = nn.Identity()
            else:
                self.fusion[ename] = mlp([total, *spec.model.fusion_hidden, d])

    # ------------------------------------------------------------------ encoding

    def codes(self, batch: Batch, ename: str) -> dict[Key, torch.Tensor]:
        out = {}
        for key in self.plan.codes[ename]:
            codec = self.codecs[f"{key[0]}:{key[1]}"]
            if isinstance(codec, nn.Embedding):
                out[key] = codec(batch.idx[ename])
            else:
                out[key] = codec.encode(batch.sides[key])  # (b, k)
        return out

    def encode(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[Key, torch.Tensor]]:
        """Representations ``z_e`` (b_e, d) of every entity in the batch, and the view codes."""
        zs: dict[str, torch.Tensor] = {}
        codes: dict[Key, torch.Tensor] = {}
        for ename in batch.idx:
            if ename in self.free:
                zs[ename] = self.free[ename](batch.idx[ename])
            elif ename in self.entity_codecs:
                x = torch.cat([batch.sides[key] for key in self.plan.codes[ename]], dim=1)
                zs[ename] = self.entity_codecs[ename].encode(x)
            else:
                c = self.codes(batch, ename)
                codes.update(c)
                zs[ename] = self.fusion[ename](torch.cat(list(c.values()), dim=1))
        return zs, codes

    # ------------------------------------------------------------------ loss

    def _nll(self, view: str, pred, target, mask) -> torch.Tensor:
        return self.weights[view] * self.likelihoods[view].loss(pred, target, mask)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every switched-on loss term of the batch, by name (``view.row``, ``view.factor``…)."""
        plan, terms = self.plan, {}
        zs, codes = self.encode(batch)
        for key, h in codes.items():
            view, role = key
            codec = self.codecs[f"{view}:{role}"]
            if not plan.terms[role] or isinstance(codec, nn.Embedding):
                continue
            if role == "tensor" and plan.decode_from[view] == "fused":
                ename = next(e for e, ks in plan.codes.items() if key in ks)
                h = zs[ename]
            name = f"{view}.{role}"
            if role == "col" and plan.column_mode[view] == "sketch":
                terms[name] = self.weights[view] * nn.functional.mse_loss(
                    codec.decode(h), batch.sides[key])
            else:
                terms[name] = self._nll(view, codec.decode(h), batch.sides[key],
                                        batch.masks.get(key))
        for ename, codec in self.entity_codecs.items():
            if ename not in zs or not (plan.terms["row"] or plan.terms["col"]):
                continue
            recon, start = codec.decode(zs[ename]), 0
            for key in plan.codes[ename]:
                width = plan.in_shapes[key][0]
                if plan.terms[key[1]]:
                    part = recon[:, start : start + width]
                    terms[f"{key[0]}.{key[1]}"] = self._nll(
                        key[0], part, batch.sides[key], batch.masks.get(key))
                start += width
        for view, (target, mask) in batch.blocks.items():
            r, c = self.view_entities[view]
            pred = zs[r] @ zs[c].T + self.factor_bias[view]  # (b_r, b_c)
            terms[f"{view}.factor"] = self._nll(view, pred, target, mask)
        return terms


def _embedding(n: int, width: int) -> nn.Embedding:
    table = nn.Embedding(n, width)
    nn.init.normal_(table.weight, std=0.1)
    return table

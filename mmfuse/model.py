"""The generalised MMEDA-II model: per-view autoencoders, per-entity fusion, factor products.

For a matrix view ``v`` (rows ``r``, columns ``c``)::

    h_row = f_v(X[i, :])      X'  = g_v(h_row)          (row autoencoder)
    h_col = f~_v(X[:, j])     X2' = g~_v(h_col)         (column autoencoder)
    X''[i, j] = link_v(z_r(i) · z_c(j) + b_v)           (factor term, with an intercept)

for a tensor view ``t``: ``h = f_t(T[i])``, ``T' = g_t(h)`` (or ``g_t(z_r(i))``, MMEDA-I), and
for every entity ``z_e(i) = F_e([h_1(i) ‖ h_2(i) ‖ …])`` over every code of ``e``.

A matrix view is a set of observed cells: a batch carries, per matrix view, COO cells
(:class:`Cells`), and the factor term is the gathered dot products over them.  A side whose
encoder takes sparse rows gets a :class:`~mmfuse.plugin_api.SparseBatch` and is scored at the cells
of its view; a dense side is decoded whole and scored on its observed cells (mask).
Presets (mmeda2, mmeda1, dcmf, cmf) are switches on this one model, resolved once into the
:class:`Plan`.  The model is handed ready codecs by :mod:`mmfuse.build`: it never sees the
spec or the plugins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import networkx as nx
import torch
from torch import nn

from mmfuse.errors import SpecError
from mmfuse.graph import sides_of
from mmfuse.presets import PRESETS, Preset, term_on
from mmfuse.spec import Spec

Key = tuple[str, str]  # (view, role) with role in row | col | tensor

#: Widest n-wide input built without being asked: a column encoder over more rows than this
#: is switched to ``columns: sketch`` (dense views) or refused (a dense encoder on sparse data).
WIDE = 20_000


#: The contrastive term (``model.align``): the instances of a step it compares at most, and
#: the temperature of its cosine similarities.
ALIGN_MAX = 1024
ALIGN_TEMPERATURE = 0.1

#: Every loss term a view can have (matrix: row, col, factor; tensor: tensor).
TERMS = ("row", "col", "factor", "tensor", "cross")


@dataclass
class Cells:
    """Observed cells of one matrix view in a batch (COO).  ``rows`` / ``cols`` are positions
    in the batch's instances of the row / column entity (``Batch.idx``), not global ids."""

    rows: torch.Tensor  # (m,) long
    cols: torch.Tensor  # (m,) long
    values: torch.Tensor  # (m,) float

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Batch:
    """Inputs of one step.

    ``idx[e]``: the instances of entity ``e`` the step encodes (global indices).
    ``sides[(v, "row")]``: the encoder input of those rows of ``v``: ``X_v[I_r, :]`` dense
    (b_r, n_c), or a :class:`~mmfuse.plugin_api.SparseBatch` of their stored cells;
    ``sides[(v, "col")]``
    likewise for ``X_v[:, I_c]ᵀ`` (or its sketch); ``sides[(t, "tensor")]`` is ``T[I_r]``.
    ``masks``: observed cells of a dense side (None: all).  ``cells[v]``: the observed cells
    (and sampled negatives) of matrix view ``v`` that the step scores.  ``present[key]``:
    (b,) bool, which instances have side ``key`` at all (a tensor view's ``instances``, a
    matrix row or column with an observed cell); a side missing from it: every instance.
    An instance without a side is fused from its other views and not scored on that side.
    """

    idx: dict[str, torch.Tensor]
    sides: dict[Key, torch.Tensor] = field(default_factory=dict)
    masks: dict[Key, torch.Tensor | None] = field(default_factory=dict)
    cells: dict[str, Cells] = field(default_factory=dict)
    present: dict[Key, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    """What the graph, the preset and the data decide: which codes feed each entity."""

    preset: Preset
    terms: dict[str, dict[str, bool]]  # view → term → on (the preset, model.terms, view.terms)
    decode_from: dict[str, str]  # tensor view → code | fused
    codes: dict[str, list[Key]]  # entity → the (view, role) sides that give it a code
    factors: list[str]  # matrix views with a factor term
    in_shapes: dict[Key, tuple[int, ...]]
    column_mode: dict[str, str]  # matrix view → autoencoder | sketch | embedding | none
    sparse_views: frozenset[str] = frozenset()  # matrix views stored as sparse cells
    sparse: frozenset[Key] = frozenset()  # sides whose encoder takes sparse rows
    notes: tuple[str, ...] = ()  # what the plan changed from the spec, and why
    view_dropout: float = 0.0  # share of an instance's views dropped before fusion (training)
    scale_free: bool = False  # each view's terms divided by its null deviance
    align: float = 0.0  # weight of the contrastive term between an entity's view codes

    def inputs(self) -> set[Key]:
        """The sides whose data a batch must carry."""
        if self.preset.codes == "free":
            return set()
        keys = {key for ks in self.codes.values() for key in ks}
        return {k for k in keys if k[1] != "col" or self.column_mode[k[0]] != "embedding"}

    def term(self, view: str, role: str) -> bool:
        return self.terms[view].get(role, False)

    def cross(self, key: Key) -> bool:
        """Side ``key`` is also decoded from its entity's fused z — where z fuses two codes
        or more (else z is that code, near enough), and not for a tensor decoded from z
        anyway (``decode_from: fused``)."""
        return (self.term(key[0], "cross") and self.decode_from.get(key[0], "code") == "code"
                and any(key in keys and len(keys) > 1 for keys in self.codes.values()))

    def decodes(self, key: Key) -> bool:
        """Side ``key`` needs a decoder: its own term or its cross term is on."""
        return self.term(*key) or self.cross(key)


def make_plan(spec: Spec, graph: nx.MultiDiGraph, shapes: dict[str, tuple[int, ...]],
              sparse_views: frozenset[str] = frozenset()) -> Plan:
    preset = PRESETS[spec.model.preset]
    issues, notes = [], []
    codes: dict[str, list[Key]] = {}
    in_shapes: dict[Key, tuple[int, ...]] = {}
    column_mode: dict[str, str] = {}
    decode_from: dict[str, str] = {}
    terms: dict[str, dict[str, bool]] = {}
    for vname, v in spec.views.items():
        shape = shapes[vname]
        own = (("tensor",) if v.is_tensor else ("row",) if v.features
               else ("row", "col", "factor")) + ("cross",)
        terms[vname] = {t: term_on(spec, vname, t) for t in own}
        if v.is_tensor:
            in_shapes[(vname, "tensor")] = tuple(shape[1:])
            decode_from[vname] = v.decode_from or preset.decode_from
            if preset.codes != "view":
                msg = (f"preset {preset.name!r} takes matrix views only; featurize this "
                       "tensor into a matrix (e.g. a CNN-features reader) or use mmeda1/mmeda2")
                issues.append(spec.issue(("views", vname, "tensor"), msg))
            continue
        if v.features:  # attributes of the rows: a row code, no column side
            if preset.codes == "free":
                msg = ("preset 'cmf' factorises entity × entity matrices only; declare the "
                       "feature columns as an entity (`cols:`) or use another preset")
                issues.append(spec.issue(("views", vname, "features"), msg))
            elif vname in sparse_views:
                msg = ("a sparse feature view is not supported yet: store it dense (.npy), or "
                       "declare its columns as an entity (`cols:`)")
                issues.append(spec.issue(("views", vname, "features"), msg))
            column_mode[vname] = "none"
            in_shapes[(vname, "row")] = (shape[1],)
            continue
        mode = v.columns
        if mode == "embedding" and preset.codes == "entity":
            msg = "preset 'dcmf' encodes real columns: use autoencoder, sketch or none"
            issues.append(spec.issue(("views", vname, "columns"), msg))
        if (mode == "autoencoder" and vname not in sparse_views and shape[0] > WIDE
                and preset.codes == "view"):
            mode = "sketch"
            notes.append(f"view {vname!r}: a column autoencoder over {shape[0]:,} dense rows "
                         f"(more than {WIDE:,}) would cost O(rows) per column; using "
                         f"`columns: sketch` (sketch_dim {v.sketch_dim}) instead; set "
                         "`columns:` to choose")
        column_mode[vname] = mode
        in_shapes[(vname, "row")] = (shape[1],)
        in_shapes[(vname, "col")] = (v.sketch_dim if mode == "sketch" else shape[0],)
    for ename in spec.entities:
        keys: list[Key] = []
        for vname, role in sides_of(graph, ename):
            if spec.views[vname].is_tensor:
                keys.append((vname, "tensor"))
            elif role == "row" or column_mode[vname] != "none":
                keys.append((vname, role))
        codes[ename] = keys
        if not keys and preset.codes != "free":
            msg = "gets no code from any view (its only views have `columns: none`)"
            issues.append(spec.issue(("entities", ename), msg))
    k = spec.model.code_dim or spec.model.dim
    crossing = [v for v in terms if terms[v]["cross"] and decode_from.get(v, "code") == "code"]
    if crossing and k != spec.model.dim and preset.codes == "view":
        asked = spec.model.terms.cross is not None or any(
            spec.views[v].terms.cross is not None for v in crossing)
        if asked:
            msg = (f"cross terms (on for {', '.join(crossing)}) decode the fused "
                   f"representation (dim {spec.model.dim}) through each view's decoder, which "
                   f"takes its {k}-wide code: set code_dim equal to dim, or "
                   "`terms: {cross: false}`")
            issues.append(spec.issue(("model", "code_dim"), msg))
        else:  # the preset's choice, not the user's: give way, and say so
            notes.append(f"cross terms of {', '.join(crossing)} (preset {preset.name}) are "
                         f"off: they decode the fused representation (dim {spec.model.dim}) "
                         f"through each view's decoder, which takes its {k}-wide code "
                         "(code_dim)")
            for v in crossing:
                terms[v]["cross"] = False
    if issues:
        raise SpecError(issues)
    factors = [v for v in column_mode if terms[v].get("factor", False)]
    dropout = spec.model.view_dropout
    scale_free = spec.model.scale_free
    return Plan(preset, terms, decode_from, codes, factors, in_shapes, column_mode,
                frozenset(sparse_views), frozenset(), tuple(notes),
                view_dropout=preset.view_dropout if dropout is None else dropout,
                scale_free=preset.scale_free if scale_free is None else scale_free,
                align=spec.model.align)


def mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def free_table(n: int, width: int) -> nn.Embedding:
    """Free factors: a table with sparse gradients (a step updates only the rows it used)."""
    table = nn.Embedding(n, width, sparse=True)
    nn.init.normal_(table.weight, std=0.1)
    return table


@dataclass
class Codecs:
    """What the builder hands the model: ready modules and the width of every code."""

    views: dict[str, nn.Module]  # "view:role" → autoencoder, or a free table (embedding)
    entities: dict[str, nn.Module]  # dcmf: entity → autoencoder over its matrix sides
    free: dict[str, nn.Module]  # cmf: entity → free table
    widths: dict[Key, int]
    fusion: dict[str, nn.Module] = field(default_factory=dict)  # entity → F_e over its codes


def fusion_net(total: int, dim: int, hidden: list[int], n_codes: int) -> nn.Module:
    """``F_e``: an MLP from the concatenated codes (width ``total``) to ``dim``; the
    identity for a single code of width ``dim`` and no hidden layers."""
    if n_codes == 1 and total == dim and not hidden:
        return nn.Identity()
    return mlp([total, *hidden, dim])


class FusionModel(nn.Module):
    def __init__(self, plan: Plan, codecs: Codecs, likelihoods: dict[str, object],
                 weights: dict[str, float], view_entities: dict[str, tuple[str, str]],
                 dim: int):
        super().__init__()
        self.plan = plan
        self.dim = dim
        self.likelihoods = likelihoods
        # those that are modules (their learnt noise scale, dispersion: trained and saved)
        self.likelihood_modules = nn.ModuleDict(
            {v: lk for v, lk in likelihoods.items() if isinstance(lk, nn.Module)})
        self.weights = weights
        self.view_entities = view_entities
        self.codecs = nn.ModuleDict(codecs.views)
        self.entity_codecs = nn.ModuleDict(codecs.entities)
        self.free = nn.ModuleDict(codecs.free)
        # an intercept per factor term: a sparse 0/1 view needs a negative logit that dot
        # products of representations alone reach poorly (e.g. a protein network)
        self.factor_bias = nn.ParameterDict(
            {v: nn.Parameter(torch.zeros(())) for v in plan.factors})
        self.fusion = nn.ModuleDict(codecs.fusion)
        self.owner = {key: e for e, keys in plan.codes.items() for key in keys}
        if plan.scale_free:  # each view's null deviance (set from the data by the builder)
            self.view_index = {v: i for i, v in enumerate(weights)}
            self.register_buffer("null_deviance", torch.ones(len(self.view_index)))

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters with sparse gradients (free tables), for an optimiser of their own."""
        return [m.weight for m in self.modules()
                if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse]

    # ------------------------------------------------------------------ encoding

    def _kept(self, codes: dict[Key, torch.Tensor], without: frozenset[str],
              present: dict[Key, torch.Tensor]) -> dict[Key, torch.Tensor]:
        """The codes an entity's fusion takes: zero where an instance lacks the side
        (``present``) or the view is in ``without``, and, in training, each instance's views
        dropped at the plan's rate (``view_dropout``; of the views it has, one is kept)."""
        views = list(dict.fromkeys(view for view, _ in codes))
        rate = self.plan.view_dropout if self.training else 0.0
        lacking = any(key in present for key in codes)
        if len(views) < 2 or (rate == 0 and not without and not lacking):
            return codes
        b = next(iter(codes.values())).shape[0]
        device = next(iter(codes.values())).device
        at = {view: j for j, view in enumerate(views)}
        has = torch.ones(b, len(views), dtype=torch.bool, device=device)
        if lacking:  # a view is there where any of its sides is
            has.zero_()
            for key in codes:
                has[:, at[key[0]]] |= present.get(key, True)
        keep = has.clone()
        if rate > 0:
            keep &= torch.rand(b, len(views), device=device) >= rate
            none = ~keep.any(dim=1) & has.any(dim=1)  # all dropped: keep one it has
            pick = ((torch.rand(b, len(views), device=device) * has).argmax(dim=1) if lacking
                    else torch.randint(len(views), (b,), device=device))
            keep[none, pick[none]] = True
        for view in without:
            if view in at:
                keep[:, at[view]] = False
        return {key: h * (keep[:, at[key[0]]] & present.get(key, True))[:, None].to(h.dtype)
                for key, h in codes.items()}

    def codes(self, batch: Batch, ename: str) -> dict[Key, torch.Tensor]:
        out = {}
        for key in self.plan.codes[ename]:
            codec = self.codecs[f"{key[0]}:{key[1]}"]
            if isinstance(codec, nn.Embedding):
                out[key] = codec(batch.idx[ename])
            else:
                out[key] = codec.encode(batch.sides[key])  # (b, k)
        return out

    def encode(self, batch: Batch, without: frozenset[str] = frozenset()
               ) -> tuple[dict[str, torch.Tensor], dict[Key, torch.Tensor]]:
        """Representations ``z_e`` (b_e, d) of every entity in the batch, and the view codes
        (as encoded: a view's own reconstruction never sees its dropout).  ``without``:
        views whose codes are left out of every fusion (zeroed; an instance without them)."""
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
                kept = self._kept(c, without, batch.present)
                zs[ename] = self.fusion[ename](torch.cat(list(kept.values()), dim=1))
        return zs, codes

    # ------------------------------------------------------------------ loss

    def _nll(self, view: str, pred, target, mask=None) -> torch.Tensor:
        loss = self.weights[view] * self.likelihoods[view].loss(pred, target, mask)
        if self.plan.scale_free:
            loss = loss / self.null_deviance[self.view_index[view]]
        return loss

    def score_cells(self, view: str, z_rows: torch.Tensor, z_cols: torch.Tensor,
                    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor
                    ) -> torch.Tensor:
        """The factor term of ``view`` (as :meth:`forward` scores it: weighted, divided by
        the null deviance under ``scale_free``) at cells ``(rows[k], cols[k])`` with values
        ``values`` in training units; ``rows`` / ``cols`` index the representations
        ``z_rows`` / ``z_cols`` (``train.validation``'s score)."""
        pred = (z_rows[rows] * z_cols[cols]).sum(-1) + self.factor_bias[view]
        return self._nll(view, pred, values)

    def _reconstruction(self, batch: Batch, key: Key, codec, h) -> torch.Tensor | None:
        """The loss of side ``key`` decoded from ``h`` (its code, or its entity's z)."""
        view, role = key
        if key in self.plan.sparse:
            return self._at_cells(batch, key, codec, h)
        if role == "col" and self.plan.column_mode[view] == "sketch":
            loss = self.weights[view] * nn.functional.mse_loss(codec.decode(h), batch.sides[key])
            if self.plan.scale_free:
                loss = loss / self.null_deviance[self.view_index[view]]
            return loss
        mask = batch.masks.get(key)
        if role == "tensor" and key in batch.present:  # scored on the instances that have it
            have = batch.present[key]
            if not bool(have.any()):
                return None
            target = batch.sides[key]
            mask = have.view(-1, *([1] * (target.dim() - 1))).expand_as(target)
        return self._nll(view, codec.decode(h), batch.sides[key], mask)

    def _at_cells(self, batch: Batch, key: Key, codec, h) -> torch.Tensor | None:
        """A sparse side's reconstruction scored at its view's cells in the batch."""
        view, role = key
        cells = batch.cells.get(view)
        if cells is None or len(cells) == 0:
            return None
        r, c = self.view_entities[view]
        if role == "row":
            pred = codec.decode_at(h, cells.rows, batch.idx[c][cells.cols])
        else:
            pred = codec.decode_at(h, cells.cols, batch.idx[r][cells.rows])
        return self._nll(view, pred, cells.values)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Every switched-on loss term of the batch, by name (``view.row``, ``view.factor``…)."""
        plan, terms = self.plan, {}
        zs, codes = self.encode(batch)
        for key, h in codes.items():
            view, role = key
            codec = self.codecs[f"{view}:{role}"]
            if isinstance(codec, nn.Embedding):
                continue
            fused = role == "tensor" and plan.decode_from[view] == "fused"
            sources = [(f"{view}.{role}", zs[self.owner[key]] if fused else h, plan.term(*key)),
                       (f"{view}.{role}.fused", zs[self.owner[key]],
                        plan.cross(key))]
            for name, source, on in sources:
                term = self._reconstruction(batch, key, codec, source) if on else None
                if term is not None:
                    terms[name] = term
        for ename, codec in self.entity_codecs.items():
            keys = [k for k in plan.codes[ename] if plan.term(*k)]
            if ename not in zs or not keys:
                continue
            recon, start = codec.decode(zs[ename]), 0
            for key in plan.codes[ename]:
                width = plan.in_shapes[key][0]
                if key in keys:
                    part = recon[:, start : start + width]
                    terms[f"{key[0]}.{key[1]}"] = self._nll(
                        key[0], part, batch.sides[key], batch.masks.get(key))
                start += width
        for view in plan.factors:
            cells = batch.cells.get(view)
            if cells is None or len(cells) == 0:
                continue
            r, c = self.view_entities[view]
            pred = (zs[r][cells.rows] * zs[c][cells.cols]).sum(-1) + self.factor_bias[view]
            terms[f"{view}.factor"] = self._nll(view, pred, cells.values)
        if plan.align > 0:
            for ename in batch.idx:
                term = self._alignment(ename, codes, batch.present)
                if term is not None:
                    terms[f"{ename}.align"] = plan.align * term
        return terms

    def _alignment(self, ename: str, codes: dict[Key, torch.Tensor],
                   present: dict[Key, torch.Tensor]) -> torch.Tensor | None:
        """InfoNCE between every two of ``ename``'s codes from different views, over the
        step's instances that have both (at most ``ALIGN_MAX``): each instance's code from
        one view picks its own code from the other among the step's, both ways; cosine
        similarity over ``ALIGN_TEMPERATURE``.  Under ``scale_free`` divided by log(b), the
        loss of codes that tell the instances apart no better than chance (one code for
        every instance: equal logits)."""
        keys = [key for key in self.plan.codes.get(ename, []) if key in codes]
        losses = []
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                if a[0] == b[0]:
                    continue  # two sides of one view
                everyone = torch.ones(codes[a].shape[0], dtype=torch.bool,
                                      device=codes[a].device)
                both = everyone & present.get(a, True) & present.get(b, True)
                at = both.nonzero().squeeze(1)[:ALIGN_MAX]
                n = at.numel()
                if n < 2:
                    continue
                ha = nn.functional.normalize(codes[a][at].float(), dim=1)
                hb = nn.functional.normalize(codes[b][at].float(), dim=1)
                logits = ha @ hb.T / ALIGN_TEMPERATURE
                target = torch.arange(n, device=logits.device)
                loss = (nn.functional.cross_entropy(logits, target)
                        + nn.functional.cross_entropy(logits.T, target)) / 2
                losses.append(loss / math.log(n) if self.plan.scale_free else loss)
        return torch.stack(losses).mean() if losses else None

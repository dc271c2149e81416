"""The graph of entities and views that decides the model.

Nodes are ``("entity", name)`` and ``("view", name)``; an edge joins a view to each entity it
touches, keyed ``row`` or ``col`` (a square view such as genes × genes has both edges to one
entity).  Which codes feed which fusion net, which factor products exist and which entities
are disconnected are all read off this graph.
"""

from __future__ import annotations

import networkx as nx

from mmfuse.errors import SpecError, SpecIssue
from mmfuse.evaluate import check_evaluate
from mmfuse.plugins import Plugins
from mmfuse.spec import Spec


def entity(name: str) -> tuple[str, str]:
    return ("entity", name)


def view(name: str) -> tuple[str, str]:
    return ("view", name)


def _known(kind: str, names) -> str:
    return f"known {kind}: {', '.join(sorted(names)) or '(none)'}"


def _reference_issues(spec: Spec, plugins: Plugins | None) -> list[SpecIssue]:
    """Every name in the spec that points at nothing: entities, plugins."""
    issues: list[SpecIssue] = []
    ents = spec.entities

    def check_entity(loc, name):
        if name is not None and name not in ents:
            issues.append(spec.issue(loc, f"unknown entity {name!r}; {_known('entities', ents)}"))

    for vname, v in spec.views.items():
        check_entity(("views", vname, "rows"), v.rows)
        check_entity(("views", vname, "cols"), v.cols)
        if not v.is_tensor and v.decode_from is not None:
            issues.append(spec.issue(("views", vname, "decode_from"), "only tensor views decode"))
    primary = spec.train.primary
    if primary is not None and primary not in ents and primary not in spec.views:
        issues.append(spec.issue(("train", "primary"), f"unknown entity or view {primary!r}; "
                                 f"{_known('entities', ents)}; {_known('views', spec.views)}"))
    elif primary in spec.views and spec.views[primary].is_tensor:
        issues.append(spec.issue(("train", "primary"), f"{primary!r} is a tensor view: name "
                                 f"its entity {spec.views[primary].rows!r} instead"))
    issues += check_evaluate(spec)
    for ename in spec.train.entity_batch:
        check_entity(("train", "entity_batch", ename), ename)
    if spec.evaluate:
        for tname, t in spec.evaluate.targets.items():
            check_entity(("evaluate", "targets", tname, "entity"), t.entity)

    if plugins is None:
        return issues

    def check_plugin(loc, kind, name):
        registry = plugins.registry(kind)
        if name not in registry and not (kind == "encoders" and name == "auto"):
            issues.append(spec.issue(loc, registry.unknown_message(name)))

    for vname, v in spec.views.items():
        check_plugin(("views", vname, "source", "reader"), "readers", v.source.reader)
        check_plugin(("views", vname, "encoder", "type"), "encoders", v.encoder.type)
        check_plugin(("views", vname, "col_encoder", "type"), "encoders", v.col_encoder.type)
        check_plugin(("views", vname, "likelihood"), "likelihoods", v.likelihood.type)
    check_plugin(("model", "entity_encoder", "type"), "encoders", spec.model.entity_encoder.type)
    if spec.dataset:
        check_plugin(("dataset", "name"), "datasets", spec.dataset.name)
    for i, cb in enumerate(spec.train.callbacks):
        check_plugin(("train", "callbacks", i), "callbacks", cb)
    return issues


def build_graph(spec: Spec, plugins: Plugins | None = None) -> nx.MultiDiGraph:
    """The entity–view graph; raises :class:`SpecError` listing every broken reference."""
    issues = _reference_issues(spec, plugins)
    if issues:
        raise SpecError(issues)
    g = nx.MultiDiGraph(name=spec.name)
    for ename in spec.entities:
        g.add_node(entity(ename), kind="entity", name=ename)
    for vname, v in spec.views.items():
        g.add_node(view(vname), kind="view", name=vname, tensor=v.is_tensor)
        g.add_edge(view(vname), entity(v.rows), key="row")
        if v.cols is not None:
            g.add_edge(view(vname), entity(v.cols), key="col")
    lonely = [e for e in spec.entities if g.degree(entity(e)) == 0]
    if lonely:
        raise SpecError(
            [spec.issue(("entities", e), "no view touches this entity; remove it or add a view")
             for e in lonely]
        )
    return g


def sides_of(g: nx.MultiDiGraph, ename: str) -> list[tuple[str, str]]:
    """``(view, role)`` pairs touching an entity, in spec order (role: row | col)."""
    order = {n: i for i, n in enumerate(g.nodes)}
    edges = sorted(g.in_edges(entity(ename), keys=True), key=lambda e: (order[e[0]], e[2] != "row"))
    return [(u[1], role) for u, _, role in edges]


def components(g: nx.MultiDiGraph) -> list[set[str]]:
    """Entity names of each connected part of the graph (more than one: nothing links them)."""
    parts = nx.connected_components(g.to_undirected(as_view=True))
    return [{n[1] for n in part if n[0] == "entity"} for part in parts]


def render_text(g: nx.MultiDiGraph, spec: Spec) -> str:
    lines = [f"spec {spec.name!r}: {len(spec.entities)} entities, {len(spec.views)} views"]
    lines.append("entities:")
    for ename in spec.entities:
        sides = ", ".join(f"{v} ({role})" for v, role in sides_of(g, ename))
        lines.append(f"  {ename:<16} ← {sides}")
    lines.append("views:")
    for vname, v in spec.views.items():
        if v.is_tensor:
            shape = "×".join(str(s) for s in v.tensor.shape)
            lines.append(f"  {vname:<16} tensor {v.rows} × [{shape}]  ({v.source.reader})")
        elif v.features:
            lines.append(f"  {vname:<16} features of {v.rows}  ({v.source.reader})")
        else:
            lines.append(f"  {vname:<16} matrix {v.rows} × {v.cols}  ({v.source.reader})")
    parts = components(g)
    if len(parts) > 1:
        groups = " | ".join(", ".join(sorted(p)) for p in parts)
        lines.append(f"note: {len(parts)} unconnected parts, learnt independently: {groups}")
    return "\n".join(lines)


def render_dot(g: nx.MultiDiGraph) -> str:
    out = [f'digraph "{g.graph.get("name", "mmfuse")}" {{', "  rankdir=LR;"]
    for node, data in g.nodes(data=True):
        shape = "ellipse" if data["kind"] == "entity" else ("box3d" if data["tensor"] else "box")
        out.append(f'  "{node[0]}:{node[1]}" [label="{node[1]}", shape={shape}];')
    for u, v, role in g.edges(keys=True):
        out.append(f'  "{u[0]}:{u[1]}" -> "{v[0]}:{v[1]}" [label="{role}"];')
    out.append("}")
    return "\n".join(out)

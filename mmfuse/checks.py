"""Every problem of a spec and its data, in one round, without importing torch.

:func:`check` gives the graph of entities and views and the data, checked (its problems,
graph and data alike, raised together); :func:`complete` adds to a spec's schema errors the
problems of the rest of it.  ``mmfuse validate`` answers a bad spec from here in about a
second; :func:`mmfuse.build.build` builds the model on what :func:`check` returns.
"""

from __future__ import annotations

import networkx as nx

from mmfuse.data import Data, load_data
from mmfuse.errors import SpecError, SpecIssue
from mmfuse.graph import build_graph
from mmfuse.plugins import Plugins
from mmfuse.spec import Spec


def check(spec: Spec, plugins: Plugins) -> tuple[nx.MultiDiGraph, Data]:
    """The graph and the data, their problems reported in one round: the data of every view
    with no problem in the graph is read and checked as well."""
    try:
        graph = build_graph(spec, plugins)
    except SpecError as exc:
        raise SpecError(_all_issues(spec, plugins, exc.issues)) from exc.__cause__
    return graph, load_data(spec, plugins)  # the graph is sound: every view's data is read


def _all_issues(spec: Spec, plugins: Plugins, known: list[SpecIssue]) -> list[SpecIssue]:
    """``known`` and every further problem of the spec's references and data; the data only
    of the views with no problem yet (one mistake is not reported twice, nor its echoes)."""
    issues = list(known)
    try:
        build_graph(spec, plugins)
    except SpecError as exc:
        issues += [i for i in exc.issues if i not in issues]
    bad = {str(i.loc[1]) for i in issues if len(i.loc) > 1 and i.loc[0] == "views"}
    part = spec.model_copy(update={"views": {
        name: v for name, v in spec.views.items() if name not in bad}})
    try:
        load_data(part, plugins)
    except SpecError as exc:
        issues += [i for i in exc.issues if i not in issues]
    return issues


def complete(error: SpecError, plugins: Plugins) -> SpecError:
    """A spec's schema errors together with the problems of its references and data, so
    that a user sees every problem in one round: the spec is checked again without the
    fields in error (:attr:`SpecError.attempt`).  ``error`` itself when that makes no spec."""
    if error.attempt is None:
        return error
    try:
        spec = error.attempt()
    except SpecError:
        return error
    issues = _all_issues(spec, plugins, list(error.issues))
    return error if len(issues) == len(error.issues) else SpecError(issues)

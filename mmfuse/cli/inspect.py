"""``mmfuse validate``, ``mmfuse graph``, ``mmfuse plugins``: look before training."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from mmfuse.cli.options import IgnoreMemoryOpt, SetOpt, SpecArg
from mmfuse.cli.render import console, err_console
from mmfuse.errors import PluginError
from mmfuse.plugins import KINDS, get_plugins


class GraphFormat(str, Enum):
    text = "text"
    dot = "dot"


def validate_command(spec_path: SpecArg, set_: SetOpt = None,
                     ignore_memory: IgnoreMemoryOpt = False) -> None:
    """Check the spec and its data; print the graph, the resolved model and its cost (cells
    per step and epoch, peak memory estimate) without training."""
    from mmfuse.checks import check
    from mmfuse.spec import load_spec

    spec = load_spec(spec_path, set_ or [])
    checked = check(spec, get_plugins())  # a bad spec or data is answered before torch loads
    from mmfuse.build import build, describe_model
    from mmfuse.cost import check_memory, estimate
    from mmfuse.cost import render as render_cost
    from mmfuse.graph import render_text

    built = build(spec, get_plugins(), device="cpu", checked=checked)
    for note in built.plan.notes:
        console.print(f"[yellow]note:[/yellow] {note}", highlight=False)
    if built.data.dataset_message:
        console.print(built.data.dataset_message, highlight=False)
    console.print(render_text(built.graph, spec), highlight=False)
    console.print("data: " + ", ".join(f"{v} {list(s)}" for v, s in built.data.shapes().items()),
                  highlight=False)
    for view, info in built.data.info.items():
        if "instances" in info:
            rows = spec.views[view].rows
            console.print(f"partial view: {view} is held by {info['instances']:,} of "
                          f"{built.data.sizes[rows]:,} {rows} instances (`instances`); the "
                          "others are fused from their other views", highlight=False)
    for view, cells in built.data.held.items():
        console.print(f"held out: {len(cells):,} cells of {view} (evaluate.holdout; not "
                      "trained on)", highlight=False)
    console.print(describe_model(built), highlight=False)
    cost = estimate(built)
    console.print(render_cost(cost), highlight=False)
    if not ignore_memory:
        check_memory(cost)
    console.print(f"[green]{spec_path}: spec and data OK[/green]")


def graph_command(
    spec_path: SpecArg,
    format: Annotated[GraphFormat, typer.Option("--format", "-f")] = GraphFormat.text,
    set_: SetOpt = None,
) -> None:
    """Print the graph of entities and views (text, or Graphviz dot)."""
    from mmfuse.graph import build_graph, render_dot, render_text
    from mmfuse.spec import load_spec

    spec = load_spec(spec_path, set_ or [])
    graph = build_graph(spec, get_plugins())
    text = render_dot(graph) if format is GraphFormat.dot else render_text(graph, spec)
    typer.echo(text)


def plugins_command() -> None:
    """List every registered encoder, reader, dataset, likelihood and callback, with its plugin
    and the package that installed it; then the plugins that could not be loaded (exit 4)."""
    plugins = get_plugins()
    table = Table("kind", "name", "plugin", "package")
    for kind in KINDS:
        for entry in plugins.registry(kind).entries.values():
            table.add_row(kind[:-1], entry.name, entry.plugin,
                          plugins.distribution(entry.plugin) or "–")
    console.print(table)
    for name, why in plugins.broken.items():
        err_console.print(f"plugin {name!r} is left out: {why}", style="red", markup=False,
                          highlight=False, soft_wrap=True)
    if plugins.broken:
        raise typer.Exit(PluginError.exit_code)


def schema_command() -> None:
    """Print the spec's JSON schema (for editors: yaml-language-server, VS Code, PyCharm)."""
    import json

    from mmfuse.spec import Spec
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **Spec.model_json_schema()}
    typer.echo(json.dumps(schema, indent=2))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_command)
    app.command("graph")(graph_command)
    app.command("plugins")(plugins_command)
    app.command("schema")(schema_command)

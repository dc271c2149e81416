"""``mmfuse data``: prepare a dataset's files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from mmfuse.cli.render import console
from mmfuse.plugins import get_plugins

app = typer.Typer(help="Prepare data sets that specs point at.", no_args_is_help=True)


@app.command("prepare")
def prepare_command(
    name: Annotated[str, typer.Argument(help="A registered dataset (see `mmfuse plugins`).")],
    out: Annotated[Path, typer.Option(help="Folder to prepare.")],
    param: Annotated[list[str] | None, typer.Option(
        help="Dataset parameter KEY=VALUE (repeatable), e.g. n_books=1000.")] = None,
) -> None:
    """Prepare (or check) a dataset's folder."""
    params = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--param")
        params[key] = yaml.safe_load(value)
    dataset = get_plugins().datasets.get(name)
    try:
        message = dataset.ensure(out, params)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(message, highlight=False)

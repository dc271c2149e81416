"""``mmfuse data prepare NAME``: prepare a dataset's files.

A dataset plugin whose object has a ``prepare_command`` (a function with Typer-annotated
parameters) gets it as ``mmfuse data prepare NAME`` with its own options; every other dataset
gets the generic ``--out DIR --param KEY=VALUE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from typer.core import TyperGroup

from mmfuse.cli.render import console
from mmfuse.errors import MmfuseError
from mmfuse.plugins import get_plugins


class DatasetCommands(TyperGroup):
    """One sub-command per registered dataset, made when asked for: a dataset plugin is
    imported only by ``mmfuse data prepare`` itself (start-up stays light)."""

    def list_commands(self, ctx: Any) -> list[str]:
        return get_plugins().datasets.names()

    def get_command(self, ctx: Any, name: str) -> Any:
        entries = get_plugins().datasets.entries
        if name not in entries:
            return None
        entry = entries[name]
        command = (getattr(entry.obj, "prepare_command", None)
                   or _generic(entry.name, entry.obj, entry.plugin))
        one = typer.Typer()
        one.command(name, help=(command.__doc__ or "").strip() or None)(command)
        return typer.main.get_command(one)


app = typer.Typer(help="Prepare data sets that specs point at.", no_args_is_help=True)
prepare_app = typer.Typer(cls=DatasetCommands, no_args_is_help=True,
                          help="Prepare (or check) a dataset's folder.")
app.add_typer(prepare_app, name="prepare")


def _generic(name: str, dataset: Any, plugin: str):
    def prepare(
        out: Annotated[Path, typer.Option(help="Folder to prepare.")],
        param: Annotated[list[str] | None, typer.Option(
            help="Dataset parameter KEY=VALUE (repeatable), e.g. n_books=1000.")] = None,
    ) -> None:
        params = {}
        for item in param or []:
            key, sep, value = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint="--param")
            params[key] = yaml.safe_load(value)
        try:
            message = dataset.ensure(out, params)
        except ValueError as exc:
            raise MmfuseError(str(exc)) from None
        console.print(message, highlight=False)

    prepare.__doc__ = f"Prepare the {name!r} dataset (plugin {plugin})."
    return prepare


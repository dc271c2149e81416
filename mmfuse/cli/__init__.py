"""The ``mmfuse`` command line (Typer).  One module per command group; no training logic here.

Exit codes: 0 ok, 1 failure, 2 usage, 3 spec error, 4 plugin error, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Annotated

import typer
from rich.logging import RichHandler
from typer.core import TyperGroup

from mmfuse import __version__
from mmfuse.cli import bench, data, inspect, predict, results, train
from mmfuse.cli.render import err_console
from mmfuse.errors import Interrupted, MmfuseError, SpecError, describe


class ErrorHandlingGroup(TyperGroup):
    """Turns project errors into a red message and a documented exit code (no traceback
    unless ``--debug``)."""

    def invoke(self, ctx: typer.Context):
        debug = bool(ctx.params.get("debug")) or os.environ.get("MMFUSE_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # usage errors, --help, ...
            raise
        except SpecError as exc:
            if debug:
                raise
            if exc.attempt is not None:  # the schema failed: its references and data too
                from mmfuse.checks import complete
                from mmfuse.plugins import get_plugins
                exc = complete(exc, get_plugins())
            for issue in exc.issues:
                err_console.print(str(issue), style="red", markup=False, highlight=False,
                                  soft_wrap=True)
            n = len(exc.issues)
            err_console.print(f"{n} problem{'s' * (n != 1)} in the spec", style="bold red")
            raise typer.Exit(exc.exit_code) from None
        except MmfuseError as exc:
            if debug:
                raise
            err_console.print(f"error: {exc}", style="red", markup=False, highlight=False,
                              soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console.print("interrupted", style="yellow")
            raise typer.Exit(130) from None
        except Interrupted as exc:
            err_console.print(f"terminated ({signal.Signals(exc.signum).name})", style="yellow")
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:  # disk full, permissions, ... at a path the message names
            if debug:
                raise
            err_console.print(f"error: {describe(exc)}", style="red", markup=False,
                              highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as exc:
            if debug:
                raise
            err_console.print(f"internal error: {type(exc).__name__}: {exc}\n"
                              "(run again with --debug for the traceback)", style="red",
                              markup=False, highlight=False)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=ErrorHandlingGroup,
    name="mmfuse",
    help="Learn entity representations jointly from any collection of matrices and tensors.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmfuse {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version.")] = False,
) -> None:
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(message)s", force=True,
                        handlers=[RichHandler(console=err_console, show_path=False)])


train.register(app)
inspect.register(app)
results.register(app)
predict.register(app)
bench.register(app)
app.add_typer(data.app, name="data")


def _plugin_commands(argv: list[str]) -> None:
    """Commands that plugins add through ``mmfuse_register_commands``; a warning for each
    plugin left out as broken (``mmfuse plugins`` reports them itself)."""
    from mmfuse.plugins import get_plugins

    try:
        plugins = get_plugins()
        plugins.manager.hook.mmfuse_register_commands(app=app)
    except MmfuseError as exc:  # a broken plugin must not break `mmfuse --help`
        err_console.print(f"warning: {exc}", style="yellow", markup=False, highlight=False)
        return
    if "plugins" not in argv:
        for name, why in plugins.broken.items():
            err_console.print(f"warning: plugin {name!r} is left out: {why}", style="yellow",
                              markup=False, highlight=False, soft_wrap=True)


def main() -> None:
    _plugin_commands(sys.argv[1:])
    app()

"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

SpecArg = Annotated[Path, typer.Argument(help="Spec file (YAML).", exists=True, dir_okay=False,
                                         metavar="SPEC")]
RunArg = Annotated[Path, typer.Argument(help="A run folder written by `mmfuse train`.",
                                        exists=True, file_okay=False, metavar="RUN")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a spec field: --set train.epochs=5 (repeatable).")]
IgnoreMemoryOpt = Annotated[bool, typer.Option(
    "--ignore-memory", help="Train even if the peak-memory estimate exceeds this machine's.")]

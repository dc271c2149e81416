"""``mmfuse train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.api import default_run_dir, train
from mmfuse.cli.options import IgnoreMemoryOpt, SetOpt, SpecArg
from mmfuse.cli.render import ProgressBar, console, err_console, evaluation_table
from mmfuse.spec import load_spec


def train_command(
    spec_path: SpecArg,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N] | mps")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/NAME/TIME).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --out from its checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="No progress output (the evaluation table still prints).")] = False,
    no_report: Annotated[bool, typer.Option(
        "--no-report", help="Do not print the evaluation table (it is in the run folder).")
    ] = False,
    ignore_memory: IgnoreMemoryOpt = False,
) -> None:
    """Train a spec: write the run folder, embeddings of every entity, and the evaluation."""
    overrides = list(set_ or [])
    if epochs is not None:
        overrides.append(f"train.epochs={epochs}")
    if device is not None:
        overrides.append(f"train.device={device}")
    spec = load_spec(spec_path, overrides)
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out RUN_FOLDER", param_hint="--resume")
    out = out or default_run_dir(spec)
    callbacks = [] if quiet else [ProgressBar(spec.train.epochs)]
    try:
        result = train(spec, out, resume=resume, callbacks=callbacks,
                       ignore_memory=ignore_memory)
    except KeyboardInterrupt:
        if (out / "checkpoint.pt").is_file():
            err_console.print(f"interrupted; continue with: mmfuse train {spec_path} "
                              f"--out {out} --resume", style="yellow")
        raise
    message = result.built.data.dataset_message
    if message and not quiet:
        err_console.print(message, style="yellow" if "SYNTHETIC" in message else None,
                          highlight=False)
    t = result.trainer
    state = "converged" if t.converged else "stopped at the epoch limit"
    console.print(f"trained {t.epoch} epochs ({state}); final loss {t.history[-1]['loss']:.5g}",
                  highlight=False)
    if result.evaluation and not no_report:
        console.print(evaluation_table(result.evaluation))
    console.print(f"run: {result.run.root}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)

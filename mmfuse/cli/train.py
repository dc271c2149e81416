"""``mmfuse train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmfuse.api import default_run_dir, train
from mmfuse.cli.options import IgnoreMemoryOpt, SetOpt, SpecArg
from mmfuse.cli.render import ProgressBar, console, err_console, evaluation_table
from mmfuse.launch import LaunchError, launch
from mmfuse.spec import load_spec


def train_command(
    spec_path: SpecArg,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda[:N] | mps")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override train.epochs.")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/NAME/TIME).")] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the run in --out from its checkpoint.")] = False,
    nproc: Annotated[int | None, typer.Option(
        min=1, help="Train in N processes on this machine (torch.distributed DDP through "
        "torch's elastic launcher; gloo on the CPU, nccl and a GPU each on CUDA).")] = None,
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
    if nproc is not None:
        overrides.append("train.strategy=ddp")
    spec = load_spec(spec_path, overrides)  # spec errors show here, before any process starts
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out RUN_FOLDER", param_hint="--resume")
    out = out or default_run_dir(spec)
    job = (spec_path, overrides, out, resume, quiet, no_report, ignore_memory)
    again = f"mmfuse train {spec_path} --out {out} --resume" + (
        f" --nproc {nproc}" if nproc is not None else "")
    try:
        if nproc is None:
            run_training(*job)  # alone, or as one process of a torchrun job
        else:
            launch(nproc, spec.train.device, run_training, *job)
    except KeyboardInterrupt:
        if (out / "checkpoint.pt").is_file():
            err_console.print(f"interrupted; continue with: {again}", style="yellow")
        raise
    except LaunchError as exc:
        if (out / "checkpoint.pt").is_file():
            raise LaunchError(f"{exc}\ncontinue from the last checkpoint with: {again}",
                              exc.ranks) from None
        raise


def run_training(spec_path: Path, overrides: list[str], out: Path, resume: bool, quiet: bool,
                 no_report: bool, ignore_memory: bool) -> None:
    """Train and report, in this process (each process of a job runs it; rank 0 reports)."""
    spec = load_spec(spec_path, overrides)
    callbacks = [] if quiet else [ProgressBar(spec.train.epochs)]
    result = train(spec, out, resume=resume, callbacks=callbacks, ignore_memory=ignore_memory)
    if not result.main:
        return
    message = result.built.data.dataset_message
    if message and not quiet:
        err_console.print(message, style="yellow" if "SYNTHETIC" in message else None,
                          highlight=False)
    t = result.trainer
    state = "converged" if t.converged else "stopped at the epoch limit"
    job = t.strategy.world_size
    where = f" in {job} processes ({t.strategy.backend})" if job > 1 else ""
    console.print(f"trained {t.epoch} epochs{where} ({state}); final loss "
                  f"{t.history[-1]['loss']:.5g}", highlight=False)
    if result.evaluation and not no_report:
        console.print(evaluation_table(result.evaluation))
    console.print(f"run: {result.run.root}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)

"""``mmfuse train``."""

from __future__ import annotations

import functools
import shlex
from pathlib import Path
from typing import Annotated

import typer

from mmfuse.cli.options import IgnoreMemoryOpt, SetOpt, SpecArg
from mmfuse.cli.render import console, err_console, evaluation_table
from mmfuse.errors import Interrupted


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
    from mmfuse.api import default_run_dir
    from mmfuse.launch import LaunchError, launch
    from mmfuse.run import RunWriteError
    from mmfuse.spec import load_spec
    from mmfuse.training import TrainingError

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
    again = functools.partial(resume_command, spec_path, out, list(set_ or []), epochs,
                              device, nproc, ignore_memory)
    checkpoint = out / "checkpoint.pt"
    try:
        if nproc is None:
            run_training(*job)  # alone, or as one process of a torchrun job
        else:
            launch(nproc, spec.train.device, run_training, *job)
    except (KeyboardInterrupt, Interrupted):  # after the current step (Trainer.fit)
        if checkpoint.is_file():
            err_console.print(f"stopped; the checkpoint is intact; continue with: {again()}",
                              style="yellow", highlight=False, soft_wrap=True)
        raise
    except TrainingError as exc:  # diverged: resume with a lower learning rate
        if exc.lr is not None and checkpoint.is_file():
            raise TrainingError(f"{exc}\ncontinue from the last good checkpoint with: "
                                f"{again(lr=exc.lr)}") from None
        raise
    except LaunchError as exc:  # a process of the job failed
        if checkpoint.is_file():
            raise LaunchError(f"{exc}\ncontinue from the last checkpoint with: {again()}",
                              exc.ranks) from None
        raise
    except RunWriteError as exc:  # a full disk, no permission, ...
        if checkpoint.is_file():
            raise RunWriteError(f"{exc}\ncontinue from the last checkpoint with: "
                                f"{again()}") from exc
        raise


def resume_command(spec_path: Path, out: Path, sets: list[str], epochs: int | None,
                   device: str | None, nproc: int | None, ignore_memory: bool,
                   lr: float | None = None) -> str:
    """The command that continues a run from its checkpoint, with every option the user
    gave that a resume keeps (``lr``: a new learning rate, replacing any --set of it)."""
    if lr is not None:
        sets = [s for s in sets if s.partition("=")[0].strip() != "train.optimizer.lr"]
        sets.append(f"train.optimizer.lr={lr:g}")
    argv = ["mmfuse", "train", str(spec_path), "--out", str(out), "--resume"]
    for s in sets:
        argv += ["--set", s]
    if epochs is not None:
        argv += ["--epochs", str(epochs)]
    if device is not None:
        argv += ["--device", device]
    if nproc is not None:
        argv += ["--nproc", str(nproc)]
    if ignore_memory:
        argv.append("--ignore-memory")
    return shlex.join(argv)


def run_training(spec_path: Path, overrides: list[str], out: Path, resume: bool, quiet: bool,
                 no_report: bool, ignore_memory: bool) -> None:
    """Train and report, in this process (each process of a job runs it; rank 0 reports)."""
    from mmfuse.api import train
    from mmfuse.cli.progress import ProgressBar
    from mmfuse.spec import load_spec

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
    for view, likelihood in result.built.model.likelihoods.items():
        learnt = getattr(likelihood, "learnt", dict)()
        if learnt:  # e.g. a gaussian's noise scale, a negative binomial's dispersion
            console.print(f"learnt by the likelihood of {view!r}: " + ", ".join(
                f"{k} {v:.4g}" for k, v in learnt.items()), highlight=False)
    if result.evaluation and not no_report:
        console.print(evaluation_table(result.evaluation))
    console.print(f"run: {result.run.root}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)

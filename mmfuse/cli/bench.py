"""``mmfuse bench``: the paper's comparison on a data set, as a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from mmfuse.bench.methods import all_methods
from mmfuse.bench.packaged import datasets
from mmfuse.cli.options import SetOpt
from mmfuse.cli.render import clock, console, err_console


def _eta(seconds: float | None) -> str:
    return "ETA …" if seconds is None else f"ETA ≈ {clock(seconds)}"


def bench_command(
    dataset: Annotated[str, typer.Option(
        help="Data set: " + " | ".join(datasets()) + " (specs/NAME.yaml of the working "
        "directory, else mmfuse's own), or any other with --spec")] = "goodreads",
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated rows (default: all). Known: "
        + ", ".join(m.name for m in all_methods()))] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per row (model and split).")] = 3,
    quick: Annotated[bool, typer.Option(help="Few epochs: a smoke test in minutes.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report folder (default bench/DATASET).")]
    = None,
    spec: Annotated[Path | None, typer.Option(help="Spec to use instead of DATASET's.",
                                              exists=True, dir_okay=False)] = None,
    resume: Annotated[bool, typer.Option(
        help="Continue the bench in --out: its finished runs are kept, the rest run.")]
    = False,
    set_: SetOpt = None,
) -> None:
    """Train every row over seeds; write report.md, results.json and plots (rewritten after
    every run: Ctrl-C loses nothing finished, and --resume continues)."""
    from mmfuse.bench import run_bench
    from mmfuse.bench.runner import BenchStatus

    out = out or Path("bench") / dataset
    command = "mmfuse " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    last: list[BenchStatus] = []
    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(bar_width=30),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                        console=err_console)
    whole = progress.add_task(f"bench {dataset}", total=None, info="")
    row = progress.add_task("", total=1.0, info="")

    def on_progress(s: BenchStatus) -> None:
        last[:] = [s]
        progress.update(whole, completed=s.done + s.fraction, total=s.total,
                        info=f"{s.done}/{s.total} runs  {_eta(s.eta_seconds)}")
        progress.update(row, description=s.row, completed=s.fraction, info=s.stage)

    try:
        with progress:
            result = run_bench(dataset, methods=methods.split(",") if methods else None,
                               seeds=seeds, quick=quick, out=out, overrides=list(set_ or []),
                               spec_path=spec, resume=resume, command=command,
                               on_progress=on_progress)
    except BaseException as exc:  # Ctrl-C, SIGTERM or a failure: say what is kept
        quitting = isinstance(exc, (SystemExit, typer.Exit))
        if last and (out / "results.json").is_file() and not quitting:
            again = command if "--resume" in sys.argv else command + " --resume"
            err_console.print(f"stopped: {last[0].done} of {last[0].total} runs finished and "
                              f"kept in {out} (report.md); continue with: {again}",
                              style="yellow", markup=False, highlight=False, soft_wrap=True)
        raise
    reasons: dict[str, list[str]] = {}
    for name, r in result.rows.items():
        if r["skipped"]:
            reasons.setdefault(r["skipped"], []).append(name)
    for why, names in reasons.items():
        err_console.print(f"not run: {', '.join(names)}: {why}", style="yellow", markup=False,
                          highlight=False, soft_wrap=True)
    if result.resumed_runs:
        n = result.resumed_runs
        console.print(f"kept {n} finished run{'s' * (n != 1)} of the earlier bench",
                      highlight=False)
    console.print(f"report: {out / 'report.md'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)

"""``mmfuse bench``: the paper's comparison on a data set, as a report."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mmfuse.bench.methods import all_methods
from mmfuse.cli.options import SetOpt
from mmfuse.cli.render import console, err_console


def bench_command(
    dataset: Annotated[str, typer.Option(help="goodreads | emoji | dicty (specs/NAME.yaml)")]
    = "goodreads",
    methods: Annotated[str | None, typer.Option(
        help="Comma-separated rows (default: all). Known: "
        + ", ".join(m.name for m in all_methods()))] = None,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per row (model and split).")] = 3,
    quick: Annotated[bool, typer.Option(help="Few epochs: a smoke test in minutes.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report folder (default bench/DATASET).")]
    = None,
    spec: Annotated[Path | None, typer.Option(help="Spec to use instead of specs/DATASET.yaml.",
                                              exists=True, dir_okay=False)] = None,
    set_: SetOpt = None,
) -> None:
    """Train every row over seeds; write report.md, results.json and plots."""
    from mmfuse.bench import run_bench
    from mmfuse.bench.report import write_report

    out = out or Path("bench") / dataset
    command = "mmfuse " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err_console) as progress:
        task = progress.add_task("bench", total=None)

        def on_progress(what: str, done: int, total: int) -> None:
            progress.update(task, description=what, completed=done, total=total)

        result = run_bench(dataset, methods=methods.split(",") if methods else None,
                           seeds=seeds, quick=quick, out=out, overrides=list(set_ or []),
                           spec_path=spec, on_progress=on_progress)
    write_report(result, out, command)
    reasons: dict[str, list[str]] = {}
    for name, row in result.rows.items():
        if row["skipped"]:
            reasons.setdefault(row["skipped"], []).append(name)
    for why, names in reasons.items():
        err_console.print(f"not run: {', '.join(names)}: {why}", style="yellow", markup=False,
                          highlight=False, soft_wrap=True)
    console.print(f"report: {out / 'report.md'}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_command)

"""Terminal rendering shared by the commands: consoles, the progress bar, tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from mmfuse.plugin_api import Callback

console = Console()
err_console = Console(stderr=True)


def format_terms(terms: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in terms.items())


class ProgressBar(Callback):
    """A rich progress bar over epochs and steps with the loss terms."""

    def __init__(self, total_epochs: int):
        self.total_epochs = total_epochs
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[of]}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"), console=err_console, transient=False)
        self.task = None

    def on_train_start(self, trainer) -> None:
        self.progress.start()

    def on_epoch_start(self, trainer, epoch, steps) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=epoch,
                                           of=self.total_epochs, terms="")

    def on_step_end(self, trainer, step, terms) -> None:
        self.progress.update(self.task, completed=step, terms=f"loss {terms['loss']:.4g}")

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        note = "  (converged)" if trainer.converged else ""
        self.progress.console.print(f"epoch {epoch:>3}  {format_terms(metrics)}{note}",
                                    highlight=False)

    def on_train_end(self, trainer) -> None:
        self.progress.stop()


def evaluation_table(result: Mapping[str, Any]) -> Table:
    """One row per target: probe metrics beside the trivial floor."""
    table = Table(title="evaluation (test split)", title_justify="left")
    for col in ("target", "probe", "metric", "score", "trivial floor"):
        table.add_column(col, justify="right" if col in ("score", "trivial floor") else "left")
    for name, r in result["targets"].items():
        first = True
        for metric, value in r["metrics"].items():
            table.add_row(name if first else "", r["probe"] if first else "", metric,
                          f"{value:.4f}", f"{r['floor'][metric]:.4f}")
            first = False
        table.add_section()
    return table

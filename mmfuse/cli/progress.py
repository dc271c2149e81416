"""The training progress bar (imported by ``mmfuse train`` only: it needs the plugin API)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mmfuse.cli.render import clock, err_console
from mmfuse.plugin_api import Callback

#: Seconds between two reads of the step's loss for the bar.
READ = 0.5


def format_terms(terms: Mapping[str, float]) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in terms.items())


class ProgressBar(Callback):
    """A rich progress bar over epochs and steps with the loss, the job's rate (the
    primary's instances or cells per second, over every process) and the time the whole
    run has left at that rate (until ``train.epochs``: the stopping rule may end it
    sooner)."""

    def __init__(self, total_epochs: int):
        self.total_epochs = total_epochs
        self.started = 0.0
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[of]}"), BarColumn(),
            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[terms]}"), console=err_console, transient=False)
        self.task = None
        self.run_started = 0.0
        self.steps_run = 0  # in this process's run (a resumed run counts from its resume)
        self.loss_read = -1.0  # when the shown loss was read (READ: not at every step)
        self.loss = ""

    def on_train_start(self, trainer) -> None:
        self.run_started = time.perf_counter()
        self.progress.start()

    def on_epoch_start(self, trainer, epoch, steps) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task("train", total=steps, epoch=epoch,
                                           of=self.total_epochs, terms="")
        self.started = time.perf_counter()

    def on_step_end(self, trainer, step, terms) -> None:
        batcher = trainer.built.batcher  # every process takes its steps in step with rank 0
        done = batcher.epoch_size() * step / batcher.steps_per_epoch()
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        unit = "cells" if batcher.primary_is_view else batcher.primary
        self.steps_run += 1
        per_step = (time.perf_counter() - self.run_started) / self.steps_run
        left = ((self.total_epochs - trainer.epoch) * batcher.steps_per_epoch() - step) * per_step
        now = time.perf_counter()
        if now - self.loss_read >= READ:  # a read waits for an accelerator to finish
            self.loss, self.loss_read = f"loss {terms['loss']:.4g}  ", now
        self.progress.update(self.task, completed=step,
                             terms=f"{self.loss}{rate:,.0f} {unit}/s  run left ≈{clock(left)}")

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        note = "  (converged)" if trainer.converged else ""
        self.progress.console.print(f"epoch {epoch:>3}  {format_terms(metrics)}{note}",
                                    highlight=False)

    def on_train_end(self, trainer) -> None:
        self.progress.stop()

"""Terminal rendering shared by the commands: consoles, the progress bar, tables."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
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
    """A rich progress bar over epochs and steps with the loss and the job's rate (the
    primary's instances or cells per second, over every process)."""

    def __init__(self, total_epochs: int):
        self.total_epochs = total_epochs
        self.started = 0.0
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
        self.started = time.perf_counter()

    def on_step_end(self, trainer, step, terms) -> None:
        batcher = trainer.built.batcher  # every process takes its steps in step with rank 0
        done = batcher.epoch_size() * step / batcher.steps_per_epoch()
        rate = done / max(time.perf_counter() - self.started, 1e-9)
        unit = "cells" if batcher.primary_is_view else batcher.primary
        self.progress.update(self.task, completed=step,
                             terms=f"loss {terms['loss']:.4g}  {rate:,.0f} {unit}/s")

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        note = "  (converged)" if trainer.converged else ""
        self.progress.console.print(f"epoch {epoch:>3}  {format_terms(metrics)}{note}",
                                    highlight=False)

    def on_train_end(self, trainer) -> None:
        self.progress.stop()


LOWER_IS_BETTER = {"mse"}
#: Metrics a table shows, in this order (all of them are in ``evaluation.json``).
SHOWN = ("accuracy", "macro_f1", "f1_class_0", "f1_class_1", "roc_auc", "auprc", "micro_f1",
         "auprc_micro", "auprc_macro", "r2", "mse")


def _feature_rows(r: Mapping[str, Any]) -> list[tuple[str, Mapping[str, float]]]:
    """(label, metrics) of the learnt representation, the floor, and each baseline."""
    rows = [("learnt", r["metrics"]), ("trivial floor", r["floor"])]
    names = {"concat": "raw concat (all views)", "pca": "PCA of raw concat"}
    rows += [(names.get(name, f"raw {name}"), m) for name, m in r.get("baselines", {}).items()]
    return rows


def _target_table(name: str, r: Mapping[str, Any]) -> Table:
    """One target: a row per feature set (learnt, floor, baselines), a column per metric."""
    caption = f"{r['n_train']} train / {r['n_test']} test"
    if "labels" in r:
        labels = r["labels"]
        caption += f"; {labels['n_scored']} of {labels['n_labels']} labels scored (test positives)"
    table = Table(title=f"{name}: {r['task']}, probe {r['probe']}", title_justify="left",
                  caption=caption, caption_justify="left")
    table.add_column("features")
    metrics = [m for m in SHOWN if m in r["metrics"]] or list(r["metrics"])
    for metric in metrics:
        table.add_column(metric, justify="right")
    rows = _feature_rows(r)
    best = {m: (min if m in LOWER_IS_BETTER else max)(row[m] for _, row in rows if m in row)
            for m in metrics}

    def cell(values, m):
        if m not in values:
            return "–"
        return f"[bold]{values[m]:.4f}[/bold]" if values[m] == best[m] else f"{values[m]:.4f}"

    for label, values in rows:
        cells = [cell(values, m) for m in metrics]
        table.add_row(label, *cells)
        if label == "trivial floor" and len(rows) > 2:
            table.add_section()
    return table


#: Held-out metrics where lower is better (the others: higher).
HOLDOUT_LOWER = {"rmse", "mae", "poisson_deviance"}


def _holdout_table(view: str, methods: Mapping[str, Mapping[str, float]],
                   info: Mapping[str, Any]) -> Table:
    """One view's held-out cells: a row per method, a column per metric, the best bold."""
    caption = (f"{info['n_test']:,} held-out cells ({info['by']}, fraction {info['fraction']}),"
               f" {info['n_train']:,} training cells")
    if "n_negatives" in info:
        caption += f"; {info['n_negatives']:,} cells without a link drawn as negatives"
    if "ranked_rows" in info:
        caption += f"; ranking over {info['ranked_rows']:,} rows"
    table = Table(title=f"{view}: held-out cells ({info['likelihood']})", title_justify="left",
                  caption=caption, caption_justify="left")
    table.add_column("method")
    metrics = list(next(iter(methods.values())))
    for metric in metrics:
        table.add_column(metric, justify="right")
    finite = {m: [v[m] for v in methods.values() if v[m] == v[m]] for m in metrics}
    best = {m: (min if m in HOLDOUT_LOWER else max)(vals) for m, vals in finite.items() if vals}
    for name, values in methods.items():
        table.add_row(name, *(f"[bold]{values[m]:.4f}[/bold]" if values[m] == best.get(m)
                              else f"{values[m]:.4f}" for m in metrics))
        if name == "mmfuse":
            table.add_section()
    return table


def evaluation_table(result: Mapping[str, Any]) -> Group:
    """Per target (test split): the probe on the learnt representation beside the trivial
    floor and the raw-view baselines; per held-out view, each method's metrics; the best
    value of each metric in bold."""
    tables = [_target_table(name, r) for name, r in result["targets"].items()]
    tables += [_holdout_table(view, methods, result["holdout_split"][view])
               for view, methods in result.get("holdout", {}).items()]
    return Group(*(part for t in tables for part in ("", t)))

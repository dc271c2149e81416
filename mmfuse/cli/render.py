"""Terminal rendering shared by the commands: consoles and tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console, Group
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


LOWER_IS_BETTER = {"mse"}
#: Metrics a table shows, in this order (all of them are in ``evaluation.json``).
SHOWN = ("accuracy", "macro_f1", "f1_class_0", "f1_class_1", "roc_auc", "auprc", "micro_f1",
         "auprc_micro", "auprc_macro", "r2", "mse")


def clock(seconds: float) -> str:
    """A duration as ``1:02:03`` or ``4:05`` (rounded to the second; never negative)."""
    minutes, secs = divmod(max(int(seconds + 0.5), 0), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


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

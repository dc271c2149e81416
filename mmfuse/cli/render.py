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


Row = tuple[str, Mapping[str, float], Mapping[str, float] | None]  # label, means, stds


def _feature_rows(r: Mapping[str, Any]) -> list[Row]:
    """(label, metrics, their std or None) of the learnt representation, the floor, and each
    baseline."""
    rows: list[Row] = [("learnt", r["metrics"], r.get("metrics_std")),
                       ("trivial floor", r["floor"], r.get("floor_std"))]
    names = {"concat": "raw concat (all views)", "pca": "PCA of raw concat"}
    stds = r.get("baselines_std", {})
    rows += [(names.get(name, f"raw {name}"), m, stds.get(name))
             for name, m in r.get("baselines", {}).items()]
    return rows


def _spread(r: Mapping[str, Any], split: Mapping[str, Any] | None) -> str:
    """What a table's "mean ± std" is over ('' for one split)."""
    repeats = r.get("repeats", 1)
    if repeats < 2:
        return ""
    seeds = f" (seeds {split['seed']}–{split['seed'] + repeats - 1})" if split else ""
    return f"; mean ± std over {repeats} splits{seeds}"


def _metric_table(title: str, caption: str, metrics: list[str], rows: list[Row],
                  sections: set[int]) -> Table:
    """A row per feature set, a column per metric, the best of each column bold; a value
    with a std shows as ``mean ± std``; a line under each row numbered in ``sections``."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("features")
    for metric in metrics:
        table.add_column(metric, justify="right")
    best = {m: (min if m in LOWER_IS_BETTER else max)(row[m] for _, row, _ in rows if m in row)
            for m in metrics}

    def cell(values, stds, m):
        if m not in values:
            return "–"
        text = (f"{values[m]:.3f} ± {stds[m]:.3f}" if stds is not None and m in stds
                else f"{values[m]:.4f}")
        return f"[bold]{text}[/bold]" if values[m] == best[m] else text

    for i, (label, values, stds) in enumerate(rows):
        table.add_row(label, *(cell(values, stds, m) for m in metrics))
        if i in sections:
            table.add_section()
    return table


def _shown(r: Mapping[str, Any]) -> list[str]:
    return [m for m in SHOWN if m in r["metrics"]] or list(r["metrics"])


def _target_table(name: str, r: Mapping[str, Any],
                  split: Mapping[str, Any] | None = None) -> Table:
    """One target: a row per feature set (learnt, floor, baselines), a column per metric."""
    caption = f"{r['n_train']} train / {r['n_test']} test"
    if "labels" in r:
        labels = r["labels"]
        caption += f"; {labels['n_scored']} of {labels['n_labels']} labels scored (test positives)"
    caption += _spread(r, split)
    rows = _feature_rows(r)
    return _metric_table(f"{name}: {r['task']}, probe {r['probe']}", caption, _shown(r), rows,
                         {1} if len(rows) > 2 else set())  # under the floor


def _raw_label(views: list[str]) -> str:
    return f"raw {views[0]}" if len(views) == 1 else f"raw concat ({', '.join(views)})"


def _ablation_table(name: str, r: Mapping[str, Any],
                    split: Mapping[str, Any] | None = None) -> Table:
    """One target's view ablation: the learnt representation; per view V, the probe on it
    without V beside the raw data of the other views."""
    rows: list[Row] = [("learnt (all views)", r["metrics"], r.get("metrics_std"))]
    sections = {0}
    for view, a in r["ablation"].items():
        rows.append((f"without {view}", a["metrics"], a.get("metrics_std")))
        if "absence_baseline" in a:
            rows.append((_raw_label(a["absence_views"]), a["absence_baseline"],
                         a.get("absence_baseline_std")))
        sections.add(len(rows) - 1)
    sections.discard(len(rows) - 1)
    caption = ("each view's codes zeroed in the fusion, the probe refit on the same split"
               + _spread(r, split))
    return _metric_table(f"{name}: view ablation, probe {r['probe']}", caption, _shown(r),
                         rows, sections)


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
    floor and the raw-view baselines (mean ± std over repeated splits), and its view
    ablation; per held-out view, each method's metrics; the best value of each metric in
    bold."""
    split = result.get("split")
    tables = []
    for name, r in result["targets"].items():
        tables.append(_target_table(name, r, split))
        if r.get("ablation"):
            tables.append(_ablation_table(name, r, split))
    tables += [_holdout_table(view, methods, result["holdout_split"][view])
               for view, methods in result.get("holdout", {}).items()]
    return Group(*(part for t in tables for part in ("", t)))

"""The benchmark's outputs: ``results.json``, ``report.md`` and PNG plots.

Rewritten after every run (each file replaced atomically), so an interrupted bench leaves a
readable report of what it finished, and ``results.json`` (every run's numbers) is what
``--resume`` continues from.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import mmfuse
from mmfuse.bench.packaged import published_numbers

if TYPE_CHECKING:
    from mmfuse.bench.runner import BenchResult

RESULTS = "results.json"
#: the metric a target's plot shows and its floor is judged by
HEADLINE = {"classification": "accuracy", "regression": "r2", "multilabel": "auprc_macro"}


def lower_is_better(metric: str) -> bool:
    return metric in ("mse", "rmse", "mae") or "deviance" in metric


def _stats(values: list[float]) -> dict[str, float] | None:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(arr):
        return None
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "n": int(len(arr))}


def _metric_stats(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """{group: {metric: stats}} over seeds, from each seed's {group: {metric: value}}."""
    values: dict[str, dict[str, list[float]]] = {}
    for groups in per_seed:
        for group, metrics in groups.items():
            for metric, value in metrics.items():
                values.setdefault(group, {}).setdefault(metric, []).append(value)
    return {g: {m: s for m, v in ms.items() if (s := _stats(v)) is not None}
            for g, ms in values.items()}


def aggregate(result: BenchResult) -> dict[str, Any]:
    """Mean ± std over seeds of every metric of every row, beside each seed's own run."""
    rows = {}
    for name, row in result.rows.items():
        runs = row["runs"]
        resources = {k: s for k in ("train_seconds", "samples_per_second", "peak_rss_mib")
                     if (s := _stats([r.get(k) for r in runs])) is not None}
        rows[name] = {"label": row["label"], "skipped": row["skipped"],
                      "published": row["published"], "resources": resources,
                      "targets": _metric_stats([r["targets"] for r in runs]),
                      "holdout": _metric_stats([r.get("holdout") or {} for r in runs]),
                      "runs": runs}
    return rows


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_report(result: BenchResult, out: Path, command: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(result)
    published = published_numbers(result.dataset)
    payload = {
        "dataset": result.dataset, "command": command, "seeds": result.seeds,
        "quick": result.quick, "spec_source": result.spec_shown,
        "spec_digest": result.spec.digest(), "spec": result.spec.dump(),
        "complete": result.complete, "finished_runs": result.finished_runs,
        "total_runs": result.total_runs, "rows": rows, "published": published,
        "holdout_split": result.holdout_split, "histories": result.histories,
        "projection": result.projection,
        "versions": {"mmfuse": mmfuse.__version__, "python": platform.python_version()},
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    _write_text(out / RESULTS, json.dumps(_json_safe(payload), indent=1, default=str) + "\n")
    plots = write_plots(result, rows, out)
    _write_text(out / "report.md", render_markdown(result, rows, published, command, plots))
    return payload


def _cell(s: dict[str, float] | None, fmt: str = ".4f", seeds: int = 1) -> str:
    """``mean``, ``mean ± std`` only over two or more seeds; ``(n=1)`` where a row has fewer
    seeds than the bench (an unfinished row)."""
    if not s:
        return "—"
    mean = format(s["mean"], fmt)
    text = f"{mean} ± {format(s['std'], fmt)}" if s["n"] > 1 else mean
    return text + (f" (n={s['n']})" if s["n"] < seeds else "")


def _best(values: dict[str, float], metric: str) -> str | None:
    if not values:
        return None
    pick = min if lower_is_better(metric) else max
    return pick(values, key=lambda k: values[k])


def _worse(value: float, than: float, metric: str) -> bool:
    return value > than if lower_is_better(metric) else value < than


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(cells) + " |" for cells in lines)]


def _target_table(result: BenchResult, rows: dict[str, Any], target: str, t: Any,
                  published: dict[str, Any]) -> list[str]:
    n_seeds = len(result.seeds)
    shown = {n: r for n, r in rows.items() if not r["skipped"] and r["targets"].get(target)}
    if not shown:
        return []
    metric_names = sorted({m for r in shown.values() for m in r["targets"][target]})
    best = {m: _best({n: r["targets"][target][m]["mean"] for n, r in shown.items()
                      if n != "floor" and m in r["targets"][target]}, m) for m in metric_names}
    headline = HEADLINE.get(t.task)
    floor = (rows.get("floor") or {}).get("targets", {}).get(target, {}).get(headline)
    header = ["method", *metric_names]
    show_published = bool(published) and t.probe in ("random_forest", "linear")
    if show_published:
        header.append("published (paper, not measured)")
    lines, flagged = [], False
    for name, row in shown.items():
        metrics = row["targets"][target]
        label = row["label"]
        mine = metrics.get(headline)
        if name != "floor" and floor and mine and _worse(mine["mean"], floor["mean"], headline):
            label += " ⚠ below floor"
            flagged = True
        cells = [label]
        for m in metric_names:
            text = _cell(metrics.get(m), seeds=n_seeds)
            cells.append(f"**{text}**" if best[m] == name else text)
        if show_published:
            pub = published.get(row["published"] or "", {})
            key = "f1" if t.task == "classification" else "mse"
            cells.append(f"{key} {pub[key]:.4f}" if key in pub else "")
        lines.append(cells)
    notes = "**Bold**: the best of its column (the floor aside)."
    if flagged:
        notes += f" ⚠: the row's {headline} is below the trivial floor's."
    return [f"## {target}: {t.task}, probe `{t.probe}` {dict(t.params) or ''}", "",
            *_table(header, lines), "", notes, ""]


def _holdout_tables(result: BenchResult, rows: dict[str, Any]) -> list[str]:
    n_seeds = len(result.seeds)
    views = list(dict.fromkeys(v for r in rows.values() for v in r["holdout"]))
    out: list[str] = []
    for view in views:
        shown = {n: r for n, r in rows.items() if not r["skipped"] and r["holdout"].get(view)}
        metric_names = list(dict.fromkeys(m for r in shown.values() for m in r["holdout"][view]))
        best = {m: _best({n: r["holdout"][view][m]["mean"] for n, r in shown.items()
                          if m in r["holdout"][view]}, m) for m in metric_names}
        info = result.holdout_split.get(view, {})
        about = ", ".join(f"{k} {info[k]}" for k in ("likelihood", "by", "fraction", "n_train",
                                                     "n_test", "n_negatives") if k in info)
        lines = []
        for name, row in shown.items():
            cells = [row["label"]]
            for m in metric_names:
                text = _cell(row["holdout"][view].get(m), seeds=n_seeds)
                cells.append(f"**{text}**" if best[m] == name else text)
            lines.append(cells)
        arrows = ", ".join(f"{m} {'↓' if lower_is_better(m) else '↑'}" for m in metric_names)
        out += [f"## Held-out cells of `{view}`", "",
                f"Cells kept out of training ({about}"
                + ("; seed 0's split: each seed holds out its own" if n_seeds > 1 else "")
                + "); the baselines are fit on the same training cells.", "",
                *_table(["method", *metric_names], lines), "",
                f"**Bold**: the best of its column ({arrows}: lower / higher is better).", ""]
    return out


def render_markdown(result: BenchResult, rows: dict[str, Any], published: dict[str, Any],
                    command: str, plots: list[str]) -> str:
    spec = result.spec
    n = len(result.seeds)
    spread = ("mean ± sample std over seeds; model seed and split seeds both vary" if n > 1
              else "one seed, so no spread is shown; `--seeds 3` gives mean ± std")
    quick = "  \nQuick mode: few epochs, a smoke test, not for conclusions." if result.quick else ""
    lines = [f"# mmfuse bench: {result.dataset}", ""]
    if not result.complete:
        lines += [f"**In progress: {result.finished_runs} of {result.total_runs} runs "
                  "finished.** This report is rewritten after every run; an interrupted bench "
                  "continues with the same command and `--resume`.", ""]
    lines += [f"Command: `{command}`  ", f"Spec: {result.spec_shown or spec.name}  ",
              f"Seeds: {n} ({spread}){quick}"]
    if result.resumed_runs:
        k = result.resumed_runs
        lines[-1] += f"  \n{k} run{'s' * (k != 1)} kept from an earlier bench (`--resume`)."
    lines += ["", f"Data: {result.dataset_message or spec.name}", ""]
    for target, t in (spec.evaluate.targets.items() if spec.evaluate else ()):
        lines += _target_table(result, rows, target, t, published)
    lines += _holdout_tables(result, rows)
    if any(r["label"].startswith("supervised") for r in rows.values() if not r["skipped"]):
        lines += ["The supervised MLP rows are the MLP's own test predictions (trained on the "
                  "train split's labels, the paper's baseline), so they repeat under every probe "
                  "of a target; their time is the MLP's fit over all targets.", ""]
    cost = [[row["label"], _cell(row["resources"].get("train_seconds"), ".1f", n),
             _cell(row["resources"].get("samples_per_second"), ".0f", n),
             _cell(row["resources"].get("peak_rss_mib"), ".0f", n)]
            for row in rows.values() if not row["skipped"] and row["resources"]]
    if cost:
        lines += ["## Cost", "", *_table(["method", "train s", "samples/s", "peak RSS MiB"],
                                         cost)]
    reasons: dict[str, list[str]] = {}
    for r in rows.values():
        if r["skipped"]:
            reasons.setdefault(r["skipped"], []).append(r["label"])
    if reasons:
        lines += ["", "## Rows not run", ""]
        lines += [f"- {'; '.join(labels)}: {why}" for why, labels in reasons.items()]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _save(fig: Any, out: Path, name: str) -> str:
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, out / name)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return name


def _metric_plot(plt: Any, result: BenchResult, rows: dict[str, Any], target: str, t: Any,
                 metric: str) -> Any:
    """Each row's mean (± std over ≥ 2 seeds) as a dot; the floor and the best raw-view
    baseline as reference lines.  The axis spans the methods' values (and a reference
    within reach), not 0..1: a row far outside it is drawn at the edge, its value beside."""
    names = [n for n, r in rows.items() if n != "floor" and not r["skipped"]
             and metric in r["targets"].get(target, {})]
    if not names:
        return None
    stats = [rows[n]["targets"][target][metric] for n in names]
    means = np.array([s["mean"] for s in stats])
    stds = np.array([s["std"] if s["n"] > 1 else 0.0 for s in stats])
    raw = [i for i, n in enumerate(names) if n.startswith("raw_")]
    core = [i for i in range(len(names)) if i not in raw] or list(range(len(names)))
    floor = rows.get("floor", {}).get("targets", {}).get(target, {}).get(metric)
    lo, hi = float((means - stds)[core].min()), float((means + stds)[core].max())
    best_raw = None
    if raw:
        pick = np.argmin if lower_is_better(metric) else np.argmax
        best_raw = raw[int(pick(means[raw]))]
    reach = 2 * max(hi - lo, 0.02 * max(abs(lo), abs(hi), 1e-3))
    refs = [floor["mean"]] if floor else []
    refs += [float(means[i]) for i in raw]
    for ref in sorted(refs, key=lambda r: min(abs(r - lo), abs(r - hi))):
        if lo - reach <= ref <= hi + reach:  # within reach: the axis takes it in
            lo, hi = min(lo, ref), max(hi, ref)
    span = max(hi - lo, 1e-3)
    lo, hi = lo - 0.06 * span, hi + 0.18 * span  # room on the right for the values
    fig, ax = plt.subplots(figsize=(8.5, 0.36 * len(names) + 2.3))
    ys = np.arange(len(names))
    for i, (y, m, sd) in enumerate(zip(ys, means, stds, strict=True)):
        below = floor is not None and _worse(m, floor["mean"], metric)
        colour = "tab:red" if below else "tab:gray" if i in raw else "tab:blue"
        if lo <= m <= hi:
            if sd:
                ax.errorbar(m, y, xerr=sd, fmt="none", ecolor="0.4", capsize=3, zorder=1)
            ax.scatter([m], [y], color=colour, zorder=2)
            ax.annotate(f"{m:.3f}", (m, y), xytext=(6, -3), textcoords="offset points",
                        fontsize=7)
        else:  # off the axis: an arrow at the edge it lies beyond
            edge, marker = (lo, "<") if m < lo else (hi, ">")
            ax.scatter([edge], [y], color=colour, marker=marker, zorder=2, clip_on=False)
            ax.annotate(f"{m:.3f} (off the axis)", (edge, y), fontsize=7,
                        xytext=(8 if m < lo else -80, -3), textcoords="offset points")
    if floor and any(_worse(m, floor["mean"], metric) for m in means):
        ax.scatter([], [], color="tab:red", label="below the trivial floor")
    if floor:
        f = floor["mean"]
        shown = lo <= f <= hi
        ax.axvline(f if shown else lo, color="tab:red", ls="--", lw=1,
                   label=f"trivial floor {f:.3f}" + ("" if shown else " (off the axis)"),
                   alpha=1 if shown else 0)
    if best_raw is not None and lo <= means[best_raw] <= hi:
        ax.axvline(means[best_raw], color="tab:orange", ls=":", lw=1.5,
                   label=f"best raw baseline {means[best_raw]:.3f}: "
                   f"{rows[names[best_raw]]['label']}")
    ax.set_xlim(lo, hi)
    ax.set_yticks(ys, [rows[n]["label"] for n in names], fontsize=8)
    ax.invert_yaxis()
    better = "lower" if lower_is_better(metric) else "higher"
    seeds = len(result.seeds)
    ax.set_xlabel(f"{metric} ({better} is better)" + (f"; mean ± std over {seeds} seeds"
                                                       if seeds > 1 else "; one seed"))
    ax.set_title(f"{result.dataset}: {target} ({t.task}, probe {t.probe})", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.55 / (
            0.36 * len(names) + 2.3)), ncol=1, frameon=False)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def write_plots(result: BenchResult, rows: dict[str, Any], out: Path) -> list[str]:
    """Metric per method (dots, reference lines), loss curves, the 2-D projection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    targets = result.spec.evaluate.targets if result.spec.evaluate else {}
    for target, t in targets.items():
        metric = HEADLINE.get(t.task)
        fig = _metric_plot(plt, result, rows, target, t, metric) if metric else None
        if fig is not None:
            files.append(_save(fig, out, f"{target}_{metric}.png"))
            plt.close(fig)
    if any(result.histories.values()):
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, history in result.histories.items():
            if history:
                ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (sum of terms)")
        ax.set_yscale("log")
        ax.set_title(f"{result.dataset}: training loss per epoch (seed 0)", fontsize=10)
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_save(fig, out, "loss_curves.png"))
        plt.close(fig)
    if result.projection:
        p = result.projection
        xy = np.asarray(p["xy"])
        labels = np.asarray(p["labels"])
        fig, ax = plt.subplots(figsize=(7, 5.5))
        for label in dict.fromkeys(labels.tolist()):
            sel = labels == label
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, label=f"{label} ({sel.sum()})")
        explained = p.get("explained") or [float("nan")] * 2
        ax.set_xlabel(f"PC1 ({explained[0]:.1%} of the variance)")
        ax.set_ylabel(f"PC2 ({explained[1]:.1%} of the variance)")
        ax.set_title(f"{result.dataset}: {p.get('row', 'MMEDA-II')}\nembeddings of "
                     f"{p['entity']} (PCA, seed 0), coloured by {p['target']}", fontsize=9)
        ax.legend(markerscale=3, fontsize=7, loc="best")
        fig.tight_layout()
        files.append(_save(fig, out, "projection.png"))
        plt.close(fig)
    return files

"""The benchmark's outputs: ``results.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

import mmfuse
from mmfuse.bench.runner import BenchResult

PUBLISHED = Path(__file__).resolve().parents[2] / "benchmarks" / "published_goodreads.json"
LOWER_IS_BETTER = {"mse"}


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
            "n": int(len(arr))}


def aggregate(result: BenchResult) -> dict[str, Any]:
    """Mean ± std over seeds of every metric of every row."""
    rows = {}
    for name, row in result.rows.items():
        targets: dict[str, dict[str, dict[str, float]]] = {}
        for run in row["runs"]:
            for target, metrics in run["targets"].items():
                for metric, value in metrics.items():
                    targets.setdefault(target, {}).setdefault(metric, []).append(value)
        resources = {k: _stats([r[k] for r in row["runs"] if r.get(k) is not None])
                     for k in ("train_seconds", "samples_per_second", "peak_rss_mib")
                     if any(r.get(k) is not None for r in row["runs"])}
        rows[name] = {"label": row["label"], "skipped": row["skipped"],
                      "published": row["published"], "resources": resources,
                      "targets": {t: {m: _stats(v) for m, v in ms.items()}
                                  for t, ms in targets.items()}}
    return rows


def published_numbers(dataset: str) -> dict[str, dict[str, float]]:
    if dataset != "goodreads" or not PUBLISHED.is_file():
        return {}
    return json.loads(PUBLISHED.read_text())["rows"]


def _cell(s: dict[str, float] | None, fmt: str = ".4f") -> str:
    if not s:
        return "—"
    mean, std = format(s["mean"], fmt), format(s["std"], fmt)
    return f"{mean} ± {std}" if s["n"] > 1 else mean


def write_report(result: BenchResult, out: Path, command: str) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    rows = aggregate(result)
    published = published_numbers(result.dataset)
    payload = {
        "dataset": result.dataset, "command": command, "seeds": result.seeds,
        "quick": result.quick, "spec": result.spec.dump(), "rows": rows,
        "published": published, "histories": result.histories,
        "versions": {"mmfuse": mmfuse.__version__, "python": platform.python_version()},
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    plots = write_plots(result, rows, out)
    (out / "report.md").write_text(render_markdown(result, rows, published, command, plots))
    return payload


def render_markdown(result: BenchResult, rows: dict[str, Any], published: dict[str, Any],
                    command: str, plots: list[str]) -> str:
    spec = result.spec
    quick = "  \nQuick mode: few epochs, a smoke test, not for conclusions." if result.quick else ""
    lines = [f"# mmfuse bench: {result.dataset}", "",
             f"Command: `{command}`  ", f"Seeds: {len(result.seeds)} "
             f"(mean ± sample std over seeds; model seed and split seed both vary){quick}", "",
             f"Data: {result.dataset_message or spec.name}", ""]
    for target, t in spec.evaluate.targets.items():
        metric_names = sorted({m for r in rows.values() for m in r["targets"].get(target, {})})
        header = ["method", *metric_names]
        show_published = bool(published) and t.probe in ("random_forest", "linear")
        if show_published:
            header.append("published (paper, not measured)")
        lines += [f"## {target}: {t.task}, probe `{t.probe}` {dict(t.params) or ''}", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in rows.values():
            if row["skipped"]:
                continue
            metrics = row["targets"].get(target)
            if not metrics:
                continue
            cells = [row["label"], *(_cell(metrics.get(m)) for m in metric_names)]
            if show_published:
                pub = published.get(row["published"] or "", {})
                key = "f1" if t.task == "classification" else "mse"
                cells.append(f"{key} {pub[key]:.4f}" if key in pub else "")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if any(r["label"].startswith("supervised") for r in rows.values() if not r["skipped"]):
        lines += ["The supervised MLP rows are the MLP's own test predictions (trained on the "
                  "train split's labels, the paper's baseline), so they repeat under every probe "
                  "of a target; their time is the MLP's fit over all targets.", ""]
    lines += ["## Cost", "", "| method | train s | samples/s | peak RSS MiB |", "|---|---|---|---|"]
    for row in rows.values():
        res = row["resources"]
        if row["skipped"] or not res:
            continue
        lines.append(f"| {row['label']} | {_cell(res.get('train_seconds'), '.1f')} | "
                     f"{_cell(res.get('samples_per_second'), '.0f')} | "
                     f"{_cell(res.get('peak_rss_mib'), '.0f')} |")
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


def write_plots(result: BenchResult, rows: dict[str, Any], out: Path) -> list[str]:
    """Metric per method with error bars, loss curves, the 2-D projection."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for target, t in result.spec.evaluate.targets.items():
        metric = {"classification": "accuracy", "regression": "r2"}.get(t.task)
        names = [n for n, r in rows.items() if not r["skipped"] and metric
                 and metric in r["targets"].get(target, {})]
        if not names:
            continue
        means = [rows[n]["targets"][target][metric]["mean"] for n in names]
        stds = [rows[n]["targets"][target][metric]["std"] for n in names]
        fig, ax = plt.subplots(figsize=(8, 0.4 * len(names) + 1.2))
        ax.barh(range(len(names)), means, xerr=stds, color="tab:blue", alpha=0.8)
        ax.set_yticks(range(len(names)), [rows[n]["label"] for n in names], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric} ({target}, probe {t.probe})")
        fig.tight_layout()
        files.append(f"{target}_{metric}.png")
        fig.savefig(out / files[-1], dpi=110)
        plt.close(fig)
    if result.histories:
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, history in result.histories.items():
            if history:
                ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (sum of terms)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        files.append("loss_curves.png")
        fig.savefig(out / files[-1], dpi=110)
        plt.close(fig)
    if result.projection:
        p = result.projection
        xy = np.asarray(p["xy"])
        labels = np.asarray(p["labels"])
        fig, ax = plt.subplots(figsize=(6, 5))
        for label in np.unique(labels):
            sel = labels == label
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, label=str(label))
        ax.set_title(f"MMEDA-II embeddings of {p['entity']} (PCA), coloured by {p['target']}")
        ax.legend(markerscale=3, fontsize=7)
        fig.tight_layout()
        files.append("projection.png")
        fig.savefig(out / files[-1], dpi=110)
        plt.close(fig)
    return files

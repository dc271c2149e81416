"""`mmfuse bench --quick` on tiny settings: every row present or saying why not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from mmfuse.cli import app

REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_writes_report_results_and_plots(tmp_path):
    (tmp_path / "specs").mkdir()
    spec = tmp_path / "specs" / "goodreads.yaml"
    shutil.copy(REPO / "specs" / "goodreads.yaml", spec)
    out = tmp_path / "bench"
    args = ["bench", "--dataset", "goodreads", "--spec", str(spec), "--quick", "--seeds", "2",
            "--methods", "best,mmeda2,convae_mf,pretrained_mf_resnet18,cmf_efficientnet_lite0,"
            "mlp_efficientnet_lite0,cmfrec_efficientnet_lite0",
            "--set", "dataset.params.n_books=80", "--set", "train.epochs=1",
            "--set", "evaluate.baseline_dim=8", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert rows["mmeda2"]["targets"]["genre"]["accuracy"]["n"] == 2  # two seeds
    assert rows["best"]["skipped"] is None and rows["best"]["targets"]["genre"]["f1"]["n"] == 2
    assert rows["best"]["targets"]["rating"] != rows["mmeda2"]["targets"]["rating"]
    assert rows["convae_mf"]["targets"]["rating"]["mse"]["n"] == 2
    assert rows["floor"]["targets"]["genre"]["recall"]["mean"] == 1.0  # majority is fiction
    assert {"raw_cover", "raw_description", "raw_concat"} <= set(rows)
    assert "resnet18-f37072fd.pth is missing" in rows["pretrained_mf_resnet18"]["skipped"]
    assert rows["mmeda2"]["resources"]["train_seconds"]["mean"] > 0
    for name in ("cmf_efficientnet_lite0", "mlp_efficientnet_lite0",
                 "cmfrec_efficientnet_lite0"):
        assert rows[name]["skipped"] is None, rows[name]["skipped"]
        assert rows[name]["targets"]["genre"]["f1"]["n"] == 2
    report = (out / "report.md").read_text()
    assert "SYNTHETIC" in report
    assert "published (paper, not measured)" in report and "f1 0.7727" in report
    assert "Rows not run" in report
    for png in ("genre_accuracy.png", "loss_curves.png", "projection.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

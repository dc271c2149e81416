"""benchmarks/view_codes.py: the probe from the fused representation, without each view,
from each view's own code and from the raw views, on a trained run."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "view_codes.py"


def test_view_codes_probes_every_code_of_the_target_entity(trained_run, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(trained_run), "--repeats", "2"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()
            if line.startswith("| ") and "---" not in line and "features" not in line}
    assert set(rows) == {"fused representation", "fused, without cover",
                         "fused, without text", "fused, without ratings",
                         "code of cover.tensor", "code of text.row", "code of ratings.col",
                         "raw text", "PCA-8 of raw text (standardised)"}
    for line in rows.values():  # label (logistic): accuracy, mean ± std over the 2 splits
        mean = float(line.split(" | ")[3].split(" ± ")[0])
        assert 0.0 <= mean <= 1.0 and "accuracy" in line

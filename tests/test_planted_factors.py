"""benchmarks/planted_factors.py: the planted factors a run's book embedding holds, and with
``--spec`` the genre's ceiling under the logistic probe, on a small synthetic sample."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
SCRIPT = ROOT / "benchmarks" / "planted_factors.py"


def _rows(text: str) -> dict[str, list[str]]:
    return {cells[0]: cells[1:] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line and "features" not in line
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}


def test_planted_factors_and_the_genre_ceiling(tmp_path, monkeypatch, capsys):
    from mmfuse_goodreads.sample import make_sample

    data = tmp_path / "data" / "goodreads"
    make_sample(data, n_books=400, image_size=16)
    spec = (ROOT / "specs" / "goodreads.yaml").read_text()
    spec = (spec.replace("n_books: 5000", "n_books: 400, image_size: 16")
            .replace("[3, 64, 64]", "[3, 16, 16]"))
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "goodreads.yaml").write_text(spec)
    module = runpy.run_path(str(SCRIPT))
    latent = module["planted"](data)
    run = tmp_path / "run"  # a "run" whose embedding is the planted factors themselves
    (run / "embeddings").mkdir(parents=True)
    np.save(run / "embeddings" / "book.npy", latent.astype(np.float32))
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), str(run), "--data", str(data),
                                      "--spec", str(tmp_path / "specs" / "goodreads.yaml")])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    assert done.value.code == 0
    factors, genre = capsys.readouterr().out.split("genre (logistic probe")
    r2 = {name: [float(v) for v in cells] for name, cells in _rows(factors).items()}
    assert min(r2[str(run)]) > 0.95  # every factor read back from itself
    cover_only = [0, 1, 5]  # hue, stripes, disk: nothing of them is in the text
    assert max(r2["raw description"][j] for j in cover_only) < 0.2
    assert min(r2["raw description"][j] for j in (2, 3, 6, 7)) > 0.3
    accuracy = {name: float(cells[0].split(" ± ")[0]) for name, cells in _rows(genre).items()}
    assert set(accuracy) == {"exact genre factors u0-u4",
                             "exact cover factors (u0, u1, u4) + raw description",
                             "raw description", str(run)}
    assert (accuracy["exact genre factors u0-u4"]
            > accuracy["exact cover factors (u0, u1, u4) + raw description"]
            > accuracy["raw description"])

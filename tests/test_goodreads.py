"""The `goodreads` dataset plugin and the built-in default spec, on a small sample."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmfuse.api import train
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec

REPO = Path(__file__).resolve().parents[1]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file()}


def test_sample_is_deterministic_balanced_and_aligned(tmp_path):
    goodreads = get_plugins().datasets.get("goodreads")
    params = {"n_books": 500, "image_size": 16}
    message = goodreads.ensure(tmp_path / "a", params)
    goodreads.ensure(tmp_path / "b", params)
    assert "SYNTHETIC" in message
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    root = tmp_path / "a"
    ids = (root / "book_ids.txt").read_text().split()
    assert len(ids) == len(set(ids)) == 500
    fiction = np.load(root / "is_fiction.npy")
    assert fiction.sum() == round(500 * 3188 / 5000)
    assert np.load(root / "covers.npy", mmap_mode="r").shape == (500, 3, 16, 16)
    assert len((root / "descriptions.txt").read_text(encoding="utf-8").splitlines()) == 500
    rating = np.load(root / "average_rating.npy")
    assert rating.shape == (500,) and rating.min() >= 1 and rating.max() <= 5
    assert json.loads((root / "manifest.json").read_text())["source"] == "synthetic"


def test_sample_is_rewritten_when_params_change_but_never_over_foreign_files(tmp_path):
    goodreads = get_plugins().datasets.get("goodreads")
    goodreads.ensure(tmp_path / "d", {"n_books": 50, "image_size": 16})
    goodreads.ensure(tmp_path / "d", {"n_books": 60, "image_size": 16})
    assert len((tmp_path / "d" / "book_ids.txt").read_text().split()) == 60
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds other files"):
        goodreads.ensure(tmp_path / "mine", {"n_books": 50})
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="unknown params"):
        goodreads.ensure(tmp_path / "d", {"books": 50})


def test_default_spec_trains_on_a_small_sample(tmp_path):
    """specs/goodreads.yaml as shipped (its data folder relocated under tmp_path)."""
    (tmp_path / "specs").mkdir()
    spec_path = tmp_path / "specs" / "goodreads.yaml"
    shutil.copy(REPO / "specs" / "goodreads.yaml", spec_path)
    spec = load_spec(spec_path, ["dataset.params.n_books=150", "train.epochs=1"])
    result = train(spec, tmp_path / "run")
    assert "SYNTHETIC" in result.built.data.dataset_message
    z = np.load(tmp_path / "run" / "embeddings" / "book.npy")
    assert z.shape == (150, 50)
    assert np.load(tmp_path / "run" / "embeddings" / "w2v_dim.npy").shape == (100, 50)
    targets = result.evaluation["targets"]
    assert targets["genre"]["params"] == {"max_depth": 2, "random_state": 0}
    assert targets["genre"]["n_test"] == 30 and targets["rating"]["probe"] == "linear"

"""Held-out cells (evaluate.holdout): the split, the metrics beside the baselines, and
`mmfuse predict` for known and new rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from mmfuse.api import train
from mmfuse.cli import app
from mmfuse.data import load_data
from mmfuse.errors import SpecError
from mmfuse.holdout import ranking_metrics, split_view
from mmfuse.plugins import get_plugins
from mmfuse.predict import CellModel
from mmfuse.spec import HoldoutSpec, load_spec

N_U, N_I, RANK = 300, 120, 4


def write_ratings(folder: Path, density: float = 0.25, bernoulli: bool = False,
                  seed: int = 0) -> Path:
    """A planted rank-4 users × items matrix (sparse .npz) and a users' profile (dense .npy
    carrying the users' factors: side information), and a spec holding out its cells."""
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal((N_U, RANK)), rng.standard_normal((N_I, RANK))
    mask = rng.random((N_U, N_I)) < density
    rows, cols = np.nonzero(mask)
    score = np.einsum("ij,ij->i", u[rows], v[cols]) / np.sqrt(RANK)
    if bernoulli:  # links where the planted score is high
        keep = score > 0.5
        rows, cols, values = rows[keep], cols[keep], np.ones(keep.sum())
    else:
        values = 3 + score + 0.1 * rng.standard_normal(len(rows))
    folder.mkdir(parents=True, exist_ok=True)
    sp.save_npz(folder / "ratings.npz", sp.csr_matrix((values, (rows, cols)),
                                                      shape=(N_U, N_I)).astype(np.float32))
    profile = u @ rng.standard_normal((RANK, 12)) + 0.05 * rng.standard_normal((N_U, 12))
    np.save(folder / "profile.npy", profile.astype(np.float32))
    likelihood = "bernoulli" if bernoulli else "gaussian"
    (folder / "spec.yaml").write_text(f"""\
name: holdout
seed: 0
entities: {{user: {{size: {N_U}}}, item: {{size: {N_I}}}}}
views:
  ratings: {{rows: user, cols: item, source: {{reader: npz, path: ratings.npz}},
            likelihood: {likelihood}}}
  profile: {{rows: user, source: {{reader: npy, path: profile.npy}}}}
model: {{dim: 8}}
train: {{epochs: 12, batch_size: 32, device: cpu, tol: 0.0, optimizer: {{lr: 0.01}}}}
evaluate:
  holdout: {{views: [ratings], fraction: 0.2, seed: 3}}
""")
    return folder / "spec.yaml"


# ---------------------------------------------------------------------- the split


@pytest.mark.parametrize("by", ["cells", "rows"])
def test_a_sparse_split_partitions_the_stored_cells(by):
    rng = np.random.default_rng(0)
    m = sp.random(50, 40, density=0.3, random_state=1, format="csr", dtype=np.float32)
    m.data[:] = rng.standard_normal(m.nnz)
    h = HoldoutSpec(views=["v"], fraction=0.25, seed=1, by=by)
    train_m, mask, held = split_view("v", m, None, h)
    assert mask is None and train_m.nnz + len(held) == m.nnz
    dense = m.toarray()
    np.testing.assert_array_equal(held.values, dense[held.rows, held.cols])
    train_dense = sp.csr_array(train_m).toarray()
    assert (train_dense[held.rows, held.cols] == 0).all()  # none left in training
    restored = train_dense.copy()
    restored[held.rows, held.cols] = held.values
    np.testing.assert_array_equal(restored, dense)
    if by == "cells":
        assert len(held) == round(0.25 * m.nnz)
    else:  # whole rows: no held-out row keeps a training cell
        held_rows = np.unique(held.rows)
        assert sp.csr_array(train_m)[held_rows].nnz == 0
        assert len(held_rows) == round(0.25 * len(np.unique(m.nonzero()[0])))
    again = split_view("v", m, None, h)[2]
    np.testing.assert_array_equal(again.rows, held.rows)  # seeded: the same cells


def test_a_dense_split_masks_the_held_cells_and_keeps_the_data():
    x = np.arange(60, dtype=np.float32).reshape(10, 6)
    x[0, 0] = np.nan  # missing: never held out
    h = HoldoutSpec(views=["v"], fraction=0.3)
    data, mask, held = split_view("v", x, None, h)
    assert data is x and len(held) == round(0.3 * 59)
    assert not mask[0, 0] and not mask[held.rows, held.cols].any()
    assert mask.sum() == 59 - len(held)
    np.testing.assert_array_equal(held.values, x[held.rows, held.cols])


def test_held_out_cells_are_not_in_the_training_data(tmp_path):
    spec = load_spec(write_ratings(tmp_path))
    data = load_data(spec, get_plugins())
    full = sp.load_npz(tmp_path / "ratings.npz")
    held = data.held["ratings"]
    matrix = data.views["ratings"]
    assert matrix.nnz == full.nnz - len(held) and len(held) == round(0.2 * full.nnz)
    assert (matrix.csr.toarray()[held.rows, held.cols] == 0).all()
    # the intercept's start, the scaling and the encoders only see the training cells
    train_mean = (full.sum() - held.values.sum()) / matrix.nnz
    assert matrix.observed_mean() == pytest.approx(train_mean, rel=1e-5)


def test_validate_says_how_many_cells_are_held_out(tmp_path):
    path = write_ratings(tmp_path)
    out = CliRunner().invoke(app, ["validate", str(path)])
    assert out.exit_code == 0, out.output
    held = round(0.2 * sp.load_npz(tmp_path / "ratings.npz").nnz)
    assert f"held out: {held:,} cells of ratings" in out.output


def test_ranking_metrics_by_hand():
    scores = np.array([[0.9, 0.1, 0.5, -np.inf], [0.2, 0.8, 0.3, 0.1]])
    # row 0: held column 2 ranks 2nd; row 1: held 0 and 3 rank 3rd and 4th
    m = ranking_metrics(scores, [np.array([2]), np.array([0, 3])], k=2)
    assert m["recall@2"] == pytest.approx((1 + 0) / 2)
    assert m["ndcg@2"] == pytest.approx((1 / np.log2(3) + 0) / 2)
    assert m["mrr"] == pytest.approx((1 / 2 + 1 / 3) / 2)


@pytest.mark.parametrize(("sets", "message"), [
    (["evaluate.holdout.views=[nope]"], "unknown view 'nope'"),
    (["evaluate.holdout.views=[profile]"], "feature view"),
    (["views.ratings.terms.factor=false"], "factor term switched off"),
])
def test_holdout_mistakes_are_spec_errors(tmp_path, sets, message):
    from mmfuse.graph import build_graph

    spec = load_spec(write_ratings(tmp_path), sets)
    with pytest.raises(SpecError, match=message):
        build_graph(spec)


def test_an_evaluate_section_needs_targets_or_holdout(tmp_path):
    path = write_ratings(tmp_path)
    with pytest.raises(SpecError, match="targets.*holdout"):
        load_spec(path, ["evaluate.holdout=null"])


# ---------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gaussian")
    result = train(load_spec(write_ratings(folder / "data")), folder / "run")
    return result


def test_held_out_metrics_beat_the_classic_baselines(gaussian_run):
    ev = gaussian_run.evaluation
    methods = ev["holdout"]["ratings"]
    assert {"mmfuse", "global mean", "biases", "svd"} <= set(methods)
    assert set(methods["mmfuse"]) == {"rmse", "mae", "r2"}
    assert methods["mmfuse"]["rmse"] < 0.9 * methods["biases"]["rmse"]
    assert methods["mmfuse"]["rmse"] < methods["global mean"]["rmse"]
    assert methods["mmfuse"]["r2"] > 0.3
    split = ev["holdout_split"]["ratings"]
    assert split["n_test"] == len(gaussian_run.built.data.held["ratings"])
    run = gaussian_run.run
    assert run.holdout_file("ratings").is_file()  # kept in the run folder
    written = json.loads(run.evaluation_file.read_text())
    assert written["holdout"]["ratings"]["mmfuse"] == pytest.approx(methods["mmfuse"])


def test_evaluate_command_reproduces_the_held_out_metrics(gaussian_run):
    before = gaussian_run.evaluation["holdout"]["ratings"]
    out = CliRunner().invoke(app, ["evaluate", str(gaussian_run.run.root)])
    assert out.exit_code == 0, out.output
    assert "held-out cells" in out.output and "biases" in out.output
    after = json.loads(gaussian_run.run.evaluation_file.read_text())["holdout"]["ratings"]
    assert after["mmfuse"] == pytest.approx(before["mmfuse"])


def test_sparse_links_get_auc_and_ranking_metrics(tmp_path):
    spec = load_spec(write_ratings(tmp_path / "data", density=0.3, bernoulli=True),
                     ["train.epochs=40"])  # 10 steps an epoch
    ev = train(spec, tmp_path / "run").evaluation
    methods = ev["holdout"]["ratings"]
    assert {"roc_auc", "auprc", "recall@10", "ndcg@10", "mrr"} <= set(methods["mmfuse"])
    assert methods["global mean"]["roc_auc"] == pytest.approx(0.5)
    assert methods["mmfuse"]["roc_auc"] > 0.7  # 0.78 measured; svd 0.65, biases 0.58
    assert methods["mmfuse"]["roc_auc"] > methods["svd"]["roc_auc"] > methods["biases"][
        "roc_auc"]
    assert methods["mmfuse"]["recall@10"] > methods["biases"]["recall@10"]
    assert ev["holdout_split"]["ratings"]["n_negatives"] == ev["holdout_split"]["ratings"][
        "n_test"]


# ---------------------------------------------------------------------- predict


def test_predict_cells_and_top_k_for_known_rows(gaussian_run, tmp_path):
    run = gaussian_run.run
    model = CellModel.from_run(run)
    out = tmp_path / "cells.csv"
    res = CliRunner().invoke(app, ["predict", str(run.root), "--view", "ratings",
                                   "--rows", "3,7", "--cols", "1", "--cols", "2",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert lines[0] == "user,item,prediction" and len(lines) == 5
    expected = model.cells("ratings", np.array([3, 3, 7, 7]), np.array([1, 2, 1, 2]))
    got = [float(line.split(",")[2]) for line in lines[1:]]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    top = tmp_path / "top.parquet"
    res = CliRunner().invoke(app, ["predict", str(run.root), "--view", "ratings",
                                   "--rows", "3", "--top", "5", "--out", str(top)])
    assert res.exit_code == 0, res.output
    import pandas as pd

    frame = pd.read_parquet(top)
    assert list(frame["rank"]) == [1, 2, 3, 4, 5]
    assert frame["prediction"].is_monotonic_decreasing
    trained = gaussian_run.built.data.views["ratings"].csr
    seen = set(trained[[3]].indices.tolist())
    assert not seen & {int(c) for c in frame["item"]}  # training cells are excluded
    scores = model.cells("ratings", np.full(N_I, 3), np.arange(N_I))
    scores[list(seen)] = -np.inf
    assert int(frame["item"][0]) == int(np.argmax(scores))


def test_predict_new_rows_from_their_data(gaussian_run, tmp_path):
    """A new row given by its views goes through the encoders: given a known row's data it
    predicts what that row predicts."""
    run = gaussian_run.run
    data = gaussian_run.built.data
    folder = Path(gaussian_run.run.root).parent / "data"
    full = sp.load_npz(folder / "ratings.npz").tocsr()
    held = data.held["ratings"]
    row = full[[5]].toarray()
    row[0, held.cols[held.rows == 5]] = 0  # as trained: without its held-out cells
    sp.save_npz(tmp_path / "r.npz", sp.csr_matrix(row))
    np.save(tmp_path / "p.npy", np.load(folder / "profile.npy")[[5]])
    (tmp_path / "ids.txt").write_text("newbie\n")
    out = tmp_path / "new.csv"
    res = CliRunner().invoke(app, ["predict", str(run.root), "--view", "ratings",
                                   "--data", f"ratings={tmp_path / 'r.npz'}",
                                   "--data", f"profile={tmp_path / 'p.npy'}",
                                   "--ids", str(tmp_path / "ids.txt"), "--cols", "0,1,2",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in lines] == ["newbie"] * 3
    known = CellModel.from_run(run).cells("ratings", np.full(3, 5), np.arange(3))
    np.testing.assert_allclose([float(line.split(",")[2]) for line in lines], known,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--rows", "nope", "--top", "2"], "not of entity 'user'"),
    (["--rows", "1"], "either --cols"),
    (["--top", "2"], "known rows"),
    (["--rows", "1", "--top", "2", "--view", "profile"], "not a matrix view"),
])
def test_predict_mistakes_are_clear(gaussian_run, args, message):
    view = [] if "--view" in args else ["--view", "ratings"]
    res = CliRunner().invoke(app, ["predict", str(gaussian_run.run.root), *view, *args])
    assert res.exit_code != 0 and message in res.output, res.output

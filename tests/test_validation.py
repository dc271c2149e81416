"""Model selection without labels (train.validation): cells kept out of training, scored
every epoch; the stopping rule reads their loss; the best epoch's weights are the run's."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_holdout import write_ratings
from test_training import KillAfter

from mmfuse.api import train
from mmfuse.build import build
from mmfuse.data import load_data
from mmfuse.errors import SpecError
from mmfuse.holdout import VALIDATION_STREAM, split_view, validation_split
from mmfuse.plugins import get_plugins
from mmfuse.run import RunDir
from mmfuse.spec import load_spec
from mmfuse.training import Validation, embed_all

FAST = ["train.threads=1", "train.validation=0.25"]
HOLDOUT = "evaluate.holdout={views: [ratings, text], fraction: 0.2, seed: 0}"


def cell_set(rows, cols) -> set[tuple[int, int]]:
    return set(zip(np.asarray(rows).tolist(), np.asarray(cols).tolist(), strict=True))


def test_validation_cells_leave_training_and_never_meet_the_held_out_ones(multiview):
    spec = load_spec(multiview, [*FAST, HOLDOUT, "model.preset=mmfuse"])
    data = load_data(spec, get_plugins())
    assert set(data.validation) == {"text", "ratings", "cooc"}  # every view with a factor term
    full = sp.load_npz(multiview.parent / "ratings.npz").toarray()
    val, held = data.validation["ratings"], data.held["ratings"]
    train_csr = data.views["ratings"].csr
    training = cell_set(*train_csr.nonzero())
    v, h = cell_set(val.rows, val.cols), cell_set(held.rows, held.cols)
    assert len(v) == len(val) and v and not v & h and not v & training
    assert training | v | h == cell_set(*np.nonzero(full))  # a partition of the stored cells
    assert len(val) == round(0.25 * (len(training) + len(val)))  # a share of what was left
    np.testing.assert_allclose(val.values, full[val.rows, val.cols], rtol=1e-6)
    # a dense view: its validation cells are masked out of every read, and its scale
    # statistics (scale: standard under mmfuse) come from its training cells alone
    text = np.load(multiview.parent / "text.npy")
    store, val, held = data.views["text"], data.validation["text"], data.held["text"]
    assert not cell_set(val.rows, val.cols) & cell_set(held.rows, held.cols)
    values, mask = store.rows(np.arange(store.shape[0]))
    assert not mask[val.rows, val.cols].any() and not values[val.rows, val.cols].any()
    assert mask.sum() + len(val) + len(held) == text.size
    kept = np.where(mask, text, np.nan)
    np.testing.assert_allclose(store.center, np.nanmean(kept, axis=0), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(val.values, text[val.rows, val.cols])
    # the validation split's generator is not the held-out split's, under the same seed
    split = validation_split(spec)
    cooc = np.load(multiview.parent / "cooc.npy")
    plain = split_view("cooc", cooc, None, split)[2]
    own = split_view("cooc", cooc, None, split, stream=(VALIDATION_STREAM,))[2]
    assert cell_set(plain.rows, plain.cols) != cell_set(own.rows, own.cols)
    cooc_val = data.validation["cooc"]
    assert cell_set(own.rows, own.cols) == cell_set(cooc_val.rows, cooc_val.cols)


def test_a_sparse_0_1_view_is_validated_against_as_many_cells_without_a_link(tmp_path):
    spec = load_spec(write_ratings(tmp_path, bernoulli=True), FAST)
    built = build(spec, get_plugins(), "cpu")
    rows, cols, values = Validation(built).cells["ratings"]
    val, held = built.data.validation["ratings"], built.data.held["ratings"]
    assert len(values) == 2 * len(val) and (values[:len(val)] == 1).all()
    assert (values[len(val):] == 0).all()
    negatives = cell_set(rows[len(val):], cols[len(val):])
    assert len(negatives) == len(val)  # distinct
    links = cell_set(*built.data.views["ratings"].csr.nonzero())
    links |= cell_set(val.rows, val.cols) | cell_set(held.rows, held.cols)
    assert not negatives & links


def test_validation_needs_a_view_with_a_factor_term(multiview):
    spec = load_spec(multiview, [*FAST, "model.terms={factor: false}"])
    with pytest.raises(SpecError) as caught:
        load_data(spec, get_plugins())
    issue = next(i for i in caught.value.issues if i.loc[:2] == ("train", "validation"))
    assert "factor term" in issue.message and "cols:" in issue.message
    load_data(load_spec(multiview, ["model.terms={factor: false}"]), get_plugins())  # off: fine


def test_val_loss_is_the_factor_term_at_the_validation_cells(multiview, tmp_path):
    # mmfuse: dense views standardised, terms divided by the null deviance, view dropout
    result = train(load_spec(multiview, [*FAST, "train.epochs=2", "model.preset=mmfuse"]),
                   tmp_path / "run", evaluate=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert {"val_loss", "val.text", "val.ratings", "val.cooc"} <= set(rows[0])
    last = result.trainer.history[-1]
    assert last["val_loss"] == pytest.approx(last["val.text"] + last["val.ratings"]
                                             + last["val.cooc"])
    # recomputed from every instance's embedding under the last epoch's weights
    built = build(result.built.spec, get_plugins(), "cpu")
    RunDir(tmp_path / "run").load_checkpoint(model=built.model, last=True)
    z = {e: torch.from_numpy(embed_all(built, e)) for e in built.spec.entities}
    assert {"text", "cooc"} == {v for v in built.data.validation
                                if built.data.views[v].center is not None}
    for view, cells in built.data.validation.items():
        r, c = built.spec.views[view].rows, built.spec.views[view].cols
        store, values = built.data.views[view], cells.values
        if store.center is not None:  # in the units the model was trained in
            values = (values - store.center[cells.cols]) / store.spread[cells.cols]
        with torch.no_grad():
            pred = (z[r][cells.rows] * z[c][cells.cols]).sum(-1) + built.model.factor_bias[view]
            loss = built.model._nll(view, pred, torch.from_numpy(values.astype(np.float32)))
        assert last[f"val.{view}"] == pytest.approx(float(loss), rel=1e-5)


def planted(monkeypatch, losses):
    """Validation.score reporting ``losses`` epoch after epoch (the real views' keys)."""
    calls = iter(losses)

    def score(self, built):
        out = {f"val.{v}": 0.0 for v in self.cells}
        out["val_loss"] = next(calls)
        return out

    monkeypatch.setattr(Validation, "score", score)


def test_the_stopping_rule_reads_the_validation_loss(multiview, tmp_path, monkeypatch):
    # the training loss alone never stalls under tol 0; the validation loss rises after
    # epoch 3: two epochs without a better one (patience 2) stop the run
    planted(monkeypatch, [5.0, 4.0, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5])
    sets = [*FAST, "train.epochs=8", "train.tol=0", "train.patience=2"]
    result = train(load_spec(multiview, sets), tmp_path / "up", evaluate=False)
    assert result.trainer.converged and result.trainer.epoch == 5
    assert result.trainer.best_epoch == 3
    manifest = json.loads((tmp_path / "up" / "manifest.json").read_text())["training"]
    assert (manifest["best_epoch"], manifest["best_val_loss"]) == (3, 3.0)
    # the embeddings are the best epoch's, not the last one's
    run = RunDir(tmp_path / "up")
    assert torch.load(run.best_checkpoint_file, weights_only=True)["epoch"] == 3
    built = build(result.built.spec, get_plugins(), "cpu")
    run.load_checkpoint(model=built.model)  # the run's model: the best weights
    best = embed_all(built, "book")
    np.testing.assert_array_equal(np.load(run.embeddings_dir / "book.npy"), best)
    run.load_checkpoint(model=built.model, last=True)
    assert not np.array_equal(embed_all(built, "book"), best)
    # a validation loss that falls by more than tol every epoch never stalls, where the
    # training loss under the same rule does (it changes by less than 40 % an epoch)
    sets = ["train.threads=1", "train.epochs=4", "train.tol=0.4", "train.patience=1"]
    plain = train(load_spec(multiview, sets), tmp_path / "plain", evaluate=False)
    assert plain.trainer.converged and plain.trainer.epoch == 2
    planted(monkeypatch, [1.0, 0.5, 0.2, 0.1])
    result = train(load_spec(multiview, [*sets, "train.validation=0.25"]), tmp_path / "down",
                   evaluate=False)
    assert not result.trainer.converged and result.trainer.epoch == 4
    assert result.trainer.best_epoch == 4


def test_a_resumed_run_with_validation_matches_an_uninterrupted_one(multiview, tmp_path,
                                                                    monkeypatch):
    sets = [*FAST, "train.epochs=3", "train.optimizer.lr=0.01"]
    full = train(load_spec(multiview, sets), tmp_path / "full", evaluate=False)
    assert full.trainer.best_epoch == 3  # the last: the torn run below has no epoch to redo
    with pytest.raises(KeyboardInterrupt):
        train(load_spec(multiview, sets), tmp_path / "cut", callbacks=[KillAfter(2)],
              evaluate=False)
    resumed = train(load_spec(multiview, sets), tmp_path / "cut", resume=True, evaluate=False)
    # killed between the last checkpoint of the best epoch and its best checkpoint: the
    # resume writes the best one again from the last one (the same epoch's weights)
    save_best = RunDir.save_best

    def killed(self, state):
        if state["epoch"] == 3:
            raise KeyboardInterrupt
        save_best(self, state)

    monkeypatch.setattr(RunDir, "save_best", killed)
    with pytest.raises(KeyboardInterrupt):
        train(load_spec(multiview, sets), tmp_path / "torn", evaluate=False)
    monkeypatch.setattr(RunDir, "save_best", save_best)
    torn = RunDir(tmp_path / "torn")
    assert torn.best_epoch_saved() == 2
    assert torch.load(torn.checkpoint_file, weights_only=True)["best_epoch"] == 3
    repaired = train(load_spec(multiview, sets), tmp_path / "torn", resume=True,
                     evaluate=False)
    for other in (resumed, repaired):
        assert [{k: v for k, v in h.items() if k != "seconds"} for h in other.trainer.history
                ] == [{k: v for k, v in h.items() if k != "seconds"} for h in full.trainer.history]
        assert (other.trainer.best_epoch, other.trainer.best_val_loss) == (
            full.trainer.best_epoch, full.trainer.best_val_loss)
        for entity in ("book", "user", "word"):
            np.testing.assert_array_equal(
                np.load(other.run.embeddings_dir / f"{entity}.npy"),
                np.load(full.run.embeddings_dir / f"{entity}.npy"))
        a = torch.load(full.run.best_checkpoint_file, weights_only=True)
        b = torch.load(other.run.best_checkpoint_file, weights_only=True)
        assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k])
                                                for k in a["model"])

"""Training: repeatability to the bit, resume after a kill, convergence, run folder."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from mmfuse.api import train
from mmfuse.errors import MmfuseError
from mmfuse.plugin_api import Callback
from mmfuse.spec import load_spec
from mmfuse.training import StepTerms, TrainingError


def embeddings(run, entity="book"):
    return np.load(run / "embeddings" / f"{entity}.npy")


def test_same_spec_and_seed_give_identical_embeddings(multiview, tmp_path):
    spec = load_spec(multiview)
    train(spec, tmp_path / "a")
    train(load_spec(multiview), tmp_path / "b")
    for entity in ("book", "user", "word"):
        a, b = embeddings(tmp_path / "a", entity), embeddings(tmp_path / "b", entity)
        assert np.array_equal(a, b)
    train(load_spec(multiview, ["seed=1"]), tmp_path / "c")
    assert not np.array_equal(embeddings(tmp_path / "a"), embeddings(tmp_path / "c"))


class KillAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_one(
        multiview, tmp_path):
    full = train(load_spec(multiview, ["train.epochs=4"]), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(load_spec(multiview, ["train.epochs=4"]), tmp_path / "cut", callbacks=[KillAfter(2)])
    assert not (tmp_path / "cut" / "embeddings").exists()
    resumed = train(load_spec(multiview, ["train.epochs=4"]), tmp_path / "cut", resume=True)
    assert resumed.trainer.epoch == 4
    assert [h["epoch"] for h in resumed.trainer.history] == [1, 2, 3, 4]
    assert np.array_equal(embeddings(tmp_path / "full"), embeddings(tmp_path / "cut"))
    assert full.trainer.history[-1]["loss"] == resumed.trainer.history[-1]["loss"]


def test_resume_refuses_a_checkpoint_of_another_model(multiview, tmp_path):
    train(load_spec(multiview), tmp_path / "run")
    with pytest.raises(MmfuseError, match="different model"):
        train(load_spec(multiview, ["model.dim=4"]), tmp_path / "run", resume=True)


def test_training_stops_when_the_loss_stalls(multiview, tmp_path):
    result = train(load_spec(multiview, ["train.epochs=20", "train.tol=10", "train.patience=2"]),
                   tmp_path / "run")
    assert result.trainer.converged
    assert result.trainer.epoch == 3  # epoch 1 sets the baseline, 2 and 3 stall


def test_loss_decreases_and_run_folder_is_complete(multiview, tmp_path):
    result = train(load_spec(multiview, ["train.epochs=6", "train.optimizer.lr=0.01"]),
                   tmp_path / "run")
    run = tmp_path / "run"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 7))
    assert float(rows[-1]["loss"]) < 0.7 * float(rows[0]["loss"])
    for term in ("cover.tensor", "text.row", "text.col", "text.factor", "ratings.factor",
                 "cooc.row", "cooc.col", "cooc.factor"):
        assert term in rows[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["data"]["entities"] == {"book": 48, "user": 32, "word": 24}
    assert manifest["training"]["epochs_run"] == 6
    assert (run / "embeddings" / "book.ids.txt").read_text().split() == [
        f"b{i}" for i in range(48)]
    assert embeddings(run).shape == (48, 8)
    assert embeddings(run, "user").shape == (32, 8)
    assert set(result.evaluation["targets"]) == {"label", "score"}
    label = result.evaluation["targets"]["label"]
    assert set(label["metrics"]) == set(label["floor"]) == {
        "f1", "macro_f1", "accuracy", "precision", "recall", "f1_class_0", "f1_class_1",
        "roc_auc", "auprc"}


def test_balanced_terms_resume_to_the_bit_and_change_the_training(multiview, tmp_path):
    sets = ["train.epochs=3", "train.balance=true"]
    full = train(load_spec(multiview, sets), tmp_path / "full")
    assert set(full.trainer.term_scale) == {k for k in full.trainer.history[0]
                                            if k not in ("epoch", "loss", "seconds")}
    with pytest.raises(KeyboardInterrupt):
        train(load_spec(multiview, sets), tmp_path / "cut", callbacks=[KillAfter(1)])
    train(load_spec(multiview, sets), tmp_path / "cut", resume=True)
    assert np.array_equal(embeddings(tmp_path / "full"), embeddings(tmp_path / "cut"))
    plain = train(load_spec(multiview, ["train.epochs=3"]), tmp_path / "plain")
    assert plain.trainer.history[-1]["loss"] != full.trainer.history[-1]["loss"]


def test_a_resume_takes_the_new_learning_rate(multiview, tmp_path):
    """The checkpoint's optimiser state keeps its moments, not its learning rate: a resume
    with another lr (what the divergence message advises) trains with it."""
    train(load_spec(multiview, ["train.epochs=1"]), tmp_path / "run")
    resumed = train(load_spec(multiview, ["train.epochs=2", "train.optimizer.lr=0.0001"]),
                    tmp_path / "run", resume=True)
    lrs = {g["lr"] for opt in resumed.trainer.optimizer.parts for g in opt.param_groups}
    assert lrs == {0.0001}


class _Wrapper(torch.nn.Module):
    """What torch.compile returns: the model under ``_orig_mod`` (its names prefixed)."""

    def __init__(self, model):
        super().__init__()
        self._orig_mod = model

    def forward(self, *args, **kwargs):
        return self._orig_mod(*args, **kwargs)


def test_a_compiled_model_saves_and_resumes_under_its_own_names(multiview, tmp_path,
                                                                monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda model, **kw: _Wrapper(model))
    result = train(load_spec(multiview, ["train.epochs=1", "train.compile=true"]),
                   tmp_path / "run")
    assert isinstance(result.trainer.net, _Wrapper)  # the step did go through the wrapper
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert set(state["model"]) == set(result.built.model.state_dict())
    assert not any("_orig_mod" in k for k in state["model"])
    resumed = train(load_spec(multiview, ["train.epochs=2", "train.compile=true"]),
                    tmp_path / "run", resume=True)
    assert resumed.trainer.epoch == 2


def test_a_diverging_run_stops_before_its_checkpoint_is_replaced(multiview, tmp_path):
    train(load_spec(multiview, ["train.epochs=1"]), tmp_path / "run")
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    z = embeddings(tmp_path / "run")
    with pytest.raises(TrainingError, match="diverged at epoch 2") as caught:
        train(load_spec(multiview, ["train.epochs=3", "train.optimizer.lr=10"]),
              tmp_path / "run", resume=True)
    assert caught.value.lr == 1.0
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert np.array_equal(embeddings(tmp_path / "run"), z)


def test_non_finite_weights_stop_the_run(multiview, tmp_path):
    class Poison(Callback):
        def on_step_end(self, trainer, step, terms):
            if trainer.epoch == 1 and step == trainer.built.batcher.steps_per_epoch():
                next(trainer.model.parameters()).data.fill_(float("inf"))

    with pytest.raises(TrainingError, match="weights are no longer finite after epoch 2"):
        train(load_spec(multiview, ["train.epochs=3"]), tmp_path / "run", callbacks=[Poison()])
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize(("read_every", "where"), [(1, "step 3"), (3, "by step 3"),
                                                   (100, "by step 4")])
def test_a_non_finite_loss_stops_the_run_at_the_next_read(multiview, tmp_path, read_every,
                                                          where):
    """On an accelerator the terms are read every READ_EVERY steps and at the epoch's end
    (4 steps an epoch at batch size 8); the first epoch's checkpoint is never written."""
    class Poison(Callback):
        def on_train_start(self, trainer):
            trainer.read_every = read_every

        def on_step_end(self, trainer, step, terms):
            if step == 2:
                next(trainer.model.parameters()).data.fill_(float("nan"))

    with pytest.raises(TrainingError, match=f"the loss is not finite at epoch 1, {where} "
                       r"\(loss, "):
        train(load_spec(multiview, ["train.batch_size=8"]), tmp_path / "run",
              callbacks=[Poison()])
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_step_terms_are_read_once_all_together():
    terms = StepTerms({"loss": torch.tensor(3.0), "a.row": torch.tensor(1.0),
                       "a.factor": torch.tensor(2.0, dtype=torch.float64)})
    assert list(terms) == ["loss", "a.row", "a.factor"] and len(terms) == 3
    assert terms._values is None  # nothing read until asked
    assert dict(terms) == {"loss": 3.0, "a.row": 1.0, "a.factor": 2.0}
    first = terms._values
    assert terms["a.row"] == 1.0 and terms._values is first  # no second read

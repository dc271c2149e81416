"""Instances without a whole view: a tensor view held by some instances (``instances:``),
a matrix row with no observed cell.  They are fused from their other views and not scored
on the view they lack."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from mmfuse.build import build
from mmfuse.errors import SpecError
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec
from mmfuse.training import embed_all

N_BOOK = 48


@pytest.fixture
def some_covers(multiview):
    """Covers for 30 of the 48 books, stored in a shuffled order with their ids."""
    root = multiview.parent
    covers = np.load(root / "covers.npy")
    held = np.random.default_rng(1).permutation(N_BOOK)[:30]
    np.save(root / "some_covers.npy", covers[held])
    (root / "cover_ids.txt").write_text("".join(f"b{i}\n" for i in held))
    sets = ["views.cover.source.path=some_covers.npy", "views.cover.instances=cover_ids.txt"]
    return multiview, sets, held, covers


def test_a_tensor_view_of_some_instances_maps_its_rows_by_id(some_covers):
    spec, sets, held, covers = some_covers
    built = build(load_spec(spec, sets), get_plugins())
    store = built.data.views["cover"]
    assert store.shape == (N_BOOK, 3, 16, 16)
    idx = np.arange(N_BOOK)
    have = store.present(idx)
    assert have.sum() == 30 and set(np.flatnonzero(have)) == set(held)
    taken = store.take(idx)
    assert np.array_equal(taken[held], covers[held])  # each book gets its own cover
    assert not taken[~have].any()


def test_an_instance_without_a_view_is_fused_from_its_other_views(some_covers):
    spec, sets, held, _ = some_covers
    built = build(load_spec(spec, [*sets, "model.preset=mmfuse"]), get_plugins())
    z = embed_all(built, "book")
    alone = embed_all(built, "book", without=frozenset({"cover"}))
    lacking = np.setdiff1d(np.arange(N_BOOK), held)
    assert np.allclose(z[lacking], alone[lacking], atol=1e-6)
    assert not np.allclose(z[held], alone[held], atol=1e-3)  # the others use their covers


def test_a_tensor_term_scores_only_the_instances_that_have_the_view(some_covers):
    spec, sets, held, _ = some_covers
    built = build(load_spec(spec, [*sets, "model.preset=mmeda2"]), get_plugins())
    model = built.model.train()
    batch = next(iter(built.batcher.epoch(0)))
    have = batch.present[("cover", "tensor")]
    assert 0 < int(have.sum()) < len(have)
    terms = model(batch)
    x = batch.sides[("cover", "tensor")][have]
    codec = model.codecs["cover:tensor"]
    expected = model.weights["cover"] * F.mse_loss(codec.decode(codec.encode(x)), x)
    assert terms["cover.tensor"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_matrix_row_with_no_observed_cell_is_a_missing_view(multiview):
    root = multiview.parent
    text = np.load(root / "text.npy")
    text[:10] = np.nan
    np.save(root / "text.npy", text)
    built = build(load_spec(multiview, ["model.preset=mmfuse"]), get_plugins())
    batch = built.batcher.make({"book": np.arange(16), "word": np.arange(24)})
    assert batch.present[("text", "row")].tolist() == [False] * 10 + [True] * 6
    z = embed_all(built, "book")
    alone = embed_all(built, "book", without=frozenset({"text"}))
    assert np.allclose(z[:10], alone[:10], atol=1e-6)
    assert not np.allclose(z[10:], alone[10:], atol=1e-3)


@pytest.mark.parametrize("ids, message", [
    ("b0\nb1\n", "lists 2 instances but the data has 30 rows"),
    ("".join(f"x{i}\n" for i in range(30)), "30 ids are not instances of entity 'book' "
                                            "(first: 'x0')"),
])
def test_instances_that_do_not_fit_the_data_are_spec_errors(some_covers, ids, message):
    spec, sets, _, _ = some_covers
    (spec.parent / "cover_ids.txt").write_text(ids)
    with pytest.raises(SpecError, match="views.cover.instances") as err:
        build(load_spec(spec, sets), get_plugins())
    assert message in str(err.value)


def test_instances_are_for_tensor_views_and_need_the_entitys_ids(some_covers):
    spec, sets, _, _ = some_covers
    with pytest.raises(SpecError, match="`instances` is for tensor views"):
        load_spec(spec, ["views.text.instances=cover_ids.txt"])
    with pytest.raises(SpecError, match="entity 'book' has no ids"):
        build(load_spec(spec, [*sets, "entities.book.ids=null", "entities.book.size=48"]),
              get_plugins())


def test_training_with_a_partial_view_lowers_its_loss(some_covers, tmp_path):
    from mmfuse.api import train
    spec, sets, _, _ = some_covers
    result = train(load_spec(spec, [*sets, "model.preset=mmfuse", "train.epochs=4",
                                    "evaluate=null"]), tmp_path / "run")
    history = result.trainer.history
    assert all(np.isfinite(h["loss"]) for h in history)
    assert history[-1]["cover.tensor"] < history[0]["cover.tensor"]
    assert torch.isfinite(torch.as_tensor(np.load(tmp_path / "run/embeddings/book.npy"))).all()

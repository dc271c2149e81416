"""mmfuse's own recipe: scale-free terms, cross-view decoding, view dropout, `scale: auto`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_training import KillAfter

from mmfuse.api import train
from mmfuse.build import build
from mmfuse.errors import SpecError
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec
from mmfuse.training import embed_all

RECIPE = ["model.preset=mmfuse"]


def first_terms(built):
    built.model.train()
    batch = next(iter(built.batcher.epoch(0)))
    torch.manual_seed(0)
    return {k: float(v.detach()) for k, v in built.model(batch).items()}


def test_scale_free_terms_are_divided_by_each_views_null_deviance(multiview):
    raw = build(load_spec(multiview, [*RECIPE, "model.scale_free=false"]), get_plugins())
    free = build(load_spec(multiview, RECIPE), get_plugins())
    model = free.model
    text = free.data.views["text"].rows(np.arange(48))[0]  # standardised: `scale: auto`
    cover = free.data.views["cover"].take(np.arange(48)) / 255.0
    null = dict(zip(model.view_index, model.null_deviance.tolist(), strict=True))
    assert null["text"] == pytest.approx(text.var(), rel=1e-4)
    assert null["cover"] == pytest.approx(cover.var(), rel=0.05)  # a sample of 200k values
    a, b = first_terms(raw), first_terms(free)
    assert a.keys() == b.keys()
    for name in a:  # same weights, same batch, same dropout draws: only the divisor differs
        assert b[name] == pytest.approx(a[name] / null[name.split(".")[0]], rel=1e-4), name


def test_cross_terms_decode_every_side_of_a_fused_entity_from_z(multiview):
    built = build(load_spec(multiview, [*RECIPE, "model.terms.cross=true"]), get_plugins())
    terms = first_terms(built)
    # book fuses cover, text and ratings: each of its sides is also decoded from z_book;
    # word fuses text's columns and cooc's rows and columns; user has one code: no cross
    assert {"cover.tensor.fused", "text.row.fused", "ratings.col.fused",
            "text.col.fused", "cooc.row.fused", "cooc.col.fused"} <= terms.keys()
    assert "ratings.row.fused" not in terms
    # by default only for views without a factor term (the cover tensor), which nothing
    # else decodes from z
    default = first_terms(build(load_spec(multiview, RECIPE), get_plugins()))
    assert [name for name in default if name.endswith(".fused")] == ["cover.tensor.fused"]
    off = first_terms(build(load_spec(multiview, [*RECIPE, "model.terms.cross=false"]),
                            get_plugins()))
    assert not any(name.endswith(".fused") for name in off)
    mmeda2 = first_terms(build(load_spec(multiview), get_plugins()))
    assert not any(name.endswith(".fused") for name in mmeda2)


def test_default_cross_terms_give_way_to_a_narrower_code_with_a_note(multiview):
    built = build(load_spec(multiview, [*RECIPE, "model.code_dim=4"]), get_plugins())
    assert not any(built.plan.cross(key) for keys in built.plan.codes.values() for key in keys)
    assert any("cross terms of cover (preset mmfuse) are off" in n for n in built.plan.notes)


def test_cross_terms_need_codes_as_wide_as_the_representation(multiview):
    with pytest.raises(SpecError, match="model.code_dim: cross terms"):
        build(load_spec(multiview, [*RECIPE, "model.code_dim=4", "model.terms.cross=true"]),
              get_plugins())
    build(load_spec(multiview, [*RECIPE, "model.code_dim=4"]), get_plugins())


def test_view_dropout_zeroes_whole_views_per_instance_and_keeps_one(multiview):
    built = build(load_spec(multiview, [*RECIPE, "model.view_dropout=0.6"]), get_plugins())
    model = built.model
    codes = {("cover", "tensor"): torch.ones(400, 8), ("text", "row"): torch.ones(400, 8),
             ("ratings", "col"): torch.ones(400, 8)}
    model.train()
    torch.manual_seed(0)
    kept = model._kept(codes, frozenset(), {})
    on = torch.stack([kept[k][:, 0] for k in codes], dim=1)
    assert set(on.unique().tolist()) == {0.0, 1.0}
    assert (on.sum(dim=1) >= 1).all()  # never every view
    assert 0.3 < 1 - on.mean() < 0.6  # about the rate, less the rows given a view back
    assert ((kept[("cover", "tensor")] == 0).all(1) | (kept[("cover", "tensor")] == 1).all(1)).all()
    model.eval()  # embedding: nothing dropped ...
    assert all(torch.equal(kept, codes[k])
               for k, kept in model._kept(codes, frozenset(), {}).items())
    gone = model._kept(codes, frozenset({"text"}), {})  # ... but what is left out
    assert gone[("text", "row")].abs().sum() == 0 and gone[("cover", "tensor")].sum() == 400 * 8


def test_embedding_without_a_view_leaves_it_out_of_the_fusion(multiview, tmp_path):
    result = train(load_spec(multiview, RECIPE), tmp_path / "run")
    built = result.built
    full = embed_all(built, "book")
    assert np.allclose(full, np.load(tmp_path / "run" / "embeddings" / "book.npy"))
    without = embed_all(built, "book", without=frozenset({"cover"}))
    assert np.isfinite(without).all() and not np.allclose(full, without)
    # the user entity fuses one view only: leaving another out changes nothing
    assert np.array_equal(embed_all(built, "user"),
                          embed_all(built, "user", without=frozenset({"cover"})))


def test_recipe_resumes_to_the_bit(multiview, tmp_path):
    sets = [*RECIPE, "train.epochs=3"]
    train(load_spec(multiview, sets), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(load_spec(multiview, sets), tmp_path / "cut", callbacks=[KillAfter(2)])
    train(load_spec(multiview, sets), tmp_path / "cut", resume=True)
    a, b = (np.load(tmp_path / r / "embeddings" / "book.npy") for r in ("full", "cut"))
    assert np.array_equal(a, b)


def test_scale_auto_standardises_dense_gaussian_views_under_the_recipe_only(multiview):
    recipe = build(load_spec(multiview, RECIPE), get_plugins()).data.views
    assert recipe["text"].center is not None and recipe["cooc"].center is not None
    assert recipe["ratings"].center is None  # sparse: a column of a few cells stays as is
    paper = build(load_spec(multiview), get_plugins()).data.views
    assert paper["text"].center is None
    kept = build(load_spec(multiview, [*RECIPE, "views.text.scale=none"]), get_plugins())
    assert kept.data.views["text"].center is None


def test_null_deviance_of_the_built_in_likelihoods():
    from mmfuse_likelihoods.likelihoods import Bernoulli, Gaussian, Poisson
    from sklearn.metrics import mean_poisson_deviance

    rng = np.random.default_rng(0)
    y = (rng.random(10_000) < 0.3).astype(float)
    p = y.mean()
    assert Bernoulli().null_deviance(y) == pytest.approx(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
    x = rng.normal(3, 2, 10_000)
    assert Gaussian().null_deviance(x) == pytest.approx(x.var())
    assert Gaussian(noise="learn").null_deviance(x) == 1.0
    counts = rng.poisson(2.5, 10_000).astype(float)
    half = mean_poisson_deviance(counts, np.full_like(counts, counts.mean())) / 2
    assert Poisson().null_deviance(counts) == pytest.approx(half)


def test_new_instances_embed_from_the_views_they_have(multiview, tmp_path):
    from mmfuse.api import embed_new, load_trained
    from mmfuse.errors import DataError
    from mmfuse.run import RunDir

    result = train(load_spec(multiview, RECIPE), tmp_path / "run")
    built = load_trained(RunDir(tmp_path / "run"))
    data = multiview.parent
    given = {"cover": np.load(data / "covers.npy"), "text": np.load(data / "text.npy")}
    z = embed_new(built, "book", given)  # no ratings for these books
    assert np.allclose(z, embed_all(result.built, "book", without=frozenset({"ratings"})),
                       atol=1e-5)
    with pytest.raises(DataError, match="not used"):
        embed_new(built, "book", {**given, "cooc": np.zeros((48, 24))})

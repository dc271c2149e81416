"""The generalised model: presets as switches, missing cells, column strategies."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mmfuse.api import train
from mmfuse.build import build
from mmfuse.errors import SpecError
from mmfuse.plugin_api import SparseBatch
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec


def matrix_only(spec_path):
    """The multiview spec without its tensor view (dcmf and cmf take matrices only)."""
    text = spec_path.read_text()
    start = text.index("  cover:")
    end = text.index("  text:")
    out = spec_path.with_name("matrix.yaml")
    out.write_text(text[:start] + text[end:])
    return out


def one_batch_terms(spec):
    built = build(spec, get_plugins())
    batch = next(iter(built.batcher.epoch(0)))
    return built, built.model(batch)


def test_mmeda2_has_every_term(multiview):
    _, terms = one_batch_terms(load_spec(multiview))
    assert set(terms) == {"cover.tensor", "text.row", "text.col", "text.factor", "ratings.row",
                          "ratings.col", "ratings.factor", "cooc.row", "cooc.col", "cooc.factor"}


def test_mmeda1_decodes_tensor_from_the_fused_representation(multiview):
    built, terms = one_batch_terms(load_spec(multiview, ["model.preset=mmeda1"]))
    assert set(terms) == {"cover.tensor", "text.factor", "ratings.factor", "cooc.factor"}
    assert built.plan.decode_from["cover"] == "fused"
    assert built.model.codecs["text:row"].decoder is None  # no unused decoders


def test_dcmf_has_one_autoencoder_per_entity(multiview):
    spec = load_spec(matrix_only(multiview), ["model.preset=dcmf"])
    built, terms = one_batch_terms(spec)
    assert set(built.model.entity_codecs) == {"book", "user", "word"}
    assert len(built.model.codecs) == 0
    # book's input: its text row (24) and its ratings column (32)
    assert built.model.entity_codecs["book"].in_shape == (24 + 32,)
    assert {"text.row", "ratings.col", "text.factor"} <= set(terms)


def test_cmf_is_free_factors_with_the_factor_term_only(multiview):
    built, terms = one_batch_terms(load_spec(matrix_only(multiview), ["model.preset=cmf"]))
    assert set(terms) == {"text.factor", "ratings.factor", "cooc.factor"}
    assert {n: t.weight.shape for n, t in built.model.free.items()} == {
        "book": (48, 8), "user": (32, 8), "word": (24, 8)}


def test_dcmf_and_cmf_refuse_tensor_views_with_a_located_error(multiview):
    with pytest.raises(SpecError) as err:
        build(load_spec(multiview, ["model.preset=cmf"]), get_plugins())
    assert "views.cover.tensor" in str(err.value) and "matrix views only" in str(err.value)


def test_terms_can_be_switched_off(multiview):
    _, terms = one_batch_terms(load_spec(multiview, ["model.terms.factor=false",
                                                     "model.terms.col=false"]))
    assert not any(t.endswith((".factor", ".col")) for t in terms)


def test_a_sparse_view_scores_its_stored_cells_only(multiview):
    """The cells of a sparse view in a batch are stored cells with their stored values (no
    cell that is not stored ever counts); changing them changes the loss."""
    built = build(load_spec(multiview), get_plugins())
    stored = sp.load_npz(multiview.parent / "ratings.npz").tocsr()
    batch = next(iter(built.batcher.epoch(0)))
    cells = batch.cells["ratings"]
    users = batch.idx["user"][cells.rows].numpy().copy()
    books = batch.idx["book"][cells.cols].numpy().copy()
    pattern = sp.csr_array((np.ones(stored.nnz), stored.indices, stored.indptr), stored.shape)
    assert len(cells) > 0 and (pattern[users, books] == 1).all()
    assert np.allclose(stored[users, books], cells.values.numpy())
    assert ("ratings", "row") in built.plan.sparse
    assert isinstance(batch.sides[("ratings", "row")], SparseBatch)
    base = {k: v.item() for k, v in built.model(batch).items()}
    cells.values += 1.0
    bumped = {k: v.item() for k, v in built.model(batch).items()}
    for term in ("ratings.factor", "ratings.row", "ratings.col"):
        assert bumped[term] != pytest.approx(base[term], abs=1e-4)
    assert bumped["text.factor"] == base["text.factor"]


@pytest.mark.parametrize("name", ["gaussian", "bernoulli", "poisson"])
def test_likelihoods_average_over_observed_cells_only(name):
    lik = get_plugins().likelihoods.get(name)()  # a factory: one view's likelihood
    pred = torch.randn(4, 5)
    target = torch.rand(4, 5).round()
    mask = torch.rand(4, 5) > 0.4
    loss = lik.loss(pred, target, mask)
    assert loss.item() == pytest.approx(lik.loss(pred[mask], target[mask], None).item(), rel=1e-5)
    changed = torch.where(mask, target, torch.full_like(target, 7.0))
    assert lik.loss(pred, changed, mask).item() == pytest.approx(loss.item(), rel=1e-6)


def test_nan_cells_of_a_dense_matrix_are_missing(multiview):
    text = np.load(multiview.parent / "text.npy")
    text[0, :5] = np.nan
    np.save(multiview.parent / "text.npy", text)
    built = build(load_spec(multiview), get_plugins())
    batch = built.batcher.make({"book": np.array([0, 1])})
    mask = batch.masks[("text", "row")]
    assert mask[0, :5].sum() == 0 and mask[0, 5:].all() and mask[1].all()
    assert torch.isfinite(batch.sides[("text", "row")]).all()
    with pytest.raises(SpecError, match="views.text.missing"):
        build(load_spec(multiview, ["views.text.missing=forbid"]), get_plugins())


@pytest.mark.parametrize("mode", ["sketch", "embedding", "none"])
def test_column_strategies_train(multiview, tmp_path, mode):
    spec = load_spec(multiview, [f"views.ratings.columns={mode}", "views.ratings.sketch_dim=6"])
    result = train(spec, tmp_path / "run")
    plan = result.built.plan
    assert ("ratings", "col") in plan.codes["book"] or mode == "none"
    if mode == "sketch":
        assert plan.in_shapes[("ratings", "col")] == (6,)
        assert result.built.batcher.sketches["ratings"].shape == (48, 6)
    assert np.isfinite(np.load(tmp_path / "run" / "embeddings" / "book.npy")).all()


def test_an_entity_without_any_code_is_an_error(tmp_path):
    np.save(tmp_path / "m.npy", np.ones((4, 3), dtype=np.float32))
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nentities: {a: {size: 4}, b: {size: 3}}\n"
                    "views:\n  m: {rows: a, cols: b, columns: none,"
                    " source: {reader: npy, path: m.npy}}\n")
    with pytest.raises(SpecError, match="entities.b: gets no code"):
        build(load_spec(spec), get_plugins())


def test_scale_standard_gives_columns_mean_0_std_1_over_observed_cells(multiview):
    built = build(load_spec(multiview, ["views.text.scale=standard",
                                        "views.ratings.scale=standard"]), get_plugins())
    text, _ = built.data.views["text"].rows(np.arange(48))
    assert np.allclose(text.mean(axis=0), 0, atol=1e-5) and np.allclose(text.std(axis=0), 1)
    ratings = built.data.views["ratings"]
    values, mask = ratings.rows(np.arange(32))
    for j in range(48):
        observed = values[mask[:, j], j]
        if len(observed) > 1:
            assert abs(observed.mean()) < 1e-5 and abs(observed.std() - 1) < 1e-4
    assert (values[~mask] == 0).all()
    cols, cmask = ratings.cols(np.array([3, 0]))
    assert np.array_equal(cols, values[:, [3, 0]].T) and np.array_equal(cmask, mask[:, [3, 0]].T)


def test_embedding_new_instances_applies_the_same_scaling(multiview, tmp_path):
    from mmfuse.api import embed_new, load_trained
    from mmfuse.run import RunDir

    spec = load_spec(multiview, ["views.text.scale=standard", "train.epochs=1"])
    train(spec, tmp_path / "run")
    built = load_trained(RunDir(tmp_path / "run"))
    data = multiview.parent
    ratings = sp.load_npz(data / "ratings.npz").toarray()
    keep = sp.load_npz(data / "ratings.npz").toarray() != 0
    z = embed_new(built, "book", {"cover": np.load(data / "covers.npy"),
                                  "text": np.load(data / "text.npy"),
                                  "ratings": np.where(keep, ratings, np.nan).T})
    assert np.allclose(z, np.load(tmp_path / "run" / "embeddings" / "book.npy"), atol=1e-5)


def test_factor_intercept_starts_at_the_link_scale_mean_of_observed_cells(tmp_path):
    rng = np.random.default_rng(0)
    net = (rng.random((40, 40)) < 0.1).astype(np.float32)
    np.save(tmp_path / "net.npy", net)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nentities: {g: {size: 40}}\nviews:\n  net: {rows: g, cols: g, "
                    "likelihood: bernoulli, source: {reader: npy, path: net.npy}}\n")
    built = build(load_spec(spec), get_plugins())
    p = net.mean()
    assert built.model.factor_bias["net"].item() == pytest.approx(np.log(p / (1 - p)), rel=1e-5)


def test_align_adds_a_contrastive_term_per_entity_with_two_views(multiview):
    """model.align: an ENTITY.align term for every entity whose codes come from two views or
    more (book: cover, text, ratings; word: text's columns and cooc), none by default, and
    its gradient reaches every view's encoder of the entity."""
    _, terms = one_batch_terms(load_spec(multiview))
    assert not any(name.endswith(".align") for name in terms)
    built, terms = one_batch_terms(load_spec(multiview, ["model.align=0.5"]))
    assert {"book.align", "word.align"} <= set(terms)
    assert "user.align" not in terms  # its only code is the ratings view's
    terms["book.align"].backward()
    for key in built.plan.codes["book"]:
        codec = built.model.codecs[f"{key[0]}:{key[1]}"]
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in codec.parameters())


def test_alignment_is_low_where_the_views_agree_and_chance_where_they_do_not(multiview):
    """InfoNCE between two views' codes: near 0 when each instance's codes are the same in
    both views, log(b) (1 under scale_free) when the codes tell the instances apart no
    better than chance (one code for all), more when they mislead; instances without a
    view are left out."""
    import math

    for preset, chance_at in (("mmeda2", math.log(64)), ("mmfuse", 1.0)):
        built = build(load_spec(multiview, [f"model.preset={preset}", "model.align=1"]),
                      get_plugins())
        keys = built.plan.codes["book"]
        torch.manual_seed(0)
        h = torch.randn(64, 8)
        agree = built.model._alignment("book", {k: h for k in keys}, {})
        chance = built.model._alignment("book", {k: h[:1].expand(64, 8) for k in keys}, {})
        unrelated = built.model._alignment("book", {k: torch.randn(64, 8) for k in keys}, {})
        assert float(agree) < 0.1 * chance_at
        assert float(chance) == pytest.approx(chance_at, rel=1e-5)
        assert float(unrelated) > chance_at
        one = torch.zeros(64, dtype=torch.bool)
        one[0] = True
        lone = {keys[0]: one}  # a single instance has the first view: nothing to compare it to
        only = {k: h for k in keys[:2]}
        assert built.model._alignment("book", only, lone) is None

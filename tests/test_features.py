"""Feature views (columns that are attributes, not an entity), masks and zeros as missing."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mmfuse.api import train
from mmfuse.build import build
from mmfuse.data import load_data
from mmfuse.errors import SpecError
from mmfuse.graph import build_graph, render_text
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec


def write_features(root: Path, n: int = 80, seed: int = 0) -> Path:
    """Entity ``item`` described by three feature views — six measurements, a word-vector
    block and one year (a 1-D array) — and rated in a users × items matrix; ``label.npy`` is
    a function of the measurements."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    latent = rng.standard_normal((n, 2))
    np.save(root / "morph.npy", (latent @ rng.standard_normal((2, 6))
                                 + 0.1 * rng.standard_normal((n, 6))).astype(np.float32))
    np.save(root / "words.npy", rng.standard_normal((n, 10)).astype(np.float32))
    np.save(root / "year.npy", (1990 + 20 * rng.random(n)).astype(np.float32))
    ratings = rng.standard_normal((30, 2)) @ latent.T
    sp.save_npz(root / "ratings.npz", sp.csr_array(ratings * (rng.random(ratings.shape) < 0.3)))
    np.save(root / "label.npy", (latent[:, 0] > 0).astype(np.int64))
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: features
        entities:
          item: {{size: {n}}}
          user: {{}}
        views:
          morph: {{rows: item, source: {{reader: npy, path: morph.npy}}, scale: standard}}
          words: {{rows: item, features: true, source: {{reader: npy, path: words.npy}}}}
          year: {{rows: item, source: {{reader: npy, path: year.npy}}, scale: standard}}
          ratings: {{rows: user, cols: item, source: {{reader: npz, path: ratings.npz}}}}
        model: {{dim: 4}}
        train: {{epochs: 2, batch_size: 20, device: cpu}}
        evaluate:
          targets:
            label: {{entity: item, path: label.npy, task: classification, probe: logistic}}
        """))
    return spec


@pytest.fixture
def features_spec(tmp_path) -> Path:
    return write_features(tmp_path / "d")


def test_a_feature_view_has_no_column_entity_code_or_factor(features_spec):
    spec = load_spec(features_spec)
    assert [v.features for v in spec.views.values()] == [True, True, True, False]
    graph = build_graph(spec, get_plugins())
    assert sorted(n[1] for n in graph.nodes if n[0] == "entity") == ["item", "user"]
    assert "morph            features of item" in render_text(graph, spec)
    built = build(spec, get_plugins())
    assert built.data.views["year"].shape == (80, 1)  # a 1-D array is one feature
    plan = built.plan
    assert plan.codes["item"] == [("morph", "row"), ("words", "row"), ("year", "row"),
                                  ("ratings", "col")]
    assert plan.factors == ["ratings"]
    # no col, no factor; under the default preset decoded from z too (no factor term does)
    assert plan.terms["morph"] == {"row": True, "cross": True}
    assert plan.terms["ratings"]["cross"] is False
    result = train(spec, features_spec.parent / "run")
    terms = set(result.trainer.history[-1]) - {"epoch", "loss", "seconds"}
    assert terms == {"morph.row", "words.row", "year.row", "ratings.row", "ratings.col",
                     "ratings.factor", "morph.row.fused", "words.row.fused", "year.row.fused"}
    label = result.evaluation["targets"]["label"]
    assert {"accuracy", "macro_f1", "f1_class_0", "f1_class_1", "roc_auc", "auprc"} <= set(
        label["metrics"])
    assert label["floor"]["roc_auc"] == 0.5
    assert {"morph", "words", "year", "ratings", "concat"} <= set(label["baselines"])


def test_a_feature_views_row_term_stays_on_under_a_preset_without_row_terms(features_spec):
    plan = build(load_spec(features_spec, ["model.preset=mmeda1"]), get_plugins()).plan
    assert plan.terms["morph"]["row"] is True  # its only link to the representation
    assert plan.terms["ratings"]["row"] is False


@pytest.mark.parametrize(("change", "message"), [
    ("morph: {rows: item, features: true, cols: user,",
     "views.morph: a feature view (`features: true`) has no `cols`"),
    ("morph: {rows: item, columns: sketch,",
     "views.morph: `columns` is for a column entity, and a feature view has none"),
])
def test_feature_view_mistakes_are_spec_errors(features_spec, change, message):
    text = features_spec.read_text().replace("morph: {rows: item,", change)
    features_spec.write_text(text)
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("`", "`")):
        load_spec(features_spec)


def test_feature_views_need_a_preset_that_encodes_views(features_spec):
    with pytest.raises(SpecError, match="preset 'cmf' factorises entity × entity matrices"):
        build(load_spec(features_spec, ["model.preset=cmf"]), get_plugins())


def test_array_shapes_are_explained(features_spec):
    root = features_spec.parent
    np.save(root / "cube.npy", np.zeros((80, 2, 2), dtype=np.float32))
    features_spec.write_text(features_spec.read_text().replace("path: words.npy", "path: cube.npy"))
    with pytest.raises(SpecError, match=r"a feature view needs 1-D or 2-D data; got shape "
                       r"\[80, 2, 2\]; an image or other array per row is a tensor view"):
        load_data(load_spec(features_spec), get_plugins())
    text = features_spec.read_text().replace("path: cube.npy", "path: words.npy").replace(
        "year: {rows: item,", "year: {rows: item, cols: user,")
    features_spec.write_text(text)
    with pytest.raises(SpecError, match=r"a 1-D array is one feature of each row: "
                       r"`features: true`"):
        load_data(load_spec(features_spec), get_plugins())


def test_a_mask_file_marks_the_observed_cells(features_spec):
    root = features_spec.parent
    mask = np.random.default_rng(1).random((80, 10)) < 0.5
    np.save(root / "words_mask.npy", mask)
    text = features_spec.read_text().replace(
        "path: words.npy}", "path: words.npy, params: {mask: words_mask.npy}}")
    features_spec.write_text(text)
    data = load_data(load_spec(features_spec), get_plugins())
    assert data.views["words"].nnz == mask.sum()
    values, got = data.views["words"].rows(np.arange(80))
    assert np.array_equal(got, mask) and (values[~mask] == 0).all()
    np.save(root / "words_mask.npy", mask[:, :5])
    with pytest.raises(SpecError, match=r"mask words_mask.npy has shape \[80, 5\]; the data "
                       r"has \[80, 10\]"):
        load_data(load_spec(features_spec), get_plugins())
    features_spec.write_text(text.replace("mask: words_mask.npy", "mmapp: false"))
    with pytest.raises(SpecError, match=r"unknown params \['mmapp'\]; known: \['col_ids', "
                       r"'mask', 'mmap', 'row_ids'\]"):
        load_data(load_spec(features_spec), get_plugins())


def test_zeros_as_missing_and_the_mostly_zero_warning(features_spec, caplog):
    root = features_spec.parent
    dense = np.zeros((80, 10), dtype=np.float32)
    dense[::4, ::3] = 1.5
    np.save(root / "words.npy", dense)
    with caplog.at_level(logging.WARNING, logger="mmfuse.data"):
        data = load_data(load_spec(features_spec), get_plugins())
    assert data.views["words"].nnz == 800  # every cell observed, as declared
    assert "view 'words': 90% of its cells are 0" in caplog.text
    assert "set `missing: zero`" in caplog.text
    caplog.clear()
    spec = load_spec(features_spec, ["views.words.missing=zero"])
    with caplog.at_level(logging.WARNING, logger="mmfuse.data"):
        data = load_data(spec, get_plugins())
    assert data.views["words"].nnz == int((dense != 0).sum()) == 20 * 4
    assert "of its cells are 0" not in caplog.text
    stored = load_data(load_spec(features_spec, ["views.ratings.missing=zero"]), get_plugins())
    kept = sp.load_npz(root / "ratings.npz")
    assert stored.views["ratings"].nnz == kept.nnz  # no stored zeros to drop here
    with_zero = sp.csr_array(kept)
    with_zero.data[:5] = 0.0
    sp.save_npz(root / "ratings.npz", with_zero)
    dropped = load_data(load_spec(features_spec, ["views.ratings.missing=zero"]), get_plugins())
    assert dropped.views["ratings"].nnz == kept.nnz - 5

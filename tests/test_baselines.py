"""Raw-view baselines: sparse views stay sparse (read from the stored cells), truncated SVD fit
on the train rows only, and ``concat`` of sparse and dense blocks at unit train variance."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import write_multiview
from sklearn.decomposition import TruncatedSVD

from mmfuse.baselines import (
    CONCAT,
    BaselineFeatures,
    block_scaled,
    raw_features,
    reduce,
    train_variance,
)
from mmfuse.data import MatrixData, load_data
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec

N_GENE, N_CELL, N_FEAT = 30, 40, 20


def write_spec(root: Path, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """Entity ``gene`` in a sparse square ``net`` (gene × gene), a sparse ``counts`` (cell ×
    gene: gene is its column entity) and a dense ``expr`` (gene × feat).  Returns the spec
    and the views' dense arrays (missing cells 0)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    net = sp.random_array((N_GENE, N_GENE), density=0.2, format="csr", dtype=np.float32,
                          rng=rng, data_sampler=lambda size: rng.normal(2.0, 1.0, size))
    counts = sp.random_array((N_CELL, N_GENE), density=0.3, format="csr", dtype=np.float32,
                             rng=rng, data_sampler=lambda size: rng.poisson(3.0, size) + 1.0)
    expr = (rng.standard_normal((N_GENE, N_FEAT)) * 5 + 1).astype(np.float32)
    sp.save_npz(root / "net.npz", net)
    sp.save_npz(root / "counts.npz", counts)
    np.save(root / "expr.npy", expr)
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: tiny_baselines
        entities:
          gene: {{size: {N_GENE}}}
          cell: {{size: {N_CELL}}}
          feat: {{size: {N_FEAT}}}
        views:
          net: {{rows: gene, cols: gene, source: {{reader: npz, path: net.npz}}}}
          counts: {{rows: cell, cols: gene, source: {{reader: npz, path: counts.npz}}}}
          expr: {{rows: gene, cols: feat, source: {{reader: npy, path: expr.npy}}}}
        """))
    return spec, {"net": net.toarray(), "counts": counts.toarray(), "expr": expr}


@pytest.fixture
def genes(tmp_path):
    path, arrays = write_spec(tmp_path / "d")
    spec = load_spec(path)
    return spec, load_data(spec, get_plugins()), arrays


def no_densify(monkeypatch):
    """Reading a sparse view densely (``rows`` / ``cols``) fails the test."""
    for name in ("rows", "cols"):
        original = getattr(MatrixData, name)

        def guarded(self, idx, *args, _original=original, _name=name, **kwargs):
            assert not self.sparse, f"sparse view densified by MatrixData.{_name}"
            return _original(self, idx, *args, **kwargs)

        monkeypatch.setattr(MatrixData, name, guarded)


TRAIN = np.array([0, 1, 2, 4, 7, 8, 12, 13, 16, 20, 21, 24, 26, 28])  # 14 of the 30 genes
TEST = np.setdiff1d(np.arange(N_GENE), TRAIN)


# ----------------------------------------------------------------------- raw features


def test_sparse_views_give_sparse_features_equal_to_the_dense_cells(genes, monkeypatch):
    spec, data, arrays = genes
    no_densify(monkeypatch)
    square = raw_features(spec, data, "net", "gene")  # rows and columns, side by side
    assert isinstance(square, sp.csr_array) and square.dtype == np.float32
    np.testing.assert_array_equal(square.toarray(),
                                  np.hstack([arrays["net"], arrays["net"].T]))
    cols = raw_features(spec, data, "counts", "gene")  # gene is the column entity
    assert isinstance(cols, sp.csr_array)
    np.testing.assert_array_equal(cols.toarray(), arrays["counts"].T)
    rows = raw_features(spec, data, "counts", "cell")
    assert isinstance(rows, sp.csr_array)
    np.testing.assert_array_equal(rows.toarray(), arrays["counts"])
    assert rows.nnz == data.views["counts"].csr.nnz  # only the stored cells
    dense = raw_features(spec, data, "expr", "gene")
    assert isinstance(dense, np.ndarray)
    np.testing.assert_array_equal(dense, arrays["expr"])
    # selecting rows works the same on both (a boolean keep mask, then train indices)
    keep = np.arange(N_GENE) % 5 != 3
    train = np.arange(0, int(keep.sum()), 3)
    np.testing.assert_array_equal(square[keep][train].toarray(),
                                  square.toarray()[keep][train])


def test_raw_features_read_the_stored_cells_without_copying_or_changing_them(genes):
    spec, data, _ = genes
    stored = data.views["counts"]
    before = stored.csr.data.copy()
    rows, cols = (raw_features(spec, data, "counts", e) for e in ("cell", "gene"))
    assert np.shares_memory(rows.data, stored.csr.data)
    assert np.shares_memory(cols.data, stored.csc.data)
    for x in (rows, cols):
        with pytest.raises(ValueError, match="read-only"):
            x.data[:] = -1
        x[np.arange(3)].data[:] = -1  # a selection is a copy of its own
    np.testing.assert_array_equal(stored.csr.data, before)
    assert stored.csr.data.flags.writeable  # the store itself stays writable


def test_multiview_ratings_baseline_is_sparse_and_reduced_by_truncated_svd(tmp_path,
                                                                          monkeypatch):
    spec = load_spec(write_multiview(tmp_path / "data"))
    data = load_data(spec, get_plugins())
    no_densify(monkeypatch)
    ratings = sp.load_npz(tmp_path / "data" / "ratings.npz").toarray()
    x = raw_features(spec, data, "ratings", "book")
    assert isinstance(x, sp.csr_array)
    np.testing.assert_allclose(x.toarray(), ratings.T, rtol=1e-6)
    keep = np.ones(48, bool)
    train = np.arange(36)
    z, info = BaselineFeatures(spec, data, dim=5).features("ratings", ["ratings"], "book",
                                                           keep, train)
    assert info == {"sides": ["col"], "width": 32, "dim": 5, "pca": True,
                    "reduction": "truncated_svd"}
    assert isinstance(z, np.ndarray) and z.shape == (48, 5) and z.dtype == np.float32


# ----------------------------------------------------------------------- reduction


def test_truncated_svd_on_sparse_equals_truncated_svd_on_the_densified_rows(genes):
    spec, data, arrays = genes
    x = raw_features(spec, data, "net", "gene")
    z = reduce(x, TRAIN, dim=4)
    assert isinstance(z, np.ndarray) and z.shape == (N_GENE, 4) and z.dtype == np.float32
    dense = np.hstack([arrays["net"], arrays["net"].T])
    expected = TruncatedSVD(n_components=4, random_state=0).fit(dense[TRAIN]).transform(dense)
    np.testing.assert_allclose(z, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    # uncentred, unlike PCA: the first component carries the mean of the (positive) cells
    centred = TruncatedSVD(n_components=4, random_state=0).fit(
        dense[TRAIN] - dense[TRAIN].mean(axis=0)).transform(dense - dense[TRAIN].mean(axis=0))
    assert not np.allclose(np.abs(z), np.abs(centred), atol=1e-2)


def test_truncated_svd_is_fit_on_the_train_rows_only(genes, monkeypatch):
    spec, data, _ = genes
    fitted: list = []

    import sklearn.decomposition

    class SpySVD(sklearn.decomposition.TruncatedSVD):
        def fit(self, x, y=None):
            fitted.append(x)
            return super().fit(x, y)

    monkeypatch.setattr(sklearn.decomposition, "TruncatedSVD", SpySVD)  # imported when used
    x = raw_features(spec, data, "net", "gene")
    z = reduce(x, TRAIN, dim=4)
    assert len(fitted) == 1 and sp.issparse(fitted[0])
    np.testing.assert_array_equal(fitted[0].toarray(), x.toarray()[TRAIN])
    # changing a test row's values leaves every train row's features as they were …
    lil = x.tolil()
    lil[TEST[0], :] = 7.0
    z_test_changed = reduce(sp.csr_array(lil), TRAIN, dim=4)
    np.testing.assert_allclose(z_test_changed[TRAIN], z[TRAIN], rtol=1e-6, atol=1e-6)
    assert not np.allclose(z_test_changed[TEST[0]], z[TEST[0]])
    # … while changing a train row's values changes the fit
    lil = x.tolil()
    lil[TRAIN[0], :] = 7.0
    z_train_changed = reduce(sp.csr_array(lil), TRAIN, dim=4)
    assert not np.allclose(z_train_changed[TRAIN[1:]], z[TRAIN[1:]], atol=1e-3)


def test_sparse_features_no_wider_than_dim_are_densified_not_reduced(genes):
    spec, data, arrays = genes
    x = raw_features(spec, data, "counts", "cell")  # 30 wide
    z = reduce(x, TRAIN, dim=30)
    assert isinstance(z, np.ndarray) and z.dtype == np.float32
    np.testing.assert_array_equal(z, arrays["counts"])
    keep = np.ones(N_CELL, bool)
    _, info = BaselineFeatures(spec, data, dim=30).features("counts", ["counts"], "cell",
                                                            keep, TRAIN)
    assert info == {"sides": ["row"], "width": 30, "dim": 30, "pca": False,
                    "reduction": "none"}


def test_a_dense_view_is_raw_and_its_pca_reduced(genes):
    spec, data, arrays = genes
    keep = np.ones(N_GENE, bool)
    features = BaselineFeatures(spec, data, dim=6)
    x, info = features.features("expr", ["expr"], "gene", keep, TRAIN)
    assert info == {"sides": ["row"], "width": N_FEAT, "dim": N_FEAT, "pca": False,
                    "reduction": "none"}
    np.testing.assert_array_equal(x, arrays["expr"])
    _, info = features.features("pca", ["expr"], "gene", keep, TRAIN)
    assert info == {"sides": ["row"], "width": N_FEAT, "dim": 6, "pca": True,
                    "reduction": "pca"}


# ----------------------------------------------------------------------- concat


def dense_train_variance(block: np.ndarray) -> float:
    return float(block[TRAIN].astype(np.float64).var(axis=0).sum())


def test_sparse_train_variance_equals_the_dense_one(genes):
    spec, data, arrays = genes
    x = raw_features(spec, data, "net", "gene")
    dense = np.hstack([arrays["net"], arrays["net"].T])
    assert train_variance(x, TRAIN) == pytest.approx(dense_train_variance(dense), rel=1e-9)
    assert train_variance(dense, TRAIN) == pytest.approx(dense_train_variance(dense), rel=1e-5)


def test_concat_of_sparse_and_dense_views_gives_each_block_unit_train_variance(genes,
                                                                               monkeypatch):
    spec, data, arrays = genes
    no_densify(monkeypatch)
    keep = np.arange(N_GENE) != 5  # instance 5 dropped (e.g. its target is missing)
    train = np.arange(0, keep.sum(), 2)
    blocks = [raw_features(spec, data, v, "gene")[keep] for v in ("net", "counts", "expr")]
    joined = block_scaled(blocks, train)
    assert isinstance(joined, sp.csr_array) and joined.dtype == np.float32
    dense = joined.toarray()
    widths = np.cumsum([0, 2 * N_GENE, N_CELL, N_FEAT])
    assert dense.shape == (N_GENE - 1, widths[-1])
    for lo, hi, raw in zip(widths[:-1], widths[1:],
                           (np.hstack([arrays["net"], arrays["net"].T]), arrays["counts"].T,
                            arrays["expr"]), strict=True):
        part = dense[:, lo:hi]
        assert float(part[train].astype(np.float64).var(axis=0).sum()) == pytest.approx(
            1.0, rel=1e-5)
        # a block is its raw data times one positive factor
        factor = part[raw[keep] != 0] / raw[keep][raw[keep] != 0]
        np.testing.assert_allclose(factor, factor[0], rtol=1e-5)
    # dense blocks only: a dense concatenation
    assert isinstance(block_scaled([blocks[2], blocks[2]], train), np.ndarray)
    # end to end: the concat baseline is sparse until reduced by a truncated SVD
    z, info = BaselineFeatures(spec, data, dim=8).features(CONCAT, ["net", "counts", "expr"],
                                                           "gene", keep, train)
    assert info == {"views": ["net", "counts", "expr"], "width": int(widths[-1]), "dim": 8,
                    "pca": True, "reduction": "truncated_svd"}
    assert isinstance(z, np.ndarray) and z.shape == (N_GENE - 1, 8)


def test_nan_stored_cells_become_zero_in_a_copy(genes):
    spec, data, arrays = genes
    counts = arrays["counts"].copy()
    r, c = np.argwhere(counts != 0)[0]
    with_nan = sp.csr_array(counts)
    with_nan.data[(with_nan.indices == c) & (np.repeat(np.arange(N_CELL),
                                                       np.diff(with_nan.indptr)) == r)] = np.nan
    data.views["counts"] = MatrixData(with_nan, None)
    x = raw_features(spec, data, "counts", "cell")
    counts[r, c] = 0
    np.testing.assert_array_equal(x.toarray(), counts)
    assert np.isnan(data.views["counts"].csr.data).sum() == 1  # the store is left as it was

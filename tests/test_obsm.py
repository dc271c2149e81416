"""Embeddings written back into an AnnData / MuData file's ``obsm`` (``mmfuse embed --out
data.h5mu``, ``FusionEmbedder.write_obsm``): matched to the observations by id, the rest of
the file kept, and a mismatch leaving the file as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import write_multiview
from typer.testing import CliRunner

from mmfuse.cli import app

ad = pytest.importorskip("anndata")
md = pytest.importorskip("mudata")

N_BOOK = 48


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("obsm")
    spec = write_multiview(root / "data")
    out = root / "run"
    result = invoke("train", spec, "--out", out, "-q", "--epochs", 1, "--no-report")
    assert result.exit_code == 0, result.output
    return out


def books_mudata(path, order, extra=()):
    """A MuData whose observations are the books in ``order`` (and ``extra`` ids), with a
    modality ``rna`` of half of them."""
    ids = [f"b{i}" for i in order] + list(extra)
    rng = np.random.default_rng(0)
    whole = ad.AnnData(rng.random((len(ids), 3)).astype(np.float32),
                       obs=pd.DataFrame(index=ids))
    whole.obsm["X_pca"] = rng.random((len(ids), 2))
    rna = ad.AnnData(rng.random((len(ids[::2]), 4)).astype(np.float32),
                     obs=pd.DataFrame(index=ids[::2]))
    md.MuData({"prot": whole, "rna": rna}).write(path)
    return ids


def test_embed_writes_into_the_mudatas_obsm_in_its_order(run, tmp_path):
    path = tmp_path / "books.h5mu"
    order = np.random.default_rng(1).permutation(N_BOOK)
    ids = books_mudata(path, order)
    before = md.read_h5mu(path)
    result = invoke("embed", run, "--entity", "book", "--out", path)
    assert result.exit_code == 0, result.output
    assert "into books.h5mu obsm['X_mmfuse']" in " ".join(result.output.split())
    z = np.load(run / "embeddings" / "book.npy")  # rows b0 … b47
    after = md.read_h5mu(path)
    np.testing.assert_array_equal(after.obsm["X_mmfuse"], z[order])
    assert list(after.obs_names) == ids
    np.testing.assert_array_equal(after["prot"].X, before["prot"].X)  # the rest is kept
    np.testing.assert_array_equal(after["prot"].obsm["X_pca"], before["prot"].obsm["X_pca"])
    # a modality's own obsm, in that modality's order
    result = invoke("embed", run, "--entity", "book", "--out", path, "--modality", "rna",
                    "--obsm", "X_fused")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(md.read_h5mu(path)["rna"].obsm["X_fused"], z[order[::2]])


def test_an_existing_key_or_unmatched_observations_leave_the_file_as_it_was(run, tmp_path):
    path = tmp_path / "books.h5mu"
    books_mudata(path, range(N_BOOK), extra=["stranger"])
    result = invoke("embed", run, "--entity", "book", "--out", path)
    assert result.exit_code == 1
    assert ("books.h5mu: 1 of its 49 observations have no embedding (the first: 'stranger')"
            in " ".join(result.output.split()))
    assert "X_mmfuse" not in md.read_h5mu(path).obsm
    path = tmp_path / "fewer.h5mu"
    books_mudata(path, range(10))  # embeddings without an observation: not written, said
    result = invoke("embed", run, "--entity", "book", "--out", path)
    assert result.exit_code == 0, result.output
    assert "38 embedded ids are no observation of the file" in " ".join(result.output.split())
    first = md.read_h5mu(path).obsm["X_mmfuse"].copy()
    result = invoke("embed", run, "--entity", "book", "--out", path)
    assert result.exit_code == 1 and "--replace" in result.output
    assert invoke("embed", run, "--entity", "book", "--out", path, "--replace").exit_code == 0
    np.testing.assert_array_equal(md.read_h5mu(path).obsm["X_mmfuse"], first)
    for args, message in (
            (["--out", tmp_path / "none.h5ad"], "no such file"),
            (["--out", path, "--modality", "atac"], "no modality 'atac'; it has prot, rna"),
            (["--out", tmp_path / "z.npy", "--obsm", "X_z"], "--modality and --replace are for")):
        result = invoke("embed", run, "--entity", "book", *args)
        assert result.exit_code != 0 and message in " ".join(result.output.split()), args


def test_embed_writes_into_an_h5ad(run, tmp_path):
    path = tmp_path / "books.h5ad"
    order = np.random.default_rng(2).permutation(N_BOOK)
    adata = ad.AnnData(np.zeros((N_BOOK, 2), np.float32),
                       obs=pd.DataFrame(index=[f"b{i}" for i in order]))
    adata.write_h5ad(path)
    result = invoke("embed", run, "--entity", "book", "--out", path)
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(ad.read_h5ad(path).obsm["X_mmfuse"],
                                  np.load(run / "embeddings" / "book.npy")[order])


def test_the_estimator_writes_a_mudatas_obsm():
    from mmfuse import FusionEmbedder

    rng = np.random.default_rng(0)
    u = rng.standard_normal((30, 2))
    ids = [f"c{i}" for i in range(30)]
    mods = {name: ad.AnnData((u @ rng.standard_normal((2, w))).astype(np.float32),
                             obs=pd.DataFrame(index=ids)) for name, w in (("a", 6), ("b", 5))}
    mdata = md.MuData(mods)
    fuse = FusionEmbedder(dim=2, epochs=1, random_state=0,
                          train__batch_size=16, train__threads=1).fit(mdata)
    assert fuse.write_obsm(mdata, key="X_fuse") is mdata
    np.testing.assert_allclose(mdata.obsm["X_fuse"], fuse.transform(mdata))
    np.testing.assert_allclose(mdata.obsm["X_fuse"], fuse.embedding_, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="write_obsm takes a MuData"):
        fuse.write_obsm(mods["a"])

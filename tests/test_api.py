"""The public Python API: ``import mmfuse`` stays cheap; ``load_spec``, ``Spec.from_dict``,
``train`` and ``Run``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import mmfuse


def test_import_mmfuse_loads_neither_torch_nor_sklearn():
    code = ("import sys, mmfuse; heavy = [m for m in ('torch', 'sklearn', 'pandas') "
            "if m in sys.modules]; print(heavy); mmfuse.Spec; mmfuse.load_spec")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    assert {"FusionEmbedder", "Run", "Spec", "load_spec", "train"} <= set(dir(mmfuse))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        mmfuse.nothing  # noqa: B018


def test_spec_from_dict_errors_point_at_each_field(tmp_path):
    data = {"name": "x", "entities": {"book": {"size": 0}},
            "views": {"v": {"rows": "book", "colz": "word",
                            "source": {"reader": "npy", "path": "v.npy"}}}}
    with pytest.raises(mmfuse.SpecError) as err:
        mmfuse.Spec.from_dict(data, base_dir=tmp_path)
    assert sorted(map(str, err.value.issues)) == [
        "<dict> entities.book.size: Input should be greater than 0",
        "<dict> views.v.colz: unknown key; did you mean 'cols'? known: rows, cols, features, "
        "tensor, source, encoder, col_encoder, likelihood, columns, sketch_dim, weight, "
        "missing, scale, decode_from, negatives, encoder_cells, terms, instances"]
    with pytest.raises(mmfuse.SpecError, match="a spec is a YAML mapping"):
        mmfuse.Spec.from_dict(["not", "a", "mapping"])
    data["entities"]["book"] = {"size": 3}
    del data["views"]["v"]["colz"]
    spec = mmfuse.Spec.from_dict(data, base_dir=tmp_path)
    assert spec.views["v"].source.path == tmp_path.resolve() / "v.npy"


def test_train_run_open_embeddings_evaluation_and_embed(multiview, tmp_path):
    run = mmfuse.train(mmfuse.load_spec(multiview), tmp_path / "run")
    again = mmfuse.Run.open(tmp_path / "run")
    books = again.embeddings("book")
    assert books.index.name == "book" and list(books.index[:2]) == ["b0", "b1"]
    assert list(books.columns) == [f"z{i}" for i in range(8)] and books.shape == (48, 8)
    assert again.evaluation["targets"].keys() >= {"label", "score"}
    assert again.entities == ["book", "user", "word"] and len(again.metrics) == 2
    # the training books, embedded again through the encoders, land where training put them
    covers = np.load(multiview.parent / "covers.npy")[:5]
    text = np.load(multiview.parent / "text.npy")[:5]
    import scipy.sparse as sp

    ratings = sp.load_npz(multiview.parent / "ratings.npz").toarray().T[:5]
    ratings[ratings == 0] = np.nan  # unstored cells are missing
    data = {"cover": covers, "text": text, "ratings": sp.csr_array(np.nan_to_num(ratings))}
    for model in (run, again):
        new = model.embed("book", data, ids=[f"n{i}" for i in range(5)])
        assert list(new.index) == ["n0", "n1", "n2", "n3", "n4"]
        np.testing.assert_allclose(new.to_numpy(), books.to_numpy()[:5], atol=1e-5)
    with pytest.raises(mmfuse.MmfuseError, match="not an mmfuse run folder"):
        mmfuse.Run.open(tmp_path)

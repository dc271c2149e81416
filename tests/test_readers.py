"""Built-in readers on small files in their real formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gensim
import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from mmfuse.data import MatrixData
from mmfuse.plugin_api import ReadContext
from mmfuse.plugins import get_plugins

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"


def ctx(tmp_path, row_ids=None):
    return ReadContext(view="v", row_ids=row_ids, col_ids=None, spec_dir=tmp_path)


def reader(name):
    return get_plugins().readers.get(name)


def test_npy_is_memory_mapped(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    out = reader("npy")(tmp_path / "a.npy", {}, ctx(tmp_path))
    assert isinstance(out.data, np.memmap)
    assert out.data[2, 3] == 11


def test_npz_sparse_missing_cells_are_masked_and_stored_zeros_observed(tmp_path):
    m = sp.csr_array((np.array([0.0, 2.0, 3.0]), (np.array([0, 1, 2]), np.array([1, 0, 2]))),
                     shape=(3, 3))
    sp.save_npz(tmp_path / "m.npz", m)
    out = reader("npz")(tmp_path / "m.npz", {}, ctx(tmp_path))
    assert sp.issparse(out.data)
    data = MatrixData(out.data, out.mask)
    values, mask = data.rows(np.array([0, 1]))
    assert mask.tolist() == [[False, True, False], [True, False, False]]  # stored 0 observed
    assert values.tolist() == [[0, 0, 0], [2, 0, 0]]
    cols, cmask = data.cols(np.array([2]))
    assert cmask.tolist() == [[False, False, True]] and cols[0, 2] == 3.0


def test_images_reader_keeps_aspect_pads_and_aligns_by_id(tmp_path):
    folder = tmp_path / "covers"
    folder.mkdir()
    Image.new("RGB", (40, 20), (255, 0, 0)).save(folder / "b1.jpg")  # wide, red
    Image.new("RGB", (20, 40), (0, 0, 255)).save(folder / "b2.png")  # tall, blue
    Image.new("L", (16, 16), 200).save(folder / "b3", format="PNG")  # no extension, grey
    out = reader("images")(folder, {"size": 16}, ctx(tmp_path, ["b2", "b1", "b3"]))
    assert out.data.shape == (3, 3, 16, 16) and out.data.dtype == np.uint8
    assert out.row_ids == ["b2", "b1", "b3"]
    blue, red, grey = out.data
    assert blue[2, 8, 8] > 200 and blue[0, 8, 8] < 30  # the tall blue one is first
    assert blue[2, 8, 0] == 0  # padded left and right, not stretched
    assert red[0, 8, 8] > 200 and red[0, 0, 8] == 0  # padded top and bottom
    assert (grey[:, 8, 8] == 200).all()
    cached = list((folder / ".mmfuse-cache").glob("*.npy"))
    assert len(cached) == 1
    again = reader("images")(folder, {"size": 16}, ctx(tmp_path, ["b2", "b1", "b3"]))
    assert np.array_equal(again.data, out.data)
    assert list((folder / ".mmfuse-cache").glob("*.npy")) == cached  # the cache was reused


def test_images_reader_composites_transparency_on_white(tmp_path):
    folder = tmp_path / "emoji"
    folder.mkdir()
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    img.putpixel((8, 8), (255, 0, 0, 255))
    img.save(folder / "e1.png")
    out = reader("images")(folder, {"size": 16}, ctx(tmp_path, ["e1"]))
    assert out.data[0, :, 0, 0].tolist() == [255, 255, 255]  # transparent → white
    assert out.data[0, :, 8, 8].tolist() == [255, 0, 0]
    rgba = reader("images")(folder, {"size": 16, "mode": "RGBA"}, ctx(tmp_path, ["e1"]))
    assert rgba.data.shape == (1, 4, 16, 16) and rgba.data[0, 3, 0, 0] == 0


def test_images_reader_refuses_a_missing_image(tmp_path):
    folder = tmp_path / "covers"
    folder.mkdir()
    Image.new("RGB", (16, 16)).save(folder / "a.png")
    with pytest.raises(ValueError, match="no image for 1 of 2 ids.*first: zz"):
        reader("images")(folder, {}, ctx(tmp_path, ["a", "zz"]))


def test_word2vec_tokenizer_is_the_papers_cleaning():
    from mmfuse_readers.text import tokenize

    assert tokenize("The 3 Dragons of 1999 AND the Sword's edge!", clean=True) == [
        "dragons", "sword's", "edge"]
    assert tokenize("The 3 Dragons", clean=False) == ["the", "3", "dragons"]


WORD2VEC_SCRIPT = """
import sys, numpy as np
from pathlib import Path
from mmfuse.plugins import get_plugins
from mmfuse.plugin_api import ReadContext
p = Path(sys.argv[1])
ctx = ReadContext("v", None, None, p.parent)
out = get_plugins().readers.get("word2vec")(p, {"vector_size": 16, "epochs": 2}, ctx)
np.save(sys.argv[2], np.asarray(out.data))
"""


def test_word2vec_vectors_repeat_across_processes(tmp_path):
    """gensim seeds with hash(); Python salts str hashes per process.  Two processes with
    different PYTHONHASHSEED and no shared cache must give the same vectors."""
    docs = LEE.read_text(encoding="utf-8").splitlines()[:120] + ["", "12345 the and"]
    results = []
    for i, hashseed in enumerate(("1", "2")):
        folder = tmp_path / f"p{i}"
        folder.mkdir()
        (folder / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
        env = {"PYTHONHASHSEED": hashseed, "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-c", WORD2VEC_SCRIPT, folder / "docs.txt",
                        folder / "out.npy"], check=True, env=env)
        results.append(np.load(folder / "out.npy"))
    assert results[0].shape == (122, 16)
    assert np.array_equal(results[0], results[1])
    assert np.abs(results[0][:120]).sum(axis=1).min() > 0
    assert np.all(results[0][120:] == 0)  # empty and stop-word-only documents


def test_word2vec_records_parameters_and_rejects_unknown_ones(tmp_path):
    (tmp_path / "d.txt").write_text("a dragon flew\nthe market crashed\n")
    out = reader("word2vec")(tmp_path / "d.txt", {"vector_size": 8, "epochs": 1}, ctx(tmp_path))
    assert out.info["params"]["vector_size"] == 8 and out.info["params"]["clean"] is True
    assert out.data.shape == (2, 8)
    with pytest.raises(ValueError, match="unknown params.*vectorsize"):
        reader("word2vec")(tmp_path / "d.txt", {"vectorsize": 8}, ctx(tmp_path))

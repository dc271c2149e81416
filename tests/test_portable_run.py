"""A run is a self-contained model (issue 9 part 4): a run folder copied elsewhere, with its
training data deleted, embeds new instances — new raw text through the saved word2vec and
tf-idf state — with their ids, from the command line and from Python."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from mmfuse.cli import app
from mmfuse.errors import DataError
from mmfuse.plugins import get_plugins

N_BOOK, N_USER, DIM = 40, 20, 4
TOPICS = [["dragon", "castle", "knight", "sword", "quest", "magic"],
          ["market", "stock", "price", "bank", "money", "trade"]]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def flat(output: str) -> str:
    return " ".join(output.split())


def documents(rng: np.random.Generator, topics: np.ndarray) -> list[str]:
    """One line per book: words of its topic, and a few of the other."""
    return [" ".join(rng.choice(TOPICS[t] * 3 + TOPICS[1 - t], size=8)) for t in topics]


def write_project(root: Path) -> Path:
    """Books with a word2vec text view, a tf-idf text view, facts on very different scales
    (``scale: standard``; 0 for unknown: ``missing: zero``) and a sparse users × books
    ratings view (book is its column entity); the raw inputs are copied to ``root/../raw``
    before anything is trained."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    topic = rng.integers(0, 2, N_BOOK)
    (root / "docs.txt").write_text("\n".join(documents(rng, topic)) + "\n", encoding="utf-8")
    facts = np.stack([200 + 80 * topic + 10 * rng.standard_normal(N_BOOK),  # pages
                      1990 + 5 * rng.standard_normal(N_BOOK)], axis=1).astype(np.float32)
    facts[3, 1] = np.nan  # a missing cell
    facts[5, 0] = 0.0  # missing too (`missing: zero`): not (0 - mean) / std
    np.save(root / "facts.npy", facts)
    ratings = np.where(rng.random((N_USER, N_BOOK)) < 0.3,
                       1 + 4 * rng.random((N_USER, N_BOOK)), 0.0)
    sp.save_npz(root / "ratings.npz", sp.csr_array(ratings))
    (root / "book_ids.txt").write_text("".join(f"bk{i}\n" for i in range(N_BOOK)))
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: portable
        seed: 0
        entities:
          book: {{ids: book_ids.txt}}
          user: {{size: {N_USER}}}
        views:
          text:
            rows: book
            source: {{reader: word2vec, path: docs.txt,
                     params: {{vector_size: 6, epochs: 5, min_count: 1}}}}
          lsa:
            rows: book
            source: {{reader: tfidf, path: docs.txt, params: {{dim: 3}}}}
          facts:
            rows: book
            source: {{reader: npy, path: facts.npy}}
            scale: standard
            missing: zero
          ratings:
            rows: user
            cols: book
            source: {{reader: npz, path: ratings.npz}}
        model: {{preset: mmeda2, dim: {DIM}}}
        train: {{epochs: 2, batch_size: 20, device: cpu, tol: 0.0}}
        """))
    raw = root.parent / "raw"
    raw.mkdir()
    shutil.copy(root / "docs.txt", raw / "docs.txt")
    np.save(raw / "facts.npy", facts)
    sp.save_npz(raw / "ratings_cols.npz", sp.csr_array(sp.csr_array(ratings).T))
    return spec


@pytest.fixture(scope="module")
def moved(tmp_path_factory) -> tuple[Path, Path]:
    """(the run folder copied elsewhere, its training data deleted; the raw inputs)."""
    root = tmp_path_factory.mktemp("portable")
    spec = write_project(root / "data")
    result = invoke("train", spec, "--out", root / "run", "-q", "--no-report")
    assert result.exit_code == 0, result.output
    copy = root / "elsewhere" / "model"
    shutil.copytree(root / "run", copy)
    shutil.rmtree(root / "run")
    shutil.rmtree(root / "data")  # the training files and their featurizer caches
    return copy, root / "raw"


def test_run_folder_keeps_what_embedding_needs(moved):
    run, _ = moved
    inputs = json.loads((run / "inputs.json").read_text())
    assert inputs["entities"] == {"book": N_BOOK, "user": N_USER}
    assert inputs["views"]["ratings"]["sparse"] is True
    assert inputs["views"]["facts"]["scale"] == "standard"
    assert inputs["views"]["text"]["featurizer"]["reader"] == "word2vec"
    with np.load(run / "inputs" / "facts.npz") as facts:
        assert facts["scale.center"].shape == (2,) and facts["scale.spread"][1] > 1
    with np.load(run / "inputs" / "text.npz") as text:
        assert text["featurizer.vectors"].shape[1] == 6  # the word vectors (vocabulary × 6)
        assert len(text["featurizer.vectors"]) == len(set(sum(TOPICS, [])))
    with np.load(run / "inputs" / "lsa.npz") as lsa:
        assert lsa["featurizer.components"].shape[0] == 3
    manifest = json.loads((run / "manifest.json").read_text())
    readers = manifest["plugins"]["readers"]
    assert readers["distribution"].startswith("mmfuse ")
    assert {"reader word2vec", "reader tfidf", "reader npy", "reader npz"} <= set(
        readers["uses"])
    git = manifest["mmfuse_git"]  # the tests run from a checkout
    assert git is None or re.fullmatch(r"[0-9a-f]{40}", git["commit"])


def test_cli_embeds_raw_training_inputs_into_the_saved_embeddings(moved, tmp_path):
    """The training books' own raw text (through the saved word2vec and tf-idf state),
    facts (through the saved scaling) and ratings give back the run's embeddings."""
    run, raw = moved
    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"new,{i}\n" for i in range(N_BOOK)))  # a comma: quoted in CSV
    data = ["--data", f"text={raw / 'docs.txt'}", "--data", f"lsa={raw / 'docs.txt'}",
            "--data", f"facts={raw / 'facts.npy'}", "--data", f"ratings={raw / 'ratings_cols.npz'}"]
    out = tmp_path / "z.npy"
    result = invoke("embed", run, "--entity", "book", "--out", out, "--ids", ids, *data)
    assert result.exit_code == 0, result.output
    saved = np.load(run / "embeddings" / "book.npy")
    np.testing.assert_allclose(np.load(out), saved, atol=1e-5)
    assert out.with_suffix(".ids.txt").read_text().splitlines() == [
        f"new,{i}" for i in range(N_BOOK)]
    csv_out = tmp_path / "z.csv"
    result = invoke("embed", run, "--entity", "book", "--out", csv_out, "--ids", ids, *data)
    assert result.exit_code == 0, result.output
    assert csv_out.read_text().splitlines()[1].startswith('"new,0",')


def test_python_api_embeds_new_text_with_ids(moved):
    """New books, as lists of documents: a copy of a training book's text gives its
    embedding; a book with other words gets another one; the rows carry the given ids."""
    from mmfuse.trained import Run

    run_dir, raw = moved
    docs = (raw / "docs.txt").read_text(encoding="utf-8").splitlines()
    facts = np.load(raw / "facts.npy")
    ratings = sp.load_npz(raw / "ratings_cols.npz").tocsr()
    run = Run.open(run_dir)
    new = [docs[5], "castle knight magic dragon bank", docs[7]]
    rows = [5, 6, 7]
    frame = run.embed("book", {"text": new, "lsa": new, "facts": facts[rows],
                               "ratings": ratings[rows]}, ids=["x5", "mixed", "x7"])
    assert list(frame.index) == ["x5", "mixed", "x7"] and frame.index.name == "book"
    saved = run.embeddings("book")
    np.testing.assert_allclose(frame.loc[["x5", "x7"]].to_numpy(),
                               saved.loc[["bk5", "bk7"]].to_numpy(), atol=1e-5)
    assert np.abs(frame.loc["mixed"].to_numpy() - saved.loc["bk6"].to_numpy()).max() > 1e-4
    with pytest.raises(DataError, match="unknown entity 'author'; known: book, user"):
        run.embed("author", {"text": new})
    # a file of documents is featurized alike
    again = run.embed("book", {"text": raw / "docs.txt", "lsa": str(raw / "docs.txt"),
                               "facts": raw / "facts.npy", "ratings": ratings})
    np.testing.assert_allclose(again.to_numpy(), saved.to_numpy(), atol=1e-5)
    assert list(again.index) == list(range(N_BOOK))


def test_predict_new_rows_from_the_moved_run(moved, tmp_path):
    """``predict --data`` (new users' ratings) and known rows' cells need no training data."""
    run, raw = moved
    ratings = sp.load_npz(raw / "ratings_cols.npz").T.tocsr()  # users × books
    sp.save_npz(tmp_path / "users.npz", sp.csr_array(ratings[:2]))
    (tmp_path / "users.txt").write_text("ann\nbob\n")
    out = tmp_path / "top.csv"
    result = invoke("predict", run, "--view", "ratings", "--data",
                    f"ratings={tmp_path / 'users.npz'}", "--ids", tmp_path / "users.txt",
                    "--top", 3, "--out", out)
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0] == "user,rank,book,prediction" and len(lines) == 7
    assert lines[1].startswith("ann,1,bk") and lines[4].startswith("bob,1,bk")
    result = invoke("predict", run, "--view", "ratings", "--rows", "0,1", "--cols", "bk0,bk3")
    assert result.exit_code == 0, result.output
    result = invoke("predict", run, "--view", "ratings", "--rows", "0", "--top", 2)
    assert result.exit_code == 1
    assert "reads the run's training data, which cannot be read" in flat(result.output)


def test_embed_errors_say_what_to_fix(moved, tmp_path):
    run, raw = moved
    base = ["embed", run, "--entity", "book", "--out", tmp_path / "z.npy"]
    given = ["--data", f"text={raw / 'docs.txt'}", "--data", f"lsa={raw / 'docs.txt'}",
             "--data", f"facts={raw / 'facts.npy'}",
             "--data", f"ratings={raw / 'ratings_cols.npz'}"]
    result = invoke(*base, *given, "--data", f"cover={raw / 'facts.npy'}")
    assert result.exit_code == 1
    assert "unknown view 'cover'; the views of entity 'book' are facts, lsa, ratings, text" in (
        flat(result.output))
    np.save(tmp_path / "wide.npy", np.zeros((N_BOOK, 3), np.float32))
    result = invoke(*base, *given[:4], "--data", f"facts={tmp_path / 'wide.npy'}", *given[6:])
    assert result.exit_code == 1
    assert "view 'facts': data has shape [40, 3]; expected [n, 2]" in flat(result.output)
    result = invoke(*base, *given[:4], "--data", f"facts={raw / 'docs.txt'}", *given[6:])
    assert result.exit_code == 1
    assert "not a .npy file" in flat(result.output)
    (tmp_path / "two.txt").write_text("a\nb\n")
    result = invoke(*base, *given, "--ids", tmp_path / "two.txt")
    assert result.exit_code == 1
    assert "lists 2 ids for 40 new instances" in flat(result.output)


def test_old_run_folder_without_state_says_to_retrain(moved, tmp_path):
    run, raw = moved
    old = tmp_path / "old"
    shutil.copytree(run, old)
    inputs = json.loads((old / "inputs.json").read_text())
    del inputs["views"]["text"]["featurizer"]  # as if its reader had featurized no input
    (old / "inputs.json").write_text(json.dumps(inputs))
    result = invoke("embed", old, "--entity", "book", "--out", tmp_path / "z.npy",
                    "--data", f"text={raw / 'docs.txt'}", "--data", f"lsa={raw / 'docs.txt'}",
                    "--data", f"facts={raw / 'facts.npy'}",
                    "--data", f"ratings={raw / 'ratings_cols.npz'}")
    assert result.exit_code == 1
    message = flat(result.output)
    assert "the run keeps no word2vec state for view 'text'" in message
    assert "train it again" in message
    (old / "inputs.json").unlink()  # a run folder of an older mmfuse, its data gone too
    result = invoke("embed", old, "--entity", "book", "--out", tmp_path / "z.npy",
                    "--data", f"facts={raw / 'facts.npy'}")
    assert result.exit_code == 1
    message = flat(result.output)
    assert "made by an older mmfuse: it keeps no inputs.json" in message
    assert "train it again" in message


def test_featurizers_reproduce_their_training_output(tmp_path):
    """word2vec and tf-idf: new documents through the state the reader returned are
    featurized as the training documents were (new words are skipped)."""
    from mmfuse.plugin_api import ReadContext, declared_featurizer

    rng = np.random.default_rng(1)
    docs = documents(rng, rng.integers(0, 2, 30))
    (tmp_path / "d.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    (tmp_path / "new.txt").write_text(f"{docs[2]}\nunseen words only\n{docs[0]} zebra\n")
    ctx = ReadContext(view="v", row_ids=None, col_ids=None, spec_dir=tmp_path)
    for name, params in [("word2vec", {"vector_size": 5, "epochs": 3}),
                         ("tfidf", {"dim": 4, "ngram_range": [1, 2]})]:
        reader = get_plugins().readers.get(name)
        read = reader(tmp_path / "d.txt", params, ctx)
        featurize = declared_featurizer(reader)
        assert featurize is not None and read.state
        full = {**read.info["params"]}
        new = featurize(tmp_path / "new.txt", full, read.state, ctx).data
        np.testing.assert_allclose(new[0], read.data[2], atol=1e-5, err_msg=name)
        np.testing.assert_allclose(new[2], read.data[0], atol=1e-5, err_msg=name)
        assert np.all(new[1] == 0), name  # no word it knows
        again = reader(tmp_path / "d.txt", params, ctx)  # from the cache: the same state
        assert all(np.array_equal(again.state[k], read.state[k]) for k in read.state)


def test_git_checkout_is_none_outside_a_checkout(monkeypatch, tmp_path):
    import mmfuse
    from mmfuse.api import git_checkout

    git_checkout.cache_clear()
    (tmp_path / "mmfuse").mkdir()
    with monkeypatch.context() as patch:  # an installed mmfuse, no checkout around it
        patch.setattr(mmfuse, "__file__", str(tmp_path / "mmfuse" / "__init__.py"))
        try:
            assert git_checkout() is None
        finally:
            git_checkout.cache_clear()
    here = git_checkout()
    if (Path(__file__).resolve().parents[1] / ".git").exists():
        assert here is not None and re.fullmatch(r"[0-9a-f]{40}", here["commit"])


def test_readme_featurizer_plugin_embeds_new_documents_from_a_moved_run(tmp_path):
    """The README's third-party reader, declared with ``@featurizer``: its run folder,
    moved and without its training data, featurizes new documents with the saved
    vocabulary."""
    import types

    from mmfuse.api import embed_new, load_trained, new_inputs, train
    from mmfuse.plugins import collect, make_manager
    from mmfuse.run import RunDir
    from mmfuse.spec import Spec

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S)
                if "# mmfuse_counts/__init__.py" in b)
    module = types.ModuleType("mmfuse_counts")
    exec(code, module.__dict__)
    plugins = collect(make_manager(extra=[module]))
    rng = np.random.default_rng(2)
    docs = documents(rng, rng.integers(0, 2, 24))
    data = tmp_path / "data"
    data.mkdir()
    (data / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    spec = Spec.from_dict({
        "name": "counts", "entities": {"book": {}},
        "views": {"words": {"rows": "book", "source": {"reader": "counts", "path": "docs.txt"}}},
        "model": {"dim": 3}, "train": {"epochs": 2, "batch_size": 12, "device": "cpu"}},
        base_dir=data)
    train(spec, tmp_path / "run", plugins=plugins, evaluate=False)
    shutil.copytree(tmp_path / "run", tmp_path / "moved")
    shutil.rmtree(tmp_path / "run")
    shutil.rmtree(data)
    built = load_trained(RunDir(tmp_path / "moved"), plugins)
    z = embed_new(built, "book", new_inputs(built, "book", {"words": [docs[4], docs[9]]},
                                            plugins=plugins))
    saved = np.load(tmp_path / "moved" / "embeddings" / "book.npy")
    np.testing.assert_allclose(z, saved[[4, 9]], atol=1e-5)


def test_a_run_just_trained_embeds_new_text_as_the_reopened_folder_does(tmp_path):
    """``mmfuse.train`` → a Run holding its model (and its reader's live state): new text
    embeds as through the run folder reopened (``Run.open``), and the training text as the
    run saved it."""
    from mmfuse.spec import Spec
    from mmfuse.trained import Run, train

    rng = np.random.default_rng(3)
    docs = documents(rng, rng.integers(0, 2, 20))
    (tmp_path / "docs.txt").write_text("\n".join(docs) + "\n", encoding="utf-8")
    spec = Spec.from_dict({"name": "w2v", "entities": {"book": {}},
                           "views": {"text": {"rows": "book", "source": {
                               "reader": "word2vec", "path": "docs.txt",
                               "params": {"vector_size": 5, "epochs": 3}}}},
                           "model": {"dim": 3}, "train": {"epochs": 2, "device": "cpu"}},
                          base_dir=tmp_path)
    run = train(spec, tmp_path / "run")
    new = ["magic quest sword", docs[11]]
    live = run.embed("book", {"text": new}, ids=["n0", "n1"])
    reopened = Run.open(tmp_path / "run").embed("book", {"text": new}, ids=["n0", "n1"])
    np.testing.assert_allclose(live.to_numpy(), reopened.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(live.loc["n1"].to_numpy(),
                               run.embeddings("book").iloc[11].to_numpy(), atol=1e-5)


def test_moved_run_embeds_new_images_by_id(tmp_path):
    """An ``images`` view: new covers, a folder of files named by the new books' ids
    (``--ids``), are decoded as in training; the training covers give back the saved
    embeddings."""
    from PIL import Image

    covers = tmp_path / "data" / "covers"
    covers.mkdir(parents=True)
    rng = np.random.default_rng(4)
    names = [f"c{i}" for i in range(12)]
    for name in names:
        pixels = rng.integers(0, 256, (20, 14, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(covers / f"{name}.png")
    (tmp_path / "data" / "ids.txt").write_text("\n".join(names) + "\n")
    spec = tmp_path / "data" / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        name: covers
        entities:
          book: {ids: ids.txt}
        views:
          cover:
            rows: book
            tensor: {shape: [3, 16, 16]}
            source: {reader: images, path: covers, params: {size: 16}}
            encoder: {type: conv, params: {channels: [2], hidden: 4}}
        model: {dim: 3}
        train: {epochs: 1, batch_size: 6, device: cpu}
        """))
    result = invoke("train", spec, "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    new = tmp_path / "new"
    shutil.copytree(covers, new)
    (tmp_path / "new_ids.txt").write_text("c7\nc2\n")
    shutil.move(tmp_path / "run", tmp_path / "moved")
    shutil.rmtree(tmp_path / "data")
    out = tmp_path / "z.npy"
    base = ["embed", tmp_path / "moved", "--entity", "book", "--out", out, "--data",
            f"cover={new}"]
    result = invoke(*base, "--ids", tmp_path / "new_ids.txt")
    assert result.exit_code == 0, result.output
    saved = np.load(tmp_path / "moved" / "embeddings" / "book.npy")
    np.testing.assert_allclose(np.load(out), saved[[7, 2]], atol=1e-5)
    assert out.with_suffix(".ids.txt").read_text().split() == ["c7", "c2"]
    result = invoke(*base)
    assert result.exit_code == 1 and "give the new instances' ids (--ids" in flat(result.output)

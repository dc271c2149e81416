"""The table, triplets, anndata and mudata readers: one model trained from the same data in
every format gives the same embeddings, to the bit; bad files give errors naming the file,
the field and an example id."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmfuse import Spec, SpecError
from mmfuse.api import train
from mmfuse.plugin_api import ReadContext
from mmfuse.plugins import get_plugins

N_BOOK, N_USER, N_WORD = 30, 20, 12


def write_arrays(root: Path, seed: int = 0) -> dict:
    """Books × words (dense), books × 3 facts, users × books ratings (sparse, a few stored
    zeros), as .npy/.npz, with id files; returns the arrays and ids."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    u = rng.standard_normal((N_BOOK, 2))
    text = (u @ rng.standard_normal((2, N_WORD))).astype(np.float32)
    text[3, 4] = np.nan  # a missing cell
    facts = u @ rng.standard_normal((2, 3)) + 5.0
    ratings = rng.standard_normal((N_USER, 2)) @ u.T
    keep = rng.random(ratings.shape) < 0.3
    keep[0, :3] = True
    ratings[0, :3] = 0.0  # stored zeros are observed
    r, c = np.nonzero(keep)
    rating_m = sp.csr_array((ratings[r, c], (r, c)), shape=ratings.shape)
    books = [f"b{i:03d}" for i in range(N_BOOK)]
    users = [f"u{i}" for i in range(N_USER)]
    words = [f"w{i}" for i in range(N_WORD)]
    np.save(root / "text.npy", text)
    np.save(root / "facts.npy", facts)
    sp.save_npz(root / "ratings.npz", rating_m)
    for name, ids in (("book", books), ("user", users), ("word", words)):
        (root / f"{name}_ids.txt").write_text("".join(f"{i}\n" for i in ids))
    return {"text": text, "facts": facts, "ratings": rating_m, "books": books,
            "users": users, "words": words}


def spec_text(sources: dict[str, str], word_ids: bool = True) -> str:
    word = "{ids: word_ids.txt}" if word_ids else "{}"
    return textwrap.dedent(f"""\
        name: formats
        seed: 3
        entities:
          book: {{ids: book_ids.txt}}
          user: {{ids: user_ids.txt}}
          word: {word}
        views:
          text: {{rows: book, cols: word, source: {sources['text']}}}
          facts: {{rows: book, source: {sources['facts']}, scale: standard}}
          ratings: {{rows: user, cols: book, source: {sources['ratings']}}}
        model: {{preset: mmeda2, dim: 4}}
        train: {{epochs: 2, batch_size: 8, device: cpu, tol: 0.0, threads: 1}}
        """)


NPY = {"text": "{reader: npy, path: text.npy}", "facts": "{reader: npy, path: facts.npy}",
       "ratings": "{reader: npz, path: ratings.npz}"}


def embeddings(root: Path, sources: dict[str, str], **kw) -> dict:
    spec_file = root / "spec.yaml"
    spec_file.write_text(spec_text(sources, **kw))
    from mmfuse import load_spec

    out = root / f"run{len(list(root.glob('run*')))}"
    result = train(load_spec(spec_file), out, evaluate=False)
    return {e: result.run.read_embeddings(e) for e in ("book", "user", "word")}


def assert_same(a: dict, b: dict) -> None:
    for entity in a:
        np.testing.assert_array_equal(a[entity][0], b[entity][0], err_msg=entity)
        assert a[entity][1] == b[entity][1], entity


def long_ratings(data: dict, rng) -> pd.DataFrame:
    coo = data["ratings"].tocoo()
    frame = pd.DataFrame({"user": np.array(data["users"])[coo.row],
                          "book": np.array(data["books"])[coo.col], "stars": coo.data})
    return frame.iloc[rng.permutation(len(frame))]  # any order


def test_parquet_csv_and_triplets_train_the_same_model_as_npy(tmp_path):
    rng = np.random.default_rng(1)
    data = write_arrays(tmp_path)
    reference = embeddings(tmp_path, NPY)
    order = rng.permutation(N_BOOK)  # tables list the books in another order: mapped by id
    text = pd.DataFrame(data["text"][order], columns=data["words"])
    text.insert(0, "book", np.array(data["books"])[order])
    text = text[["book", *data["words"][::-1]]]  # columns in another order too
    text.to_parquet(tmp_path / "text.parquet")
    facts = pd.DataFrame(data["facts"][order], columns=["pages", "year", "price"])
    facts.insert(0, "book", np.array(data["books"])[order])
    facts.to_csv(tmp_path / "facts.csv", index=False)
    long_ratings(data, rng).to_parquet(tmp_path / "ratings.parquet")
    long_ratings(data, rng).to_csv(tmp_path / "ratings.tsv", sep="\t", index=False)
    tables = {"text": "{reader: table, path: text.parquet, params: {id: book}}",
              "facts": "{reader: table, path: facts.csv}",
              "ratings": "{reader: triplets, path: ratings.parquet}"}
    assert_same(reference, embeddings(tmp_path, tables))
    # word has no ids file: it takes the table's column names, in their order there
    text[["book", *data["words"]]].to_parquet(tmp_path / "text_plain.parquet")
    tsv = {"text": "{reader: table, path: text_plain.parquet, params: {id: book}}",
           "facts": tables["facts"], "ratings": "{reader: triplets, path: ratings.tsv, "
           "params: {row: user, col: book, value: stars}}"}
    assert_same(reference, embeddings(tmp_path, tsv, word_ids=False))


def test_h5ad_and_h5mu_train_the_same_model_as_npy(tmp_path):
    ad = pytest.importorskip("anndata")
    md = pytest.importorskip("mudata")
    data = write_arrays(tmp_path)
    reference = embeddings(tmp_path, NPY)
    order = np.random.default_rng(2).permutation(N_BOOK)
    books = np.array(data["books"])[order]
    text = ad.AnnData(data["text"][order], obs=pd.DataFrame(index=books),
                      var=pd.DataFrame(index=data["words"]))
    facts = ad.AnnData(data["facts"][order].astype(np.float32),
                       obs=pd.DataFrame(index=books))
    facts.obsm["raw"] = data["facts"][order]
    text.write_h5ad(tmp_path / "text.h5ad")
    md.MuData({"words": text, "facts": facts}).write(tmp_path / "books.h5mu")
    ratings = ad.AnnData(data["ratings"].tocsr(), obs=pd.DataFrame(index=data["users"]),
                         var=pd.DataFrame(index=data["books"]))
    ratings.write_h5ad(tmp_path / "ratings.h5ad")
    annotated = {"text": "{reader: mudata, path: books.h5mu, params: {modality: words}}",
                 "facts": "{reader: mudata, path: books.h5mu, params: {obsm: raw}}",
                 "ratings": "{reader: anndata, path: ratings.h5ad}"}
    assert_same(reference, embeddings(tmp_path, annotated))
    bad = {**annotated, "text": "{reader: mudata, path: books.h5mu, params: {modality: rna}}"}
    with pytest.raises(SpecError, match=r"views\.text\.source: .*books\.h5mu: no modality "
                       r"'rna'; it has facts, words"):
        embeddings(tmp_path, bad)


def test_a_modality_with_some_observations_is_a_partial_view(tmp_path):
    """A MuData modality that lacks some books trains the model that the same data as .npy
    with those books' rows missing (NaN) trains; an entity with no ids file takes the
    MuData's observations; a sparse modality gets rows with no stored cell."""
    ad = pytest.importorskip("anndata")
    md = pytest.importorskip("mudata")
    data = write_arrays(tmp_path)
    has = np.random.default_rng(4).permutation(N_BOOK)[:20]  # the books with facts
    facts = np.full_like(data["facts"], np.nan)
    facts[has] = data["facts"][has]
    np.save(tmp_path / "facts.npy", facts)
    reference = embeddings(tmp_path, NPY)
    books = np.array(data["books"])
    text = ad.AnnData(data["text"], obs=pd.DataFrame(index=books),
                      var=pd.DataFrame(index=data["words"]))
    part = ad.AnnData(data["facts"][has], obs=pd.DataFrame(index=books[has]))
    md.MuData({"words": text, "facts": part}).write(tmp_path / "books.h5mu")
    annotated = {"text": "{reader: mudata, path: books.h5mu, params: {modality: words}}",
                 "facts": "{reader: mudata, path: books.h5mu}", "ratings": NPY["ratings"]}
    assert_same(reference, embeddings(tmp_path, annotated))

    out = read("mudata", tmp_path / "books.h5mu", {"modality": "facts"},
               ctx(tmp_path, view="facts"))
    assert out.row_ids == list(books)  # the MuData's observations, not the modality's
    np.testing.assert_array_equal(out.mask.all(axis=1), np.isin(np.arange(N_BOOK), has))
    np.testing.assert_array_equal(out.data[has], data["facts"][has])
    cells = sp.csr_array(np.where(np.abs(data["text"]) > 1, 1.0, 0.0)[has])
    sparse = ad.AnnData(cells, obs=pd.DataFrame(index=books[has]))
    md.MuData({"words": text, "bag": sparse}).write(tmp_path / "bag.h5mu")
    out = read("mudata", tmp_path / "bag.h5mu", {}, ctx(tmp_path, view="bag"))
    assert out.mask is None and out.data.shape == (N_BOOK, N_WORD)
    np.testing.assert_array_equal(out.data[has].toarray(), cells.toarray())
    assert out.data[np.setdiff1d(np.arange(N_BOOK), has)].nnz == 0
    stranger = ctx(tmp_path, view="bag", row_ids=[*books[:5], "x"])  # an unknown book
    with pytest.raises(ValueError, match=r"bag\.h5mu modality 'bag': \d+ obs ids are not "
                       r"ids of the entity"):
        read("mudata", tmp_path / "bag.h5mu", {}, stranger)


def ctx(tmp_path, view="v", row_ids=None, col_ids=None) -> ReadContext:
    return ReadContext(view=view, row_ids=row_ids, col_ids=col_ids, spec_dir=tmp_path)


def read(name, path, params, context):
    return get_plugins().readers.get(name)(path, params, context)


def test_triplets_unknown_id_is_an_error_naming_file_and_id(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("user,book,stars\nu0,b1,4\nu1,b9,5\nu0,b2,1\n")
    known = ctx(tmp_path, row_ids=["u0", "u1"], col_ids=["b0", "b1", "b2"])
    with pytest.raises(ValueError, match=r"ratings\.csv: 1 column ids are not ids of the "
                       r"entity, e.g. 'b9' \(data row 2;"):
        read("triplets", path, {}, known)
    path.write_text("user,book,stars\nu0,b1,4\nu1,b2,5\nu0,b1,1\n")
    with pytest.raises(ValueError, match=r"the pair \('u0', 'b1'\) is listed twice"):
        read("triplets", path, {}, known)
    path.write_text("user,book,stars\nu0,b1,4\nu1,b2,\n")
    with pytest.raises(ValueError, match="data row 2 has no value"):
        read("triplets", path, {}, known)
    path.write_text("user,book\nu1,b2\nu0,b0\n")  # implicit pairs; unknown ids: sorted
    out = read("triplets", path, {"value": None}, ctx(tmp_path))
    assert out.row_ids == ["u0", "u1"] and out.col_ids == ["b0", "b2"]
    np.testing.assert_array_equal(out.data.toarray(), [[1, 0], [0, 1]])


def test_table_ids_keep_leading_zeros_and_must_match_the_entity(tmp_path):
    path = tmp_path / "facts.csv"
    path.write_text("id,a,b\n007,1.5,2\n010,,3\n")
    out = read("table", path, {}, ctx(tmp_path, row_ids=["010", "007"]))
    assert out.row_ids == ["010", "007"] and out.col_ids == ["a", "b"]
    np.testing.assert_array_equal(out.data, np.array([[np.nan, 3], [1.5, 2]], np.float32))
    with pytest.raises(ValueError, match=r"facts\.csv: 1 of the entity's 3 ids have no row, "
                       r"e.g. '011'"):
        read("table", path, {}, ctx(tmp_path, row_ids=["010", "007", "011"]))
    with pytest.raises(ValueError, match=r"facts\.csv: 1 row ids are not ids of the entity, "
                       r"e.g. '010'"):
        read("table", path, {}, ctx(tmp_path, row_ids=["007"]))
    path.write_text("id,a,b\n007,1.5,x\n")
    with pytest.raises(ValueError, match="value columns must be numeric; not numeric: b"):
        read("table", path, {}, ctx(tmp_path))
    with pytest.raises(ValueError, match="params.id: no column 'book'; it has id, a, b"):
        read("table", path, {"id": "book"}, ctx(tmp_path))
    with pytest.raises(ValueError, match=r"unknown table format '\.xlsx'"):
        read("table", tmp_path / "facts.xlsx", {}, ctx(tmp_path))


def test_spec_errors_point_at_the_view_source(tmp_path):
    data = write_arrays(tmp_path)
    frame = long_ratings(data, np.random.default_rng(0))
    frame.loc[frame.index[0], "user"] = "nobody"
    frame.to_parquet(tmp_path / "ratings.parquet")
    sources = {**NPY, "ratings": "{reader: triplets, path: ratings.parquet}"}
    with pytest.raises(SpecError) as err:
        embeddings(tmp_path, sources)
    (issue,) = err.value.issues
    assert issue.field == "views.ratings.source" and issue.line == 10
    assert "ratings.parquet: 1 row ids are not ids of the entity, e.g. 'nobody'" in str(issue)


def test_spec_from_dict_reads_a_table(tmp_path):
    (tmp_path / "t.csv").write_text("id,x,y\na,1,2\nb,3,4\nc,5,7\n")
    spec = Spec.from_dict({"name": "t", "entities": {"e": {}},
                           "views": {"t": {"rows": "e", "source": {"reader": "table",
                                                                   "path": "t.csv"}}},
                           "train": {"epochs": 1, "device": "cpu"}, "model": {"dim": 2}},
                          base_dir=tmp_path)
    result = train(spec, tmp_path / "run", evaluate=False)
    assert result.run.read_embeddings("e")[1] == ["a", "b", "c"]  # the table's ids

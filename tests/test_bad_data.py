"""The bad-input corpus: data files, ids files, labels, and new data
given to a run.  Every case must end in a clear project message
and its documented exit code (README, "Errors"), never an internal error or a traceback
(harness: ``badcase.py``)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from badcase import Case, both, run_case, save_npy, spec_replace, write_bytes, write_text
from PIL import Image

import mmfuse.data as data_module
from mmfuse import hookimpl
from mmfuse.data import load_data
from mmfuse.errors import SpecError
from mmfuse.plugin_api import ViewArray
from mmfuse.plugins import collect, make_manager
from mmfuse.spec import load_spec

VALIDATE = ("validate", "{spec}")
TRAIN = ("train", "{spec}", "--out", "{root}/run", "-q", "--no-report", "--epochs", "1")
TEXT_SOURCE = "source: {reader: npy, path: text.npy}"
RATINGS_SOURCE = "source: {reader: npz, path: ratings.npz}"
COVER_SOURCE = "source: {reader: npy, path: covers.npy}"


def noise(n: int, seed: int = 0) -> bytes:
    """``n`` bytes that look random but are the same on every run."""
    out = b""
    while len(out) < n:
        out += hashlib.sha256(f"{seed}-{len(out)}".encode()).digest()
    return out[:n]


def unreadable(name: str):
    """chmod 0; a case that runs as root (which reads it anyway) skips itself instead of
    passing without testing anything."""
    def edit(root: Path) -> None:
        (root / name).chmod(0)
        try:
            (root / name).open("rb").close()
        except PermissionError:
            return
        pytest.skip("chmod 0 leaves the file readable here (running as root)")
    return edit


def sparse_ratings(value: complex | float, dtype=np.float32):
    def edit(root: Path) -> None:
        m = sp.load_npz(root / "ratings.npz").astype(dtype)
        m.data[::7] = value
        sp.save_npz(root / "ratings.npz", m)
    return edit


def png_covers(truncate: str | None = None):
    """The cover view read by the ``images`` reader from 48 PNGs (``truncate``: that one cut
    in half)."""
    def edit(root: Path) -> None:
        folder = root / "covers"
        folder.mkdir()
        for i in range(48):
            buffer = io.BytesIO()
            Image.new("RGB", (16, 16), (i * 5, 100, 200)).save(buffer, format="PNG")
            raw = buffer.getvalue()
            (folder / f"b{i}.png").write_bytes(raw[:len(raw) // 2] if f"b{i}" == truncate
                                               else raw)
        spec_replace(COVER_SOURCE, "source: {reader: images, path: covers, params: {size: 16}}"
                     )(root)
    return edit


def goodreads_inputs(books: str = "fine"):
    """Small books and genres files in the UCSD format and an empty covers folder; ``books``
    damaged (bytes of the compressed stream flipped) or truncated."""
    def edit(root: Path) -> None:
        records = "".join(json.dumps({"book_id": str(i), "description": noise(40, i).hex(),
                                      "average_rating": "4.1", "language_code": "en",
                                      "image_url": f"http://x/{i}.jpg"}) + "\n"
                          for i in range(2000))
        raw = bytearray(gzip.compress(records.encode(), mtime=0))
        if books == "damaged":
            raw[100:400] = bytes(b ^ 0x55 for b in raw[100:400])
        elif books == "truncated":
            raw = raw[: len(raw) // 2]
        (root / "books.json.gz").write_bytes(bytes(raw))
        (root / "genres.json.gz").write_bytes(gzip.compress(
            b'{"book_id": "1", "genres": {"fiction": 3}}\n', mtime=0))
        (root / "covers").mkdir()
    return edit


GOODREADS = ("data", "prepare", "goodreads", "--books", "{root}/books.json.gz", "--genres",
             "{root}/genres.json.gz", "--out", "{root}/prepared", "--covers", "{root}/covers",
             "--quiet")

CASES = [
    # ------------------------------------------------------------------ data files
    Case("data-missing", VALIDATE, 3, "file not found",
         spec_replace("path: text.npy", "path: gone.npy")),
    Case("data-empty-npy", VALIDATE, 3, ("views.text.source", "text.npy"),
         write_bytes("text.npy", b"")),
    Case("data-random-bytes", VALIDATE, 3, ("views.text.source", "text.npy"),
         write_bytes("text.npy", noise(4096))),
    Case("data-truncated-npy", VALIDATE, 3, ("views.text.source", "text.npy"),
         lambda root: (root / "text.npy").write_bytes((root / "text.npy").read_bytes()[:300])),
    Case("data-strings", VALIDATE, 3, ("views.text", "numeric"),
         save_npy("text.npy", np.array([["a"] * 24] * 48))),
    Case("data-objects", VALIDATE, 3, ("views.text", "text.npy"),
         save_npy("text.npy", np.array([[{}] * 24] * 48, dtype=object))),
    Case("data-complex", VALIDATE, 3, ("views.text", "complex"),
         save_npy("text.npy", np.ones((48, 24), dtype=np.complex64))),
    Case("data-inf", VALIDATE, 3, ("views.text", "infinite"),
         save_npy("text.npy", np.where(np.eye(48, 24) > 0, np.inf, 1.0).astype(np.float32))),
    Case("data-huge-values", VALIDATE, 0, ("views.text", "1e+30"),
         save_npy("text.npy", np.full((48, 24), 1e30, dtype=np.float32))),
    Case("data-nan-forbidden", VALIDATE, 3, "NaN cells", both(
        save_npy("text.npy", np.where(np.eye(48, 24) > 0, np.nan, 1.0).astype(np.float32)),
        spec_replace("source: {reader: npy, path: text.npy}",
                     "source: {reader: npy, path: text.npy}\n    missing: forbid"))),
    Case("data-zero-rows", VALIDATE, 3, "views.text",
         save_npy("text.npy", np.zeros((0, 24), dtype=np.float32))),
    Case("data-wrong-rows", VALIDATE, 3, "48 instances",
         save_npy("text.npy", np.zeros((47, 24), dtype=np.float32))),
    Case("data-3d-matrix", VALIDATE, 3, "tensor view",
         save_npy("text.npy", np.zeros((48, 24, 2), dtype=np.float32))),
    Case("data-wrong-tensor-shape", VALIDATE, 3, "expected [n, 3, 16, 16]",
         save_npy("covers.npy", np.zeros((48, 3, 8, 8), dtype=np.uint8))),
    Case("data-npz-not-sparse", VALIDATE, 3, ("views.ratings.source", "ratings.npz"),
         lambda root: np.savez(root / "ratings.npz", a=np.ones(3))),
    Case("data-npz-corrupt", VALIDATE, 3, ("views.ratings.source", "ratings.npz"),
         write_bytes("ratings.npz", b"PK\x03\x04" + noise(200))),
    Case("data-npz-wrong-shape", VALIDATE, 3, "views.ratings",
         lambda root: sp.save_npz(root / "ratings.npz", sp.csr_array(np.ones((5, 5))))),
    Case("data-is-a-folder", VALIDATE, 3, ("views.text.source", "text.npy"),
         lambda root: ((root / "text.npy").unlink(), (root / "text.npy").mkdir())),
    Case("data-unreadable", VALIDATE, 3, ("views.text.source", "text.npy", "Permission"),
         unreadable("text.npy")),
    Case("data-npz-given-to-npy", VALIDATE, 3, ("views.text.source", "use reader npz"),
         lambda root: np.savez(root / "text.npy.npz", np.ones((48, 24)))
         or (root / "text.npy.npz").rename(root / "text.npy")),
    Case("data-npy-given-to-npz", VALIDATE, 3, ("views.ratings.source", "use reader npy"),
         lambda root: np.save(root / "ratings.npy", np.ones((32, 48)))
         or (root / "ratings.npy").rename(root / "ratings.npz")),
    Case("data-npz-truncated", VALIDATE, 3, ("views.ratings.source", "ratings.npz"),
         lambda root: (root / "ratings.npz").write_bytes(
             (root / "ratings.npz").read_bytes()[:200])),
    Case("data-npz-objects", VALIDATE, 3, ("views.ratings.source", "ratings.npz",
                                           "Python objects"),
         lambda root: np.savez(root / "ratings.npz", a=np.array([[{}] * 48] * 32,
                                                                 dtype=object))),
    Case("data-sparse-inf", VALIDATE, 3, ("views.ratings.source", "ratings.npz", "infinite"),
         sparse_ratings(np.inf)),
    Case("data-sparse-complex", VALIDATE, 3, ("views.ratings.source", "complex"),
         sparse_ratings(1 + 2j, np.complex64)),
    Case("data-datetimes", VALIDATE, 3, ("views.text.source", "dates"),
         save_npy("text.npy", np.full((48, 24), np.datetime64("2024-01-01")))),
    Case("data-zero-columns", VALIDATE, 3, ("views.text.source", "0 columns"),
         save_npy("text.npy", np.zeros((48, 0), dtype=np.float32))),
    Case("data-inf-in-a-tensor", VALIDATE, 3, ("views.cover.source", "infinite"),
         save_npy("covers.npy", np.full((48, 3, 16, 16), np.inf, dtype=np.float32))),
    Case("data-huge-int64", VALIDATE, 0, ("views.text.source", "scale: standard"),
         save_npy("text.npy", np.full((48, 24), 10**15, dtype=np.int64))),
    Case("data-bool-accepted", VALIDATE, 0, "spec and data OK",
         save_npy("text.npy", np.eye(48, 24, dtype=bool))),
    Case("data-inf-under-the-mask-accepted", VALIDATE, 0, "spec and data OK", both(
        save_npy("text.npy", np.where(np.eye(48, 24) > 0, np.inf, 1.0).astype(np.float32)),
        save_npy("mask.npy", np.eye(48, 24) == 0),
        spec_replace(TEXT_SOURCE, "source: {reader: npy, path: text.npy, params: "
                                  "{mask: mask.npy}}"))),
    # ------------------------------------------------------------------ reader params
    Case("params-unknown", VALIDATE, 3, ("spec.yaml:16 views.text.source.params.mmapp",
                                         "did you mean 'mmap'"),
         spec_replace(TEXT_SOURCE, "source: {reader: npy, path: text.npy, params: "
                                   "{mmapp: false}}")),
    Case("params-wrong-type", VALIDATE, 3, ("views.text.source.params.mmap", "boolean",
                                            "'sometimes'"),
         spec_replace(TEXT_SOURCE, "source: {reader: npy, path: text.npy, params: "
                                   "{mmap: sometimes}}")),
    Case("params-npz-unknown", VALIDATE, 3, ("views.ratings.source.params.keys",
                                             "did you mean 'key'"),
         spec_replace(RATINGS_SOURCE, "source: {reader: npz, path: ratings.npz, params: "
                                      "{keys: a}}")),
    Case("params-tfidf-unknown", VALIDATE, 3, ("views.text.source.params.dims",
                                               "did you mean 'dim'"),
         spec_replace(TEXT_SOURCE, "source: {reader: tfidf, path: docs.txt, params: "
                                   "{dims: 4}}")),
    Case("params-images-mode", VALIDATE, 3, ("views.cover.source.params.mode", "'CMYK'"),
         spec_replace(COVER_SOURCE, "source: {reader: images, path: covers, params: "
                                    "{mode: CMYK}}")),
    Case("params-mask-missing", VALIDATE, 3, ("views.text.source", "gone.npy"),
         spec_replace(TEXT_SOURCE, "source: {reader: npy, path: text.npy, params: "
                                   "{mask: gone.npy}}")),
    Case("params-mask-not-bool", VALIDATE, 3, ("views.text.source", "boolean"), both(
        save_npy("mask.npy", np.ones((48, 24), dtype=np.float32)),
        spec_replace(TEXT_SOURCE, "source: {reader: npy, path: text.npy, params: "
                                  "{mask: mask.npy}}"))),
    Case("params-row-ids-non-utf8", VALIDATE, 3, ("views.text.source", "row_ids", "UTF-8"),
         both(write_bytes("rows.txt", b"b\xe9\n" * 48),
              spec_replace(TEXT_SOURCE, "source: {reader: npy, path: text.npy, params: "
                                        "{row_ids: rows.txt}}"))),
    # ------------------------------------------------------------------ images
    Case("images-truncated-png", VALIDATE, 3, ("views.cover.source", "b7.png"),
         png_covers(truncate="b7")),
    Case("images-accepted", VALIDATE, 0, "spec and data OK", png_covers()),
    # ------------------------------------------------------------------ ids files
    Case("ids-missing", VALIDATE, 3, "file not found",
         spec_replace("ids: book_ids.txt", "ids: gone.txt")),
    Case("ids-not-unique", VALIDATE, 3, "not unique",
         write_text("book_ids.txt", "b0\n" * 48)),
    Case("ids-wrong-count", VALIDATE, 3, "47",
         write_text("book_ids.txt", "".join(f"b{i}\n" for i in range(47)))),
    Case("ids-non-utf8", VALIDATE, 3, ("entities.book.ids", "UTF-8"),
         write_bytes("book_ids.txt", b"".join(b"b%d\xe9\n" % i for i in range(48)))),
    Case("ids-binary", VALIDATE, 3, "entities.book.ids",
         write_bytes("book_ids.txt", bytes(range(256)) * 4)),
    Case("ids-blank-line-inside", VALIDATE, 3, ("entities.book.ids", "blank"),
         write_text("book_ids.txt", "".join(f"b{i}\n" + ("\n" if i == 3 else "")
                                            for i in range(48)))),
    Case("ids-is-a-folder", VALIDATE, 3, ("entities.book.ids", "folder"),
         lambda root: ((root / "book_ids.txt").unlink(), (root / "book_ids.txt").mkdir())),
    Case("ids-empty", VALIDATE, 3, ("entities.book.ids", "no ids"),
         write_text("book_ids.txt", "")),
    Case("ids-unreadable", VALIDATE, 3, ("entities.book.ids", "Permission"),
         unreadable("book_ids.txt")),
    Case("ids-size-disagrees", VALIDATE, 3, ("entities.book.size", "lists 48 ids"),
         spec_replace("book: {ids: book_ids.txt}", "book: {ids: book_ids.txt, size: 40}")),
    Case("ids-trailing-blank-lines-accepted", VALIDATE, 0, "spec and data OK",
         write_text("book_ids.txt", "".join(f"b{i}\r\n" for i in range(48)) + "\n\n")),
    # ------------------------------------------------------------------ evaluation labels
    Case("labels-wrong-length", VALIDATE, 3, ("evaluate.targets.label", "47"),
         save_npy("label.npy", np.zeros(47, dtype=np.int64))),
    Case("labels-missing", VALIDATE, 3, ("evaluate.targets.label", "file not found"),
         lambda root: (root / "label.npy").unlink()),
    Case("labels-strings", VALIDATE, 3, "evaluate.targets.score",
         save_npy("score.npy", np.array(["a"] * 48))),
    Case("labels-one-class", VALIDATE, 3, ("evaluate.targets.label", "one class"),
         save_npy("label.npy", np.zeros(48, dtype=np.int64))),
    Case("labels-wrong-length-train", TRAIN, 3, ("evaluate.targets.label", "47 values",
                                                 "48 instances"),
         save_npy("label.npy", np.zeros(47, dtype=np.int64)),
         check=lambda root: not [*(root / "run").glob("**/*.pt"), *(root / "run").glob(
             "embeddings/*")] or pytest.fail("training started")),
    Case("labels-is-a-folder", VALIDATE, 3, ("evaluate.targets.label", "folder"),
         lambda root: ((root / "label.npy").unlink(), (root / "label.npy").mkdir())),
    Case("labels-pickled", VALIDATE, 3, ("evaluate.targets.label", "label.npy"),
         save_npy("label.npy", np.array([{}] * 48, dtype=object))),
    Case("labels-random-bytes", VALIDATE, 3, ("evaluate.targets.label", "label.npy"),
         write_bytes("label.npy", noise(500))),
    Case("labels-two-columns", VALIDATE, 3, ("evaluate.targets.label", "one value per"),
         save_npy("label.npy", np.zeros((48, 2), dtype=np.int64))),
    Case("labels-regression-inf", VALIDATE, 3, ("evaluate.targets.score", "infinite"),
         save_npy("score.npy", np.full(48, np.inf))),
    Case("labels-all-missing", VALIDATE, 3, ("evaluate.targets.score", "at least two"),
         save_npy("score.npy", np.full(48, np.nan))),
    Case("labels-text-file-short", VALIDATE, 3, ("evaluate.targets.label", "47 values"),
         both(write_text("label.txt", "a\nb\n" * 23 + "a\n"),
              spec_replace("path: label.npy", "path: label.txt"))),
    # ------------------------------------------------------------------ commands on a run
    Case("evaluate-not-a-run", ("evaluate", "{root}"), 1, "not an mmfuse run folder"),
    Case("embed-unknown-entity", ("embed", "{run}", "--entity", "author", "--out",
                                  "{root}/z.npy"), 1, "no embeddings for entity 'author'",
         needs_run=True),
    Case("embed-bad-suffix", ("embed", "{run}", "--entity", "book", "--out", "{root}/z.xls"),
         2, "--out", needs_run=True),
    Case("embed-data-strings", ("embed", "{run}", "--entity", "word", "--out", "{root}/z.npy",
                                "--data", "cooc={root}/s.npy"), 1, "cooc",
         save_npy("s.npy", np.array([["a"] * 24] * 3)), needs_run=True),
    Case("embed-data-missing", ("embed", "{run}", "--entity", "word", "--out", "{root}/z.npy",
                                "--data", "cooc={root}/gone.npy"), 1, "gone.npy",
         needs_run=True),
    Case("embed-data-unknown-entity", ("embed", "{run}", "--entity", "author", "--out",
                                       "{root}/z.npy", "--data", "cooc={root}/s.npy"), 1,
         "author", save_npy("s.npy", np.zeros((3, 24), dtype=np.float32)), needs_run=True),
    Case("embed-data-pickle", ("embed", "{run}", "--entity", "word", "--out", "{root}/z.npy",
                               "--data", "cooc={root}/s.npy"), 1, "s.npy",
         save_npy("s.npy", np.array([None, {}], dtype=object)), needs_run=True),
    Case("embed-data-folder", ("embed", "{run}", "--entity", "word", "--out", "{root}/z.npy",
                               "--data", "cooc={root}"), 1, ("--data cooc=", "folder"),
         needs_run=True),
    Case("embed-data-complex", ("embed", "{run}", "--entity", "word", "--out", "{root}/z.npy",
                                "--data", "cooc={root}/s.npy"), 1, ("s.npy", "complex"),
         save_npy("s.npy", np.ones((3, 24), dtype=np.complex64)), needs_run=True),
    Case("embed-data-inf", ("embed", "{run}", "--entity", "word", "--out", "{root}/z.npy",
                            "--data", "cooc={root}/s.npy"), 1, ("s.npy", "infinite"),
         save_npy("s.npy", np.full((3, 24), np.inf, dtype=np.float32)), needs_run=True),
    Case("embed-data-random-bytes", ("embed", "{run}", "--entity", "word", "--out",
                                     "{root}/z.npy", "--data", "cooc={root}/s.npz"), 1,
         ("s.npz", "not an .npz"), write_bytes("s.npz", noise(300)), needs_run=True),
    Case("predict-unknown-view", ("predict", "{run}", "--view", "nope", "--rows", "0",
                                  "--top", "3"), 1, "nope", needs_run=True),
    Case("predict-data-strings", ("predict", "{run}", "--view", "ratings", "--top", "3",
                                  "--data", "ratings={root}/s.npy"), 1, ("s.npy", "text"),
         save_npy("s.npy", np.array([["a"] * 48] * 2)), needs_run=True),
    Case("predict-data-missing", ("predict", "{run}", "--view", "ratings", "--top", "3",
                                  "--data", "ratings={root}/gone.npz"), 1,
         ("gone.npz", "file not found"), needs_run=True),
    # ------------------------------------------------------------------ data prepare
    Case("goodreads-gzip-damaged", GOODREADS, 1, ("books.json.gz", "damaged"),
         goodreads_inputs("damaged")),
    Case("goodreads-gzip-truncated", GOODREADS, 1, ("books.json.gz", "truncated"),
         goodreads_inputs("truncated")),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, template, request, tmp_path):
    trained = request.getfixturevalue("trained_run") if case.needs_run else None
    run_case(case, template, trained, tmp_path)


# --------------------------------------------------------------------------- beside the CLI


def _with_reader(name: str, reader) -> object:
    """The installed plugins plus a throwaway third-party plugin registering ``reader``."""
    module = types.ModuleType(f"thirdparty_{name}")
    module.mmfuse_register_readers = hookimpl(lambda register: register.add(name, reader))
    return collect(make_manager(extra=[module]))


def _project_reading_text_with(template: Path, tmp_path: Path, reader: str) -> Path:
    root = tmp_path / "project"
    shutil.copytree(template, root)
    spec_replace(TEXT_SOURCE, f"source: {{reader: {reader}, path: text.npy}}")(root)
    return root / "spec.yaml"


@pytest.mark.parametrize(("raised", "says"), [
    (RuntimeError("codec state 7"), "RuntimeError: codec state 7"),
    (MemoryError(), "not enough memory"),
    (KeyError("shape"), "shape"),
])
def test_whatever_a_reader_raises_is_a_spec_error_naming_the_file_with_its_cause(
        template, tmp_path, raised, says):
    spec_path = _project_reading_text_with(template, tmp_path, "boom")

    def boom(path, params, ctx):
        raise raised

    with pytest.raises(SpecError) as err:
        load_data(load_spec(spec_path), _with_reader("boom", boom))
    (issue,) = err.value.issues
    assert issue.field == "views.text.source" and issue.line == 16
    assert "reader 'boom' cannot read" in issue.message and "text.npy" in issue.message
    assert says in issue.message
    assert err.value.__cause__ is raised  # what --debug shows


def test_an_interrupt_in_a_reader_is_not_swallowed(template, tmp_path):
    spec_path = _project_reading_text_with(template, tmp_path, "stop")

    def stop(path, params, ctx):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_data(load_spec(spec_path), _with_reader("stop", stop))


def test_value_checks_read_blocks_and_only_a_sparse_matrix_stored_cells(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((300, 7)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.05] = np.inf
    dense[rng.random(dense.shape) < 0.05] = np.nan
    np.save(tmp_path / "d.npy", dense)
    mapped = np.load(tmp_path / "d.npy", mmap_mode="r")
    reads = []

    class Watched(np.ndarray):  # records every block the scan takes
        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    monkeypatch.setattr(data_module, "SCAN_CELLS", 50)
    n_inf, n_nan, largest, cells = data_module._value_stats(
        ViewArray(data=mapped.view(Watched)))
    finite = dense[np.isfinite(dense)]
    assert (n_inf, n_nan, cells) == (np.isinf(dense).sum(), np.isnan(dense).sum(), dense.size)
    assert largest == np.abs(finite).max()
    assert len(reads) == 300 // 7 + 1 and all(k.stop - k.start <= 7 for k in reads)
    # 10^7 x 10^7 with three cells: the scan costs the cells (densified: 400 TB)
    huge = sp.csr_array((np.array([1.0, np.inf, -3e13]), (np.array([0, 5, 9]),
                                                           np.array([2, 2, 7]))),
                        shape=(10**7, 10**7))
    assert data_module._value_stats(ViewArray(data=huge)) == (1, 0, 3e13, 3)


def test_embed_csv_quotes_ids_with_commas_and_quotes(tmp_path):
    from mmfuse.cli.results import _write

    ids = ["plain", "Smith, John", 'say "hi"']
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    _write(tmp_path / "z.csv", z, ids)
    with (tmp_path / "z.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", "z0", "z1"]
    assert [r[0] for r in rows[1:]] == ids and all(len(r) == 3 for r in rows)
    assert [float(v) for v in rows[2][1:]] == [2.0, 3.0]

"""The bad-input corpus: data files, ids files, labels, and new data
given to a run.  Every case must end in a clear project message
and its documented exit code (README, "Errors"), never an internal error or a traceback
(harness: ``badcase.py``)."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import scipy.sparse as sp
from badcase import Case, both, run_case, save_npy, spec_replace, write_bytes, write_text

VALIDATE = ("validate", "{spec}")
TRAIN = ("train", "{spec}", "--out", "{root}/run", "-q", "--no-report", "--epochs", "1")

CASES = [
    # ------------------------------------------------------------------ data files
    Case("data-missing", VALIDATE, 3, "file not found",
         spec_replace("path: text.npy", "path: gone.npy")),
    Case("data-empty-npy", VALIDATE, 3, ("views.text.source", "text.npy"),
         write_bytes("text.npy", b"")),
    Case("data-random-bytes", VALIDATE, 3, ("views.text.source", "text.npy"),
         write_bytes("text.npy", os.urandom(4096))),
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
         write_bytes("ratings.npz", b"PK\x03\x04" + os.urandom(200))),
    Case("data-npz-wrong-shape", VALIDATE, 3, "views.ratings",
         lambda root: sp.save_npz(root / "ratings.npz", sp.csr_array(np.ones((5, 5))))),
    Case("data-is-a-folder", VALIDATE, 3, ("views.text.source", "text.npy"),
         lambda root: ((root / "text.npy").unlink(), (root / "text.npy").mkdir())),
    Case("data-unreadable", VALIDATE, 3, ("views.text.source", "text.npy"),
         lambda root: (root / "text.npy").chmod(0)),
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
    Case("ids-is-a-folder", VALIDATE, 3, "entities.book.ids",
         lambda root: ((root / "book_ids.txt").unlink(), (root / "book_ids.txt").mkdir())),
    # ------------------------------------------------------------------ evaluation labels
    Case("labels-wrong-length", VALIDATE, 3, ("evaluate.targets.label", "47"),
         save_npy("label.npy", np.zeros(47, dtype=np.int64))),
    Case("labels-missing", VALIDATE, 3, ("evaluate.targets.label", "file not found"),
         lambda root: (root / "label.npy").unlink()),
    Case("labels-strings", VALIDATE, 3, "evaluate.targets.score",
         save_npy("score.npy", np.array(["a"] * 48))),
    Case("labels-one-class", VALIDATE, 3, ("evaluate.targets.label", "class"),
         save_npy("label.npy", np.zeros(48, dtype=np.int64))),
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
    Case("predict-unknown-view", ("predict", "{run}", "--view", "nope", "--rows", "0",
                                  "--top", "3"), 1, "nope", needs_run=True),
    Case("gzip-corrupt", ("validate", "{spec}"), 3, "text.npy",
         write_bytes("text.npy", gzip.compress(b"x" * 100)[:20])),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, template, request, tmp_path):
    trained = request.getfixturevalue("trained_run") if case.needs_run else None
    run_case(case, template, trained, tmp_path)

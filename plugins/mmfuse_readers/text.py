"""Text featurizers: ``word2vec`` — a gensim Word2Vec trained on the documents themselves,
each document the mean of its token vectors (the paper's text view)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import (
    ReadContext,
    ReaderParams,
    ViewArray,
    featurizer,
    reader_params,
)

log = logging.getLogger(__name__)


class Word2VecParams(ReaderParams):
    vector_size: int = Field(100, ge=1)
    window: int = Field(5, ge=1)
    min_count: int = Field(1, ge=1)
    epochs: int = Field(10, ge=1)
    sg: Literal[0, 1] = 0  # 0: CBOW, 1: skip-gram
    seed: int = Field(0, ge=0, lt=2**32)
    clean: bool = True  # lower-case, drop digits and English stop words


_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def tokenize(text: str, clean: bool) -> list[str]:
    """Lower-case words; with ``clean`` digits and English stop words are removed (the paper)."""
    tokens = _TOKEN.findall(text.lower()) if clean else text.lower().split()
    return [t for t in tokens if t not in ENGLISH_STOP_WORDS] if clean else tokens


def _stable_hash(s: str) -> int:
    # gensim seeds vectors with hash(); Python's str hash changes per process.
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")


def read_documents(path: Path) -> list[str]:
    """One document a line of a UTF-8 text file (a ValueError names a line that is not)."""
    with path.open("rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ValueError(f"{path.name}: line {line} is not UTF-8 text (byte "
                         f"{raw[exc.start:exc.start + 1]!r}); save the file as UTF-8") from None
    return [line.rstrip("\r") for line in text.removesuffix("\n").split("\n")] if text else []


def encode_terms(terms: list[str]) -> np.ndarray:
    """Terms (tokens, n-grams: never a newline) as one UTF-8 byte array, one term a line:
    what a run folder keeps (numbers only, however long the longest term)."""
    return np.frombuffer("\n".join(terms).encode("utf-8"), dtype=np.uint8).copy()


def decode_terms(raw: np.ndarray) -> list[str]:
    """The terms of :func:`encode_terms`."""
    text = np.asarray(raw, dtype=np.uint8).tobytes().decode("utf-8")
    return text.split("\n") if text else []


def document_vectors(docs: list[list[str]], index: Mapping[str, int],
                     vectors: np.ndarray) -> np.ndarray:
    """``n × width`` float32: the mean vector of each document's known tokens (zero if none)."""
    out = np.zeros((len(docs), vectors.shape[1]), dtype=np.float32)
    for i, doc in enumerate(docs):
        rows = [index[t] for t in doc if t in index]
        if rows:
            out[i] = np.asarray(vectors[rows]).mean(axis=0)
    return out


def featurize_word2vec(path: Path, params: Mapping[str, Any], state: Mapping[str, Any],
                       ctx: ReadContext) -> ViewArray:
    """New documents (one a line of a UTF-8 text file) through the word vectors trained on
    the training documents (``state``: ``tokens``, ``vectors``): each the mean vector of its
    known tokens, exactly as in training; a token the training documents did not have is
    skipped, a document with no known token is a zero vector."""
    if "tokens" not in state or "vectors" not in state:
        raise ValueError("the run keeps no word2vec vectors for this view (made by an older "
                         "mmfuse): train it again to featurize new text")
    if not path.is_file():
        raise ValueError(f"{path}: not a file; give a text file, one document a line")
    docs = [tokenize(line, params["clean"]) for line in read_documents(path)]
    index = {t: i for i, t in enumerate(decode_terms(state["tokens"]))}
    tokens = sum(len(d) for d in docs)
    unknown = sum(1 for d in docs for t in d if t not in index)
    empty = sum(1 for d in docs if not any(t in index for t in d))
    if empty:
        log.warning("word2vec %s: %d of %d new documents have no token the training documents "
                    "had: their vectors are 0", path.name, empty, len(docs))
    return ViewArray(data=document_vectors(docs, index, state["vectors"]),
                     info={"documents": len(docs), "unknown_tokens": unknown,
                           "tokens": tokens, "empty_documents": empty})


@featurizer(featurize_word2vec)
@reader_params(Word2VecParams)
def read_word2vec(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × vector_size`` float32.

    params: ``vector_size`` (100), ``window`` (5), ``min_count`` (1), ``epochs`` (10),
    ``sg`` (0: CBOW), ``seed`` (0), ``clean`` (true: lower-case, drop digits and stop words).
    Trained with one worker so the vectors are repeatable.  A document without known tokens
    is a zero vector (counted in the run manifest).  The word vectors (cached beside the
    documents' vectors) are the reader's ``state``: the run folder keeps them, and new
    documents are featurized with them (:func:`featurize_word2vec`).
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    p = dict(params)
    docs = [tokenize(line, p["clean"]) for line in read_documents(path)]
    empty = sum(1 for d in docs if not d)
    key = fingerprint([path], p)
    trained: dict[str, Any] = {}

    def word_vectors():
        if "wv" not in trained:
            from gensim.models import Word2Vec

            trained["wv"] = Word2Vec(
                sentences=[d for d in docs if d], vector_size=p["vector_size"],
                window=p["window"], min_count=p["min_count"], epochs=p["epochs"], sg=p["sg"],
                seed=p["seed"], workers=1, hashfxn=_stable_hash).wv
        return trained["wv"]

    tokens, _ = cached_array(path, "word2vec-tokens", key,
                             lambda: encode_terms(list(word_vectors().index_to_key)))
    vectors, _ = cached_array(path, "word2vec-vectors", key,
                              lambda: np.asarray(word_vectors().vectors, dtype=np.float32))
    index = {t: i for i, t in enumerate(decode_terms(tokens))}
    data, cache = cached_array(path, "word2vec", key,
                               lambda: document_vectors(docs, index, vectors))
    return ViewArray(data=data, info={"params": p, "empty_documents": empty, "cache": str(cache),
                                      "vocabulary": len(index)},
                     state={"tokens": tokens, "vectors": vectors})

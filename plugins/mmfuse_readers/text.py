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
from mmfuse.plugin_api import ReadContext, ReaderParams, ViewArray, reader_params

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


@reader_params(Word2VecParams)
def read_word2vec(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × vector_size`` float32.

    params: ``vector_size`` (100), ``window`` (5), ``min_count`` (1), ``epochs`` (10),
    ``sg`` (0: CBOW), ``seed`` (0), ``clean`` (true: lower-case, drop digits and stop words).
    Trained with one worker so the vectors are repeatable.  A document without known tokens
    is a zero vector (counted in the run manifest).
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    p = dict(params)
    docs = [tokenize(line, p["clean"]) for line in read_documents(path)]
    empty = sum(1 for d in docs if not d)

    def compute() -> np.ndarray:
        from gensim.models import Word2Vec

        model = Word2Vec(
            sentences=[d for d in docs if d], vector_size=p["vector_size"], window=p["window"],
            min_count=p["min_count"], epochs=p["epochs"], sg=p["sg"], seed=p["seed"], workers=1,
            hashfxn=_stable_hash)
        out = np.zeros((len(docs), p["vector_size"]), dtype=np.float32)
        for i, doc in enumerate(docs):
            known = [t for t in doc if t in model.wv.key_to_index]
            if known:
                out[i] = model.wv[known].mean(axis=0)
        return out

    data, cache = cached_array(path, "word2vec", fingerprint([path], p), compute)
    return ViewArray(data=data, info={"params": p, "empty_documents": empty, "cache": str(cache)})

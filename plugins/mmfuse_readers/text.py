"""Text featurizers: ``word2vec`` — a gensim Word2Vec trained on the documents themselves,
each document the mean of its token vectors (the paper's text view)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import ReadContext, ViewArray

log = logging.getLogger(__name__)

WORD2VEC_DEFAULTS = {"vector_size": 100, "window": 5, "min_count": 1, "epochs": 10, "sg": 0,
                     "seed": 0, "clean": True}
_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")


def tokenize(text: str, clean: bool) -> list[str]:
    """Lower-case words; with ``clean`` digits and English stop words are removed (the paper)."""
    tokens = _TOKEN.findall(text.lower()) if clean else text.lower().split()
    return [t for t in tokens if t not in ENGLISH_STOP_WORDS] if clean else tokens


def _stable_hash(s: str) -> int:
    # gensim seeds vectors with hash(); Python's str hash changes per process.
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")


def read_documents(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [line.rstrip("\r\n") for line in fh]


def read_word2vec(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × vector_size`` float32.

    params: ``vector_size`` (100), ``window`` (5), ``min_count`` (1), ``epochs`` (10),
    ``sg`` (0: CBOW), ``seed`` (0), ``clean`` (true: lower-case, drop digits and stop words).
    Trained with one worker so the vectors are repeatable.  A document without known tokens
    is a zero vector (counted in the run manifest).
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    unknown = set(params) - set(WORD2VEC_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)}; known: {sorted(WORD2VEC_DEFAULTS)}")
    p = {**WORD2VEC_DEFAULTS, **params}
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

"""Text featurizer ``tfidf``: scikit-learn tf-idf of each document, reduced to ``dim`` dense
components by a seeded truncated SVD (latent semantic analysis).

The output is always dense: to mmfuse a sparse matrix means "cells not stored are missing",
which is not what a zero tf-idf weight means.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import field_validator

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import ReadContext, ReaderParams, ViewArray, reader_params

from .text import read_documents, tokenize

log = logging.getLogger(__name__)

class TfidfParams(ReaderParams):
    dim: int = 100  # SVD components
    max_features: int | None = None  # null: every term
    min_df: int | float = 1  # a document count ≥ 1, or a fraction of documents in (0, 1]
    ngram_range: list[int] = [1, 1]
    clean: bool = True  # lower-case, drop digits and English stop words
    seed: int = 0  # the SVD's random_state

    @field_validator("dim")
    @classmethod
    def _dim(cls, dim: int) -> int:
        if dim < 1:
            raise ValueError(f"dim must be an integer ≥ 1 (the number of SVD components); got "
                             f"{dim!r} (the sparse tf-idf matrix itself is not offered: mmfuse "
                             "reads cells a sparse matrix does not store as missing)")
        return dim

    @field_validator("max_features")
    @classmethod
    def _max_features(cls, n: int | None) -> int | None:
        if n is not None and n < 1:
            raise ValueError(f"max_features must be null or an integer ≥ 1; got {n!r}")
        return n

    @field_validator("min_df")
    @classmethod
    def _min_df(cls, min_df: int | float) -> int | float:
        if not ((isinstance(min_df, int) and min_df >= 1)
                or (isinstance(min_df, float) and 0.0 < min_df <= 1.0)):
            raise ValueError("min_df must be a document count ≥ 1 or a fraction in (0, 1]; "
                             f"got {min_df!r}")
        return min_df

    @field_validator("ngram_range")
    @classmethod
    def _ngram_range(cls, ngrams: list[int]) -> list[int]:
        if not (len(ngrams) == 2 and 1 <= ngrams[0] <= ngrams[1]):
            raise ValueError("ngram_range must be [min_n, max_n] with 1 ≤ min_n ≤ max_n; "
                             f"got {ngrams!r}")
        return ngrams


def lsa(docs: list[str], p: Mapping[str, Any]) -> np.ndarray:
    """``n × dim`` float32: tf-idf (our tokenizer) → truncated SVD with ``random_state=seed``."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        tokenizer=partial(tokenize, clean=p["clean"]), token_pattern=None, lowercase=False,
        ngram_range=tuple(p["ngram_range"]), min_df=p["min_df"],
        max_features=p["max_features"], dtype=np.float64)
    try:
        x = vectorizer.fit_transform(docs)  # (n, terms) sparse
    except ValueError as exc:  # e.g. "empty vocabulary"
        raise ValueError(f"tf-idf: {exc}") from None
    if p["dim"] > min(x.shape):
        raise ValueError(f"dim {p['dim']} is more than the corpus allows: {x.shape[0]} documents "
                         f"and {x.shape[1]} terms (dim ≤ {min(x.shape)})")
    svd = TruncatedSVD(n_components=p["dim"], random_state=p["seed"])
    out = svd.fit_transform(x).astype(np.float32)  # (n, dim)
    log.info("tfidf: %d documents × %d terms → %d components (%.1f%% of the variance)",
             x.shape[0], x.shape[1], p["dim"], 100 * svd.explained_variance_ratio_.sum())
    return out


@reader_params(TfidfParams)
def read_tfidf(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × dim`` float32 (cached).

    params: ``dim`` (100, ≥ 1: SVD components), ``max_features`` (null: every term),
    ``min_df`` (1: a document count, or a fraction of documents), ``ngram_range`` ([1, 1]),
    ``clean`` (true: lower-case, drop digits and English stop words, as ``word2vec``),
    ``seed`` (0: the SVD's ``random_state``).
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    p = dict(params)
    docs = read_documents(path)
    data, cache_file = cached_array(path, "tfidf", fingerprint([path], p), lambda: lsa(docs, p))
    return ViewArray(data=data, info={"params": p, "documents": len(docs),
                                      "cache": str(cache_file)})

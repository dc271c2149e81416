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
from mmfuse.plugin_api import (
    ReadContext,
    ReaderParams,
    ViewArray,
    featurizer,
    reader_params,
)

from .text import decode_terms, encode_terms, read_documents, tokenize

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


def _counter(p: Mapping[str, Any], **options: Any):
    """The tokenizer and n-grams of ``p`` (ours: the ``word2vec`` tokens)."""
    return dict(tokenizer=partial(tokenize, clean=p["clean"]), token_pattern=None,
                lowercase=False, ngram_range=tuple(p["ngram_range"]), dtype=np.float64,
                **options)


def fit_lsa(docs: list[str], p: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """tf-idf (our tokenizer) → truncated SVD with ``random_state=seed``: the documents'
    ``n × dim`` float32 components (``features``) and what featurizes new documents alike:
    ``terms`` (:func:`~mmfuse_readers.text.encode_terms`), their ``idf`` and the SVD's
    ``components`` (dim × terms)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(**_counter(p, min_df=p["min_df"],
                                            max_features=p["max_features"]))
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
    return {"features": out, "terms": encode_terms(list(vectorizer.get_feature_names_out())),
            "idf": np.asarray(vectorizer.idf_, dtype=np.float64),
            "components": np.asarray(svd.components_, dtype=np.float64)}


def lsa(docs: list[str], p: Mapping[str, Any]) -> np.ndarray:
    """``n × dim`` float32: tf-idf (our tokenizer) → truncated SVD with ``random_state=seed``."""
    return fit_lsa(docs, p)["features"]


def transform_lsa(docs: list[str], p: Mapping[str, Any], state: Mapping[str, Any]
                  ) -> np.ndarray:
    """New documents through a fitted tf-idf + SVD (``state`` of :func:`fit_lsa`): term
    counts over the training vocabulary, times its idf, each row to unit length, projected
    on the components — what ``TfidfVectorizer`` and ``TruncatedSVD.transform`` do."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.preprocessing import normalize

    terms = decode_terms(state["terms"])
    counts = CountVectorizer(**_counter(p, vocabulary={t: i for i, t in enumerate(terms)})
                             ).transform(docs)
    x = normalize(counts.multiply(np.asarray(state["idf"])[None, :]).tocsr())
    return np.asarray(x @ np.asarray(state["components"]).T, dtype=np.float32)


def featurize_tfidf(path: Path, params: Mapping[str, Any], state: Mapping[str, Any],
                    ctx: ReadContext) -> ViewArray:
    """New documents (one a line of a UTF-8 text file) through the training documents'
    tf-idf vocabulary, idf weights and SVD (``state``); a term the training documents did
    not have is skipped, a document with none of theirs is a zero vector."""
    if not {"terms", "idf", "components"} <= set(state):
        raise ValueError("the run keeps no tf-idf vocabulary for this view (made by an older "
                         "mmfuse): train it again to featurize new text")
    if not path.is_file():
        raise ValueError(f"{path}: not a file; give a text file, one document a line")
    docs = read_documents(path)
    return ViewArray(data=transform_lsa(docs, params, state), info={"documents": len(docs)})


@featurizer(featurize_tfidf)
@reader_params(TfidfParams)
def read_tfidf(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × dim`` float32 (cached).

    params: ``dim`` (100, ≥ 1: SVD components), ``max_features`` (null: every term),
    ``min_df`` (1: a document count, or a fraction of documents), ``ngram_range`` ([1, 1]),
    ``clean`` (true: lower-case, drop digits and English stop words, as ``word2vec``),
    ``seed`` (0: the SVD's ``random_state``).  The vocabulary, its idf weights and the SVD's
    components (cached beside the output) are the reader's ``state``: the run folder keeps
    them, and new documents are featurized with them (:func:`featurize_tfidf`).
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    p = dict(params)
    docs = read_documents(path)
    key = fingerprint([path], p)
    fitted: dict[str, np.ndarray] = {}

    def fit() -> dict[str, np.ndarray]:
        if not fitted:
            fitted.update(fit_lsa(docs, p))
        return fitted

    state = {name: cached_array(path, f"tfidf-{name}", key, lambda name=name: fit()[name])[0]
             for name in ("terms", "idf", "components")}
    data, cache_file = cached_array(path, "tfidf", key, lambda: fit()["features"])
    return ViewArray(data=data, info={"params": p, "documents": len(docs),
                                      "cache": str(cache_file)}, state=state)

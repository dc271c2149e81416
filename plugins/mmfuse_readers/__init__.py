"""Built-in readers: ``npy`` (memory-mapped), ``npz`` (scipy sparse, missing cells masked),
``images`` (a folder + id list → uint8 tensor), ``table`` (CSV/TSV/Parquet/Feather: an id
column and value columns), ``triplets`` (long format → scipy sparse), ``anndata`` (``.h5ad``)
and ``mudata`` (one modality of an ``.h5mu``), and the text featurizers ``word2vec``
(averaged token vectors trained on the documents), ``glove`` (averaged pretrained GloVe 6B
vectors) and ``tfidf`` (tf-idf reduced by a truncated SVD)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_readers(register: Register) -> None:
    # import paths: each module (gensim, pandas, PIL, ...) is imported when first used
    for name, path in [("npy", "arrays:read_npy"), ("npz", "arrays:read_npz"),
                       ("images", "images:read_images"), ("table", "tables:read_table"),
                       ("triplets", "tables:read_triplets"),
                       ("anndata", "annotated:read_anndata"),
                       ("mudata", "annotated:read_mudata"), ("word2vec", "text:read_word2vec"),
                       ("glove", "glove:read_glove"), ("tfidf", "tfidf:read_tfidf")]:
        register.add(name, f"mmfuse_readers.{path}")

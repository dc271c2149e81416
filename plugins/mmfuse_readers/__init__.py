"""Built-in readers: ``npy`` (memory-mapped), ``npz`` (scipy sparse, missing cells masked),
``images`` (a folder + id list → uint8 tensor), ``table`` (CSV/TSV/Parquet/Feather: an id
column and value columns), ``triplets`` (long format → scipy sparse), ``anndata`` (``.h5ad``)
and ``mudata`` (one modality of an ``.h5mu``), and the text featurizers ``word2vec``
(averaged token vectors trained on the documents), ``glove`` (averaged pretrained GloVe 6B
vectors) and ``tfidf`` (tf-idf reduced by a truncated SVD)."""

from __future__ import annotations

from mmfuse import hookimpl
from mmfuse.plugins import Register

from .annotated import read_anndata, read_mudata
from .arrays import read_npy, read_npz
from .glove import read_glove
from .images import read_images
from .tables import read_table, read_triplets
from .text import read_word2vec
from .tfidf import read_tfidf


@hookimpl
def mmfuse_register_readers(register: Register) -> None:
    register.add("npy", read_npy)
    register.add("npz", read_npz)
    register.add("images", read_images)
    register.add("table", read_table)
    register.add("triplets", read_triplets)
    register.add("anndata", read_anndata)
    register.add("mudata", read_mudata)
    register.add("word2vec", read_word2vec)
    register.add("glove", read_glove)
    register.add("tfidf", read_tfidf)

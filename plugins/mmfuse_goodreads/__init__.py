"""The ``goodreads`` dataset: the paper's books (covers + descriptions, fiction label, rating).

``mmfuse data prepare goodreads`` (:mod:`.command`, :mod:`.prepare`) turns the real UCSD Book
Graph files into the dataset folder.  Until that is done, ``ensure`` writes a deterministic,
SYNTHETIC Goodreads-shaped sample there (see :mod:`.sample`) and says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_datasets(register: Register) -> None:
    register.add("goodreads", "mmfuse_goodreads.dataset:GOODREADS")  # imported when used

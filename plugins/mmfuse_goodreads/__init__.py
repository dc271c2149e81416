"""The ``goodreads`` dataset: the paper's books (covers + descriptions, fiction label, rating).

Until real Goodreads files are prepared into the dataset folder, ``ensure`` writes a
deterministic, SYNTHETIC Goodreads-shaped sample there (see :mod:`.sample`) and says so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmfuse import hookimpl
from mmfuse.plugins import Register

from .sample import make_sample

log = logging.getLogger(__name__)

PARAMS = {"n_books": 5000, "seed": 0, "image_size": 64, "source": "auto"}
SOURCES = ("auto", "sample", "real")
SAMPLE_FILES = {"book_ids.txt", "covers.npy", "descriptions.txt", "is_fiction.npy",
                "average_rating.npy", "manifest.json", ".mmfuse-cache"}


class Goodreads:
    """Dataset plugin; params: ``n_books`` (5000), ``seed`` (0), ``image_size`` (64),
    ``source`` (auto: real data if prepared, else the synthetic sample | sample | real)."""

    def ensure(self, root: Path, params: Mapping[str, Any]) -> str:
        unknown = set(params) - set(PARAMS)
        if unknown:
            raise ValueError(
                f"goodreads: unknown params {sorted(unknown)}; known: {sorted(PARAMS)}")
        p = {**PARAMS, **params}
        if p["source"] not in SOURCES:
            raise ValueError(f"goodreads: source {p['source']!r}; known: {', '.join(SOURCES)}")
        manifest_path = root / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        if manifest and manifest.get("source") == "real" and p["source"] != "sample":
            return f"goodreads: real Goodreads data in {root} ({manifest.get('n_books')} books)"
        if p["source"] == "real":
            raise ValueError(
                f"goodreads: no real Goodreads data prepared in {root}; this version of mmfuse "
                "cannot prepare it yet. Use source: auto or sample (a synthetic sample).")
        wanted = {k: p[k] for k in ("n_books", "seed", "image_size")}
        if not manifest or {k: manifest.get(k) for k in wanted} != wanted:
            if root.exists() and not {c.name for c in root.iterdir()} <= SAMPLE_FILES:
                raise ValueError(f"goodreads: {root} holds other files; not writing a sample there")
            make_sample(root, **wanted)
        return (f"goodreads: SYNTHETIC Goodreads-shaped sample ({p['n_books']} books, seed "
                f"{p['seed']}) in {root} — planted structure, not the real data")


@hookimpl
def mmfuse_register_datasets(register: Register) -> None:
    register.add("goodreads", Goodreads())

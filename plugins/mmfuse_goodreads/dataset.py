"""The ``goodreads`` dataset object: its folder, real (prepared) or a synthetic sample."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .command import prepare_goodreads
from .output import KNOWN_NAMES
from .sample import make_sample

log = logging.getLogger(__name__)

PARAMS = {"n_books": 5000, "seed": 0, "image_size": 64, "source": "auto"}
SOURCES = ("auto", "sample", "real")
PREPARE_HINT = ("mmfuse data prepare goodreads --books goodreads_books.json.gz "
                "--genres goodreads_book_genres_initial.json.gz --download-covers --out {root}")


class Goodreads:
    """Dataset plugin; params: ``n_books`` (5000), ``seed`` (0), ``image_size`` (64),
    ``source`` (auto: real data if prepared, else the synthetic sample | sample | real).

    The synthetic params apply to the sample only: real data is used as prepared."""

    prepare_command = staticmethod(prepare_goodreads)

    def ensure(self, root: Path, params: Mapping[str, Any]) -> str:
        unknown = set(params) - set(PARAMS)
        if unknown:
            raise ValueError(
                f"goodreads: unknown params {sorted(unknown)}; known: {sorted(PARAMS)}")
        p = {**PARAMS, **params}
        if p["source"] not in SOURCES:
            raise ValueError(f"goodreads: source {p['source']!r}; known: {', '.join(SOURCES)}")
        root = Path(root)
        manifest_path = root / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        real = bool(manifest) and manifest.get("source") == "real"
        if real and p["source"] != "sample":
            return (f"goodreads: real Goodreads data in {root} ({manifest.get('n_books')} books, "
                    f"{manifest.get('n_fiction')} fiction, covers "
                    f"{manifest.get('image_size')}px)")
        if real:
            raise ValueError(f"goodreads: {root} holds real Goodreads data; not writing a "
                             "synthetic sample over it (use another root)")
        if p["source"] == "real":
            raise ValueError(f"goodreads: no real Goodreads data prepared in {root}; prepare "
                             f"it with `{PREPARE_HINT.format(root=root)}`, or use source: "
                             "auto or sample (a synthetic sample)")
        wanted = {k: p[k] for k in ("n_books", "seed", "image_size")}
        if not manifest or {k: manifest.get(k) for k in wanted} != wanted:
            if root.exists() and not {c.name for c in root.iterdir()} <= KNOWN_NAMES:
                raise ValueError(f"goodreads: {root} holds other files; not writing a sample there")
            make_sample(root, **wanted)
        return (f"goodreads: SYNTHETIC Goodreads-shaped sample ({p['n_books']} books, seed "
                f"{p['seed']}) in {root} — planted structure, not the real data")


GOODREADS = Goodreads()

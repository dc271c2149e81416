"""``prepare``: real Goodreads files (UCSD Book Graph) → the folder ``specs/goodreads.yaml`` reads.

1. Stream the genres file into a compact ``book_id → label`` table (:mod:`.records`).
2. Stream the books file through the paper's filters (:data:`.records.FILTERS`).
3. Draw books and fetch their covers (:mod:`.covers`) until ``n`` have a usable cover or the
   input is exhausted; books without one are dropped and counted, never given another cover.

   * ``first``: the first books in file order; reading stops once ``n`` are found.
   * ``random``: the books with the smallest keys ``blake2b(f"{seed}:{book_id}")`` — a seeded
     uniform sample that does not depend on file order.  Each pass over the file keeps only
     the next few smallest keys in a heap (bounded memory); another pass runs only when too
     many of them lacked covers.

4. Write the views in file order, check their alignment, write ``manifest.json`` last
   (:mod:`.output`).
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import math
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rich.progress import Progress

from mmfuse import __version__
from mmfuse.errors import DataError

from .covers import DROP_REASONS, CoverLoader, CoverSource
from .output import COVERS_CACHE, SCRATCH, Accepted, check_out_folder, write_outputs
from .records import (
    ENGLISH,
    FICTION_GENRES,
    FILTERS,
    TIE_RULE,
    Book,
    GenreTable,
    iter_books,
    read_genres,
)

log = logging.getLogger(__name__)

MAX_BATCH = 512  # covers fetched and decoded per step (bounds memory)
MAX_POOL = 50_000  # candidates one random pass may hold (bounds memory)


@dataclass(frozen=True)
class PrepareParams:
    """What to keep: ``n`` books, drawn ``first`` or ``random`` (with ``seed``), covers
    resized to ``image_size`` squared, fetched by ``workers`` threads."""

    n: int = 5000
    sample: Literal["first", "random"] = "first"
    seed: int = 0
    image_size: int = 64
    workers: int = 8

    def check(self) -> None:
        if self.n < 1 or self.image_size < 8 or self.workers < 1:
            raise DataError(f"need n >= 1, image_size >= 8, workers >= 1; got {self}")
        if self.sample not in ("first", "random"):
            raise DataError(f"sample {self.sample!r}; known: first, random")


class _Run:
    """The state of one ``prepare`` call: counts, progress and the books accepted so far."""

    def __init__(self, books_path: Path, genres: GenreTable, loader: CoverLoader,
                 accepted: Accepted, progress: Progress):
        self.books_path, self.genres = books_path, genres
        self.loader, self.accepted, self.progress = loader, accepted, progress
        self.kept: dict[str, int] = {}
        self.drawn, self.passes = 0, 0
        self.dropped: Counter[str] = Counter({reason: 0 for reason in DROP_REASONS})
        self.stopped_early = False
        self._covers_task = progress.add_task("covers", total=accepted.n)

    def stream(self, count: bool) -> Iterator[Book]:
        """One pass over the books file (counted in ``kept`` on the first pass only)."""
        self.passes += 1
        task = self.progress.add_task(f"books (pass {self.passes})",
                                      total=self.books_path.stat().st_size)
        kept = self.kept if count else {}
        yield from iter_books(self.books_path, self.genres, kept,
                              lambda done: self.progress.update(task, completed=done))

    def offer(self, books: list[Book]) -> None:
        """Fetch the covers of ``books`` and accept them in order until ``n`` are accepted."""
        for book, image in zip(books, self.loader.load(books), strict=True):
            if self.accepted.full:
                return
            self.drawn += 1
            if isinstance(image, str):
                self.dropped[image] += 1
            else:
                self.accepted.add(book, image)
            self.progress.update(self._covers_task, completed=len(self.accepted.books))

    def batch_size(self) -> int:
        return min(max(self.accepted.need, self.loader.workers), MAX_BATCH)


def _batches(books: Iterable[Book], size: Callable[[], int]) -> Iterator[list[Book]]:
    batch: list[Book] = []
    for book in books:
        batch.append(book)
        if len(batch) >= size():
            yield batch
            batch = []
    if batch:
        yield batch


def _draw_first(run: _Run) -> None:
    with closing(run.stream(count=True)) as books:
        for batch in _batches(books, run.batch_size):
            run.offer(batch)
            if run.accepted.full:
                run.stopped_early = True
                return


def sample_key(seed: int, book: Book) -> tuple[int, int]:
    """A book's place in the random order: a seeded hash of its id (then its position)."""
    digest = hashlib.blake2b(f"{seed}:{book.book_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big"), book.position


def _pool_size(run: _Run) -> int:
    """How many candidates the next random pass keeps: enough for the books still needed at
    the share of drawn books that had a usable cover so far (with a margin)."""
    rate = len(run.accepted.books) / run.drawn if run.drawn else 1.0
    size = math.ceil(1.25 * run.accepted.need / max(rate, 0.01)) + run.loader.workers
    return min(size, MAX_POOL)


def _draw_random(run: _Run, seed: int) -> None:
    floor: tuple[int, int] = (-1, -1)
    while not run.accepted.full:
        size = _pool_size(run)
        heap: list[tuple[tuple[int, int], Book]] = []  # max-heap on key via negation
        n_above = 0
        for book in run.stream(count=run.passes == 0):
            key = sample_key(seed, book)
            if key <= floor:
                continue
            n_above += 1
            item = ((-key[0], -key[1]), book)
            if len(heap) < size:
                heapq.heappush(heap, item)
            elif item > heap[0]:
                heapq.heapreplace(heap, item)
        chosen = sorted(heap, reverse=True)  # smallest keys first
        for start in range(0, len(chosen), MAX_BATCH):
            run.offer([book for _, book in chosen[start:start + MAX_BATCH]])
            if run.accepted.full:
                return
        if n_above <= size:
            return  # every remaining candidate was tried
        floor = (-chosen[-1][0][0], -chosen[-1][0][1])


def _input_info(path: Path) -> dict[str, Any]:
    return {"name": path.name, "bytes": path.stat().st_size}


def _check_inputs(books: Path, genres: Path, out: Path) -> None:
    for flag, path in (("--books", books), ("--genres", genres)):
        if not path.is_file():
            raise DataError(f"{flag} {path}: no such file")
    check_out_folder(out)


def _manifest(run: _Run, params: PrepareParams, books_path: Path, genres_path: Path,
              source: CoverSource, genre_stats: dict[str, int]) -> dict[str, Any]:
    accepted = run.accepted.books
    n_fiction = sum(b.is_fiction for b in accepted)
    return {
        "source": "real",
        "dataset": "Goodreads (UCSD Book Graph, Wan & McAuley)",
        "n_fiction": n_fiction,
        "n_nonfiction": len(accepted) - n_fiction,
        "image_size": params.image_size,
        "short_by": params.n - len(accepted),
        "params": asdict(params),
        "inputs": {"books": _input_info(books_path), "genres": _input_info(genres_path)},
        "covers": source.describe(),
        "counts": {
            "read": run.kept.get("read", 0),
            "kept_after": {name: run.kept.get(name, 0) for name in FILTERS},
            "genres_file": genre_stats,
            "drawn": run.drawn,
            "dropped_no_cover": dict(run.dropped),
            "sampled": len(accepted),
            "genre_ties_kept": sum(b.genre_tie for b in accepted),
            "passes": run.passes,
            "stopped_early": run.stopped_early,
        },
        "rules": {"english": list(ENGLISH), "fiction_genres": list(FICTION_GENRES),
                  "tie": TIE_RULE, "random_sample": "smallest blake2b('<seed>:<book_id>')"},
        "mmfuse_version": __version__,
    }


def prepare(books_path: Path, genres_path: Path, out: Path, covers: CoverSource,
            params: PrepareParams | None = None, progress: Progress | None = None
            ) -> dict[str, Any]:
    """Prepare ``out`` from the real Goodreads files and return its manifest (see the module
    docstring).  Raises ``DataError`` for bad inputs, a folder holding foreign files, or
    when no book has a usable cover."""
    params = params or PrepareParams()
    params.check()
    books_path, genres_path, out = Path(books_path), Path(genres_path), Path(out)
    _check_inputs(books_path, genres_path, out)
    progress = progress or Progress(disable=True)
    genre_stats: dict[str, int] = {}
    task = progress.add_task("genres", total=genres_path.stat().st_size)
    genres = read_genres(genres_path, genre_stats,
                         lambda done: progress.update(task, completed=done))
    log.info("genres: %s", genre_stats)
    scratch = out / SCRATCH
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        with CoverLoader(covers, params.image_size, params.workers) as loader:
            run = _Run(books_path, genres, loader, Accepted(scratch, params.n, params.image_size),
                       progress)
            if params.sample == "first":
                _draw_first(run)
            else:
                _draw_random(run, params.seed)
        if not run.accepted.books:
            raise DataError(f"no book passed the filters with a usable cover (read "
                            f"{run.kept.get('read', 0)} books, kept {run.kept}, dropped "
                            f"{dict(run.dropped)})")
        if run.accepted.need:
            log.warning("only %d of %d books have a usable cover", len(run.accepted.books),
                        params.n)
        manifest = _manifest(run, params, books_path, genres_path, covers, genre_stats)
        return write_outputs(out, scratch, run.accepted, manifest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def default_cache(out: Path) -> Path:
    """Where ``--download-covers`` keeps its covers: ``<out>/covers_cache``."""
    return Path(out) / COVERS_CACHE

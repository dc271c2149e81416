"""The prepared folder: what it holds, how it is written, and the check that its views align.

Every file lists the books in the order of ``book_ids.txt``.  ``covers_index.tsv`` repeats each
book id beside the SHA-1 of its cover's pixels as computed when the cover was decoded, so
:func:`check_alignment` can prove, by re-reading ``covers.npy``, that row ``i`` holds book
``i``'s own cover.  ``manifest.json`` is written last: its presence means the folder is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.errors import DataError

from .records import Book

log = logging.getLogger(__name__)

DATA_FILES = ("book_ids.txt", "covers.npy", "covers_index.tsv", "descriptions.txt",
              "is_fiction.npy", "average_rating.npy")
MANIFEST = "manifest.json"
SCRATCH = ".goodreads-prepare"
COVERS_CACHE = "covers_cache"
#: Names mmfuse may find in (and replace in) a Goodreads folder; anything else is the user's.
KNOWN_NAMES = frozenset({*DATA_FILES, MANIFEST, SCRATCH, COVERS_CACHE, ".mmfuse-cache"})
CHUNK = 512  # covers copied per step


def pixel_digest(image: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def check_out_folder(out: Path) -> None:
    """Refuse a folder that holds anything mmfuse did not write."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in KNOWN_NAMES) \
        if out.is_dir() else []
    if foreign:
        raise DataError(f"{out} holds files mmfuse did not write ({', '.join(foreign[:5])}"
                        f"{', ...' if len(foreign) > 5 else ''}); choose an empty or new folder")


class Accepted:
    """The books accepted so far (in acceptance order), their covers in a scratch memmap."""

    def __init__(self, scratch: Path, n: int, image_size: int):
        self.n = n
        self.covers = np.lib.format.open_memmap(scratch / "accepted_covers.npy", mode="w+",
                                                dtype=np.uint8,
                                                shape=(n, 3, image_size, image_size))
        self.books: list[Book] = []
        self.digests: list[str] = []

    @property
    def need(self) -> int:
        return self.n - len(self.books)

    @property
    def full(self) -> bool:
        return len(self.books) >= self.n

    def add(self, book: Book, image: np.ndarray) -> None:
        self.covers[len(self.books)] = image
        self.books.append(book)
        self.digests.append(pixel_digest(image))


def _write_views(scratch: Path, accepted: Accepted, order: list[int]) -> None:
    books = [accepted.books[i] for i in order]
    lines = "".join(f"{b.book_id}\n" for b in books)
    (scratch / "book_ids.txt").write_text(lines, encoding="utf-8", newline="\n")
    (scratch / "descriptions.txt").write_text(
        "".join(f"{b.description}\n" for b in books), encoding="utf-8", newline="\n")
    np.save(scratch / "is_fiction.npy", np.array([b.is_fiction for b in books], dtype=np.int64))
    np.save(scratch / "average_rating.npy",
            np.array([b.average_rating for b in books], dtype=np.float32))
    index = "".join(f"{accepted.books[i].book_id}\t{accepted.digests[i]}\n" for i in order)
    (scratch / "covers_index.tsv").write_text("book_id\tpixels_sha1\n" + index,
                                              encoding="utf-8", newline="\n")
    covers = np.lib.format.open_memmap(scratch / "covers.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(order), *accepted.covers.shape[1:]))
    for start in range(0, len(order), CHUNK):
        rows = order[start:start + CHUNK]
        covers[start:start + len(rows)] = accepted.covers[rows]
    covers.flush()
    del covers


def write_outputs(out: Path, scratch: Path, accepted: Accepted,
                  manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the views in file order, check them, then write the manifest; return it."""
    order = sorted(range(len(accepted.books)), key=lambda i: accepted.books[i].position)
    _write_views(scratch, accepted, order)
    (out / MANIFEST).unlink(missing_ok=True)  # the folder is incomplete from here on
    for name in DATA_FILES:
        os.replace(scratch / name, out / name)
    n = check_alignment(out)
    manifest = {"source": manifest.get("source"), "n_books": n, **manifest,
                "files": [*DATA_FILES, MANIFEST]}
    tmp = scratch / MANIFEST
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / MANIFEST)
    shutil.rmtree(scratch, ignore_errors=True)
    log.info("wrote %d real Goodreads books to %s", n, out)
    return manifest


def _read_lines(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="\n") as fh:
        return [line[:-1] if line.endswith("\n") else line for line in fh]


def _check_covers(root: Path, ids: list[str], problems: list[str]) -> None:
    rows = _read_lines(root / "covers_index.tsv")[1:]
    index = [row.split("\t") for row in rows]
    index_ids = [r[0] for r in index]
    if index_ids != ids:
        pairs = zip(index_ids, ids, strict=False)
        first = next((i for i, (a, b) in enumerate(pairs) if a != b),
                     min(len(index_ids), len(ids)))
        problems.append(f"covers_index.tsv lists other books than book_ids.txt (row {first})")
        return
    covers = np.load(root / "covers.npy", mmap_mode="r")
    if covers.dtype != np.uint8 or covers.ndim != 4 or covers.shape[:2] != (len(ids), 3):
        problems.append(f"covers.npy is {covers.dtype} {covers.shape}, "
                        f"expected uint8 ({len(ids)}, 3, S, S)")
        return
    bad = [ids[i] for i, row in enumerate(index) if pixel_digest(covers[i]) != row[-1]]
    if bad:
        problems.append(f"{len(bad)} rows of covers.npy are not their book's cover "
                        f"(first: book {bad[0]})")


def check_alignment(root: Path) -> int:
    """Re-read a prepared folder and prove every view lists the books of ``book_ids.txt`` in
    its order (covers by pixel digest); return the number of books or raise ``DataError``."""
    root = Path(root)
    missing = [name for name in DATA_FILES if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)}")
    ids = _read_lines(root / "book_ids.txt")
    n, problems = len(ids), []
    if not all(ids) or len(set(ids)) != n:
        problems.append("book_ids.txt has empty or repeated ids")
    _check_covers(root, ids, problems)
    descriptions = _read_lines(root / "descriptions.txt")
    if len(descriptions) != n or not all(descriptions):
        problems.append(f"descriptions.txt has {len(descriptions)} lines for {n} books "
                        "(or an empty one)")
    fiction = np.load(root / "is_fiction.npy")
    if fiction.shape != (n,) or fiction.dtype != np.int64 or not np.isin(fiction, (0, 1)).all():
        problems.append(f"is_fiction.npy is {fiction.dtype} {fiction.shape}, expected int64 "
                        f"0/1 ({n},)")
    rating = np.load(root / "average_rating.npy")
    if rating.shape != (n,) or rating.dtype != np.float32 or not (rating > 0).all():
        problems.append(f"average_rating.npy is {rating.dtype} {rating.shape}, expected "
                        f"float32 > 0 ({n},)")
    if problems:
        raise DataError(f"{root}: views are not aligned:\n  " + "\n  ".join(problems))
    return n

"""Reading the UCSD Book Graph files: streamed JSON lines, the genre table and the paper's filters.

Both files are gzip JSON lines in which every scalar is a string.  The books file (2.36 M lines)
is only ever streamed; the genres file is reduced to one small code per book that names at
least one genre (:class:`GenreTable`, about 9 bytes a book for the real, numeric ids).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zlib
from array import array
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmfuse.errors import DataError

ENGLISH = ("en", "eng", "en-US", "en-GB", "en-CA")
FICTION_GENRES = ("fiction", "romance", "fantasy, paranormal", "young-adult")
#: The paper's filters, in the order they are applied (and counted).
FILTERS = ("description", "average_rating", "language", "cover_url", "genre")
TIE_RULE = ("when several genres share the top vote count, the alphabetically first of them "
            "decides the label")
PROGRESS_EVERY = 5000  # lines between progress reports
FICTION, TIE = 1, 2  # bits of a genre code


@dataclass(frozen=True)
class Book:
    """One book that passed every filter; ``position`` is its 0-based line in the books file."""

    book_id: str
    position: int
    description: str
    average_rating: float
    is_fiction: int
    genre_tie: bool
    image_url: str


def iter_json(path: Path, on_bytes: Callable[[int], None] | None = None
              ) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for each line of a (gzip or plain) JSON-lines file, streamed.

    ``on_bytes`` is called now and then with the number of (compressed) bytes read so far."""
    with path.open("rb") as raw:
        is_gzip = raw.read(2) == b"\x1f\x8b"
        raw.seek(0)
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if is_gzip else raw
        lines = io.TextIOWrapper(stream, encoding="utf-8")
        lineno = 0
        try:
            for lineno, line in enumerate(lines, 1):
                if on_bytes is not None and lineno % PROGRESS_EVERY == 0:
                    on_bytes(raw.tell())
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{path}:{lineno}: not a JSON line ({exc})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object per line")
                yield lineno, record
        except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: unreadable after line {lineno} ({exc}); the file is "
                            "truncated or damaged: download it again") from exc
        if on_bytes is not None:
            on_bytes(raw.tell())


def fiction_code(genres: Mapping[str, Any]) -> int | None:
    """The genre code of one ``genres`` entry (bit FICTION, bit TIE), or None without genres.

    Fiction if the top-voted genre is one of :data:`FICTION_GENRES`; ties: :data:`TIE_RULE`."""
    votes: dict[str, float] = {}
    for name, count in genres.items():
        try:
            votes[str(name)] = float(count)
        except (TypeError, ValueError):
            continue
    if not votes:
        return None
    top = max(votes.values())
    tied = sorted(name for name, count in votes.items() if count == top)
    return (FICTION if tied[0] in FICTION_GENRES else 0) | (TIE if len(tied) > 1 else 0)


def _numeric(book_id: str) -> int | None:
    """``book_id`` as an int when that is lossless (ASCII digits, no leading zero, < 2**63)."""
    if book_id.isascii() and book_id.isdigit() and len(book_id) < 19 and (
            book_id == "0" or book_id[0] != "0"):
        return int(book_id)
    return None


class GenreTable:
    """``book_id`` → genre code for books whose entry names at least one genre."""

    def __init__(self, ids: np.ndarray, codes: np.ndarray, other: dict[str, int]):
        self._ids, self._codes, self._other = ids, codes, other

    def __len__(self) -> int:
        return len(self._ids) + len(self._other)

    def get(self, book_id: str) -> int | None:
        key = _numeric(book_id)
        if key is None:
            return self._other.get(book_id)
        i = int(np.searchsorted(self._ids, key))
        return int(self._codes[i]) if i < len(self._ids) and self._ids[i] == key else None

    @classmethod
    def build(cls, ids: array, codes: array, other: dict[str, int]) -> GenreTable:
        """Sort the numeric ids; a later entry for the same book wins."""
        id_arr = np.frombuffer(ids, dtype=np.int64) if len(ids) else np.zeros(0, np.int64)
        code_arr = np.frombuffer(codes, dtype=np.int8) if len(codes) else np.zeros(0, np.int8)
        order = np.argsort(id_arr, kind="stable")
        id_arr, code_arr = id_arr[order], code_arr[order]
        last = np.append(id_arr[1:] != id_arr[:-1], True)
        return cls(id_arr[last], code_arr[last], other)


def read_genres(path: Path, stats: MutableMapping[str, int],
                on_bytes: Callable[[int], None] | None = None) -> GenreTable:
    """Stream the genres file into a :class:`GenreTable`; count ``entries``, ``with_genres``
    and ``ties`` into ``stats``."""
    ids, codes, other = array("q"), array("b"), {}
    for key in ("entries", "with_genres", "ties"):
        stats.setdefault(key, 0)
    for _, record in iter_json(path, on_bytes):
        stats["entries"] += 1
        book_id, genres = str(record.get("book_id") or ""), record.get("genres")
        code = fiction_code(genres) if isinstance(genres, dict) and book_id else None
        if code is None:
            continue
        stats["with_genres"] += 1
        stats["ties"] += bool(code & TIE)
        key = _numeric(book_id)
        if key is None:
            other[book_id] = code
        else:
            ids.append(key)
            codes.append(code)
    return GenreTable.build(ids, codes, other)


def clean_text(text: Any) -> str:
    """One line: every run of whitespace (newlines, tabs, U+2028, ...) becomes one space."""
    return " ".join(str(text or "").split())


def _rating(value: Any) -> float:
    try:
        rating = float(value)
    except (TypeError, ValueError):
        return math.nan
    return rating if math.isfinite(rating) else math.nan


def iter_books(path: Path, genres: GenreTable, kept: MutableMapping[str, int],
               on_bytes: Callable[[int], None] | None = None) -> Iterator[Book]:
    """Stream the books file and yield those passing every filter, in file order.

    ``kept`` counts ``read`` and, for each of :data:`FILTERS`, the books still kept after it."""
    for key in ("read", *FILTERS):
        kept.setdefault(key, 0)
    for lineno, record in iter_json(path, on_bytes):
        kept["read"] += 1
        description = clean_text(record.get("description"))
        if not description:
            continue
        kept["description"] += 1
        rating = _rating(record.get("average_rating"))
        if not rating > 0:
            continue
        kept["average_rating"] += 1
        if str(record.get("language_code") or "") not in ENGLISH:
            continue
        kept["language"] += 1
        url = str(record.get("image_url") or "").strip()
        if not url or "nophoto" in url:
            continue
        kept["cover_url"] += 1
        book_id = str(record.get("book_id") or "")
        code = genres.get(book_id) if book_id else None
        if code is None:
            continue
        kept["genre"] += 1
        yield Book(book_id=book_id, position=lineno - 1, description=description,
                   average_rating=rating, is_fiction=code & FICTION, genre_tie=bool(code & TIE),
                   image_url=url)

"""Cover images of the drawn books: from a folder named by book id, or downloaded from
``image_url`` into a resumable cache.

A book without a usable cover is reported with a reason (:data:`MISSING`, :data:`FAILED`,
:data:`UNREADABLE`) and dropped by the caller; it never gets another book's cover.

The download cache holds ``<book_id><ext>`` files (a file already there is never fetched again;
each download goes to a temporary file that is renamed into place, so an interrupted run
leaves no partial cover) and ``<book_id>.failed`` markers for permanent HTTP errors (404, ...),
so a later run does not ask again; delete the markers to retry.  Because the cache is named by
book id, it can also be passed as ``--covers`` later.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
from mmfuse_readers.images import EXTENSIONS, load_image
from PIL import Image

from mmfuse import __version__

from .records import Book

log = logging.getLogger(__name__)

MISSING, FAILED, UNREADABLE = "missing", "download_failed", "unreadable"
DROP_REASONS = (MISSING, FAILED, UNREADABLE)
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Failures worth retrying (a local disk error is not one of them: it propagates).
NETWORK_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)
MAX_BYTES = 20 * 2**20
USER_AGENT = f"mmfuse/{__version__} (Goodreads cover cache)"
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}")


def file_stem(book_id: str) -> str:
    """A file name for ``book_id``: itself when harmless, else a hash of it."""
    if _SAFE.fullmatch(book_id):
        return book_id
    return "id-" + hashlib.sha1(book_id.encode()).hexdigest()


class CoverSource(Protocol):
    """Where covers come from: ``fetch`` returns the image file or a drop reason."""

    def fetch(self, book: Book) -> Path | str: ...

    def describe(self) -> dict[str, Any]: ...


class FolderCovers:
    """Covers in a folder, named by book id with or without an image extension."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def fetch(self, book: Book) -> Path | str:
        stem = file_stem(book.book_id)
        for ext in EXTENSIONS:
            path = self.folder / (stem + ext)
            if path.is_file():
                return path
        return MISSING

    def describe(self) -> dict[str, Any]:
        return {"mode": "folder", "folder": str(self.folder)}


class _Permanent(Exception):
    """A download failure that retrying will not fix."""


class CoverDownloader:
    """Download covers from their ``image_url`` into ``cache`` (see the module docstring).

    ``retries`` extra attempts after a transient failure (timeouts, connection errors, HTTP
    408/429/5xx), waiting ``backoff * 2**attempt`` seconds before each.  Thread-safe."""

    def __init__(self, cache: Path, *, retries: int = 3, backoff: float = 1.0,
                 timeout: float = 30.0):
        self.cache = Path(cache)
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _target(self, book: Book) -> Path:
        ext = os.path.splitext(urlparse(book.image_url).path)[1].lower()
        return self.cache / (file_stem(book.book_id) + (ext if ext in EXTENSIONS else ""))

    def fetch(self, book: Book) -> Path | str:
        target = self._target(book)
        marker = target.with_name(file_stem(book.book_id) + ".failed")
        if target.is_file():
            self._count("cached")
            return target
        if marker.is_file():
            self._count("failed_before")
            return FAILED
        self.cache.mkdir(parents=True, exist_ok=True)
        try:
            self._fetch_with_retries(book.image_url, target)
        except _Permanent as exc:
            log.info("no cover for book %s: %s", book.book_id, exc)
            marker.write_text(f"{book.image_url}\n{exc}\n", encoding="utf-8")
            self._count("failed")
            return FAILED
        except NETWORK_ERRORS as exc:  # transient, retries used up: not remembered
            log.warning("no cover for book %s after %d attempts: %s",
                        book.book_id, self.retries + 1, exc)
            self._count("failed")
            return FAILED
        self._count("downloaded")
        return target

    def _fetch_with_retries(self, url: str, target: Path) -> None:
        if urlparse(url).scheme not in ("http", "https"):
            raise _Permanent(f"not an http(s) URL: {url!r}")
        for attempt in range(self.retries + 1):
            try:
                self._download(url, target)
                return
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRY_STATUS:
                    raise _Permanent(f"HTTP {exc.code} for {url}") from None
                error: Exception = exc
            except NETWORK_ERRORS as exc:
                error = exc
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise error

    def _download(self, url: str, target: Path) -> None:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read(MAX_BYTES + 1)
        except ValueError as exc:  # a malformed URL
            raise _Permanent(f"{exc}: {url!r}") from None
        if len(data) > MAX_BYTES:
            raise _Permanent(f"larger than {MAX_BYTES} bytes: {url}")
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def describe(self) -> dict[str, Any]:
        return {"mode": "download", "cache": str(self.cache), "retries": self.retries,
                "stats": dict(sorted(self.stats.items()))}


class CoverLoader:
    """Fetch and decode covers with a bounded pool of threads (use as a context manager)."""

    def __init__(self, source: CoverSource, image_size: int, workers: int = 8):
        self.source, self.size = source, (image_size, image_size)
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="covers")

    def __enter__(self) -> CoverLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, book: Book) -> np.ndarray | str:
        got = self.source.fetch(book)
        if isinstance(got, str):
            return got
        try:
            return load_image(got, self.size, "RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            log.info("unreadable cover %s for book %s: %s", got, book.book_id, exc)
            return UNREADABLE

    def load(self, books: Sequence[Book]) -> list[np.ndarray | str]:
        """``3 × S × S`` uint8 (aspect kept, padded, never cropped) or a drop reason, per book."""
        return list(self._pool.map(self._one, books))

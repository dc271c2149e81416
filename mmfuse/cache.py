"""Featurizer output cached next to its input, keyed by a hash of input and parameters."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CACHE_DIR = ".mmfuse-cache"


def fingerprint(paths: Iterable[Path], params: Mapping[str, Any]) -> str:
    """Hash of the inputs' bytes (files) or of name, size and mtime (members of a folder)."""
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for path in paths:
        if path.is_dir():
            for member in sorted(path.iterdir()):
                if member.name == CACHE_DIR:  # our own output is not an input
                    continue
                st = member.stat()
                h.update(f"{member.name}:{st.st_size}:{st.st_mtime_ns};".encode())
        else:
            with path.open("rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def cached_array(
    anchor: Path, kind: str, key: str, compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, Path]:
    """Load ``<anchor's folder>/.mmfuse-cache/<stem>.<kind>-<key>.npy`` (memory-mapped) or
    compute it, write it atomically, and return it."""
    folder = (anchor if anchor.is_dir() else anchor.parent) / CACHE_DIR
    path = folder / f"{anchor.name}.{kind}-{key}.npy"
    if path.is_file():
        log.info("cache hit: %s", path)
        return np.load(path, mmap_mode="r"), path
    array = compute()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)
    log.info("cached %s", path)
    return np.load(path, mmap_mode="r"), path

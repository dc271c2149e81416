"""Fetch npm packages as tarballs (``npm pack``) into a cache folder and extract them safely.

Tarballs are kept in the cache (``<cache>/<name>-<version>.tgz``) and reused; ``npm`` is only
run for a tarball that is not there.  Extraction takes only the members asked for and never
writes outside the destination folder (links, devices and ``..`` paths are refused).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

NPM_HINT = "install Node.js/npm, e.g. apt-get install npm"


def default_cache() -> Path:
    """``$MMFUSE_CACHE/npm`` when that is set, else ``~/.cache/mmfuse/npm``."""
    base = os.environ.get("MMFUSE_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "mmfuse") / "npm"


def tarball_name(name: str, version: str) -> str:
    """The file name ``npm pack`` gives a package (``@scope/x`` → ``scope-x-1.0.0.tgz``)."""
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def npm_pack(name: str, version: str, dest: Path, timeout: float) -> Path:
    """Run ``npm pack name@version`` in a scratch folder of ``dest`` and move the tarball into
    ``dest`` (so a failed or interrupted download never leaves a partial tarball there)."""
    npm = shutil.which("npm")
    if npm is None:
        raise ValueError(
            f"`npm` is not on PATH; it is needed to fetch {name}@{version}: {NPM_HINT}")
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".npm-pack-") as scratch:
        log.info("npm pack %s@%s (into %s)", name, version, dest)
        try:
            done = subprocess.run(
                [npm, "pack", f"{name}@{version}"], cwd=scratch, capture_output=True, text=True,
                timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise ValueError(f"`npm pack {name}@{version}` took over {timeout:g} s; "
                             "is the npm registry reachable?") from None
        except OSError as exc:
            raise ValueError(f"could not run npm ({exc}): {NPM_HINT}") from None
        produced = Path(scratch) / tarball_name(name, version)
        if done.returncode != 0 or not produced.is_file():
            detail = (done.stderr or done.stdout or "").strip()[-2000:]
            raise ValueError(f"`npm pack {name}@{version}` failed (exit {done.returncode}): "
                             f"{detail or 'no output'}")
        target = dest / produced.name
        os.replace(produced, target)
    return target


def ensure_tarball(name: str, version: str, cache: Path, timeout: float) -> Path:
    """The cached tarball of ``name@version``, fetched with ``npm pack`` if it is not there."""
    path = cache / tarball_name(name, version)
    if path.is_file():
        log.info("reusing %s", path)
        return path
    return npm_pack(name, version, cache, timeout)


def _wanted(member: tarfile.TarInfo, prefixes: Sequence[str]) -> bool:
    return any(member.name == p.rstrip("/") or member.name.startswith(p) for p in prefixes)


def _check_member(member: tarfile.TarInfo, dest: Path) -> None:
    """Refuse anything but plain files and folders, and any path that leaves ``dest``."""
    if not (member.isfile() or member.isdir()):
        raise ValueError(f"unsafe tar member {member.name!r}: not a plain file or folder")
    target = (dest / member.name).resolve()
    if member.name.startswith(("/", "\\")) or not target.is_relative_to(dest.resolve()):
        raise ValueError(f"unsafe tar member {member.name!r}: leaves the extraction folder")


def extract(tgz: Path, dest: Path, prefixes: Sequence[str]) -> list[str]:
    """Extract the members of ``tgz`` under any of ``prefixes`` into ``dest``; return their
    names.  Uses tarfile's ``data`` filter where this Python has it, and checks every member
    path itself in any case."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tgz, "r:*") as tar:
            members = [m for m in tar.getmembers() if _wanted(m, prefixes)]
            for member in members:
                _check_member(member, dest)
            if hasattr(tarfile, "data_filter"):  # 3.12+, and 3.8.17/3.9.17/3.10.12/3.11.4+
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - old Python: members were checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as exc:
        raise ValueError(f"{tgz} is not a readable tarball ({exc}); delete it to fetch it "
                         "again") from None
    return [m.name for m in members]

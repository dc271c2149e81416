"""The dataset objects of this plugin (see the package's docstring)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .build import BUILDERS, Prepared, check_ids, output_files
from .fetch import PACKAGE, VERSION, ensure_sdist, read_data_files, sha256

log = logging.getLogger(__name__)

PARAMS: dict[str, Any] = {"cache": None, "timeout": 300}
FORMAT = 3  # bump when the files written change
MANIFEST = "manifest.json"
OWN_FILES = {".mmfuse-cache", MANIFEST}


class DfmfDataset:
    """Dataset plugin for one DFMF set (``dicty`` or ``pharma``); params: ``cache`` (folder of
    the cached sdist) and ``timeout`` (seconds for ``pip download``, 300)."""

    def __init__(self, name: str):
        if name not in BUILDERS:
            raise ValueError(f"unknown DFMF set {name!r}; known: {', '.join(BUILDERS)}")
        self.name = name

    def ensure(self, root: Path, params: Mapping[str, Any]) -> str:
        """Prepare ``root`` unless it already holds this set; say what it holds."""
        unknown = set(params) - set(PARAMS)
        if unknown:
            raise ValueError(f"{self.name}: unknown params {sorted(unknown)}; "
                             f"known: {sorted(PARAMS)}")
        root = Path(root)
        manifest = self._current_manifest(root)
        if manifest is None:
            self._check_folder(root)
            manifest = self.prepare(root, {**PARAMS, **params})
        return self.describe(root, manifest)

    def prepare(self, root: Path, params: Mapping[str, Any]) -> dict[str, Any]:
        """Fetch (or reuse) the sdist, build the arrays and write them; the manifest last."""
        files, build = BUILDERS[self.name]
        sdist = ensure_sdist(params)
        prepared = build(read_data_files(sdist, self.name, files.values()))
        check_ids(prepared.ids)
        written = {f"{i}.txt" for i in prepared.ids} | {f"{a}.npy" for a in prepared.arrays}
        if written != output_files(self.name):  # keeps OUTPUTS honest
            raise ValueError(f"{self.name}: built {sorted(written)}, "
                             f"expected {sorted(output_files(self.name))}")
        manifest = {
            "dataset": self.name, "source": PACKAGE, "version": VERSION, "format": FORMAT,
            "sdist": sdist.name, "sha256": sha256(sdist),
            "source_files": sorted(files.values()),
            "counts": {name: len(ids) for name, ids in prepared.ids.items()},
            "arrays": {name: {"shape": list(a.shape), "dtype": str(a.dtype)}
                       for name, a in prepared.arrays.items()},
            **prepared.notes,
        }
        write_prepared(root, prepared, manifest)
        log.info("%s: wrote %s", self.name, root)
        return manifest

    def describe(self, root: Path, manifest: Mapping[str, Any]) -> str:
        counts = ", ".join(f"{n:,} {k}" for k, n in manifest["counts"].items())
        return (f"{self.name}: real data of Žitnik & Zupan (DFMF), from {PACKAGE} "
                f"{manifest['version']}: {counts} in {root}")

    def _current_manifest(self, root: Path) -> dict[str, Any] | None:
        path = root / MANIFEST
        if not path.is_file():
            return None
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        current = (manifest.get("dataset") == self.name and manifest.get("version") == VERSION
                   and manifest.get("format") == FORMAT)
        complete = all((root / f).is_file() for f in output_files(self.name))
        return manifest if current and complete else None

    def _check_folder(self, root: Path) -> None:
        """Refuse to write into a folder that holds files this dataset did not write."""
        if not root.exists():
            return
        foreign = sorted(p.name for p in root.iterdir()
                         if p.name not in output_files(self.name) | OWN_FILES
                         and not p.name.startswith(".tmp-"))
        if foreign:
            raise ValueError(f"{self.name}: {root} holds other files ({', '.join(foreign[:3])}"
                             f"{', …' if len(foreign) > 3 else ''}); not writing there")


def _atomic(path: Path, write: Any) -> None:
    """Write ``path`` through a temporary file in its folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_prepared(root: Path, prepared: Prepared, manifest: Mapping[str, Any]) -> None:
    """Write ids and arrays (each atomically), then ``manifest.json`` last."""
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # a crash below leaves no stale manifest
    for name, ids in prepared.ids.items():
        text = "".join(f"{i}\n" for i in ids).encode("utf-8")
        _atomic(root / f"{name}.txt", lambda fh, t=text: fh.write(t))
    for name, array in prepared.arrays.items():
        _atomic(root / f"{name}.npy", lambda fh, a=array: np.save(fh, a, allow_pickle=False))
    text = json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")
    _atomic(root / MANIFEST, lambda fh: fh.write(text))


DICTY = DfmfDataset("dicty")
PHARMA = DfmfDataset("pharma")

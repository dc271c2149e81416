"""The run folder: resolved spec, manifest, metrics, checkpoint, embeddings, evaluation.

Every file is written atomically (temp file + rename): a run killed at any moment leaves the
previous complete version of each file, never a torn one.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mmfuse.errors import MmfuseError
from mmfuse.spec import Spec, parse_yaml, validate


def atomic_write(path: Path, write) -> None:
    """Call ``write(fh)`` on a temp file beside ``path``, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


class RunDir:
    """Paths and readers/writers of one run folder."""

    def __init__(self, root: Path):
        self.root = Path(root)

    spec_file = property(lambda self: self.root / "resolved_spec.yaml")
    manifest_file = property(lambda self: self.root / "manifest.json")
    metrics_file = property(lambda self: self.root / "metrics.csv")
    checkpoint_file = property(lambda self: self.root / "checkpoint.pt")
    evaluation_file = property(lambda self: self.root / "evaluation.json")
    embeddings_dir = property(lambda self: self.root / "embeddings")
    holdout_dir = property(lambda self: self.root / "holdout")

    def holdout_file(self, view: str) -> Path:
        """A view's held-out cells (``evaluate.holdout``): rows, cols, values (.npz)."""
        return self.holdout_dir / f"{view}.npz"

    def write_holdout(self, view: str, cells) -> None:
        """A view's held-out cells (:class:`mmfuse.holdout.HeldCells`), written atomically."""
        atomic_write(self.holdout_file(view), lambda fh: np.savez(
            fh, rows=cells.rows, cols=cells.cols, values=cells.values))

    def exists(self) -> bool:
        return self.spec_file.is_file()

    # ------------------------------------------------------------------ spec and manifest

    def write_spec(self, spec: Spec) -> None:
        text = "# resolved by mmfuse: every default filled in, paths absolute\n"
        _write_text(self.spec_file, text + yaml.safe_dump(spec.dump(), sort_keys=False))

    def read_spec(self) -> Spec:
        if not self.exists():
            raise MmfuseError(f"{self.root} is not an mmfuse run folder (no resolved_spec.yaml)")
        data, src = parse_yaml(self.spec_file.read_text(encoding="utf-8"), str(self.spec_file))
        return validate(data, src, self.root)

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        _write_text(self.manifest_file, json.dumps(manifest, indent=2, default=str) + "\n")

    def read_manifest(self) -> dict[str, Any]:
        return json.loads(self.manifest_file.read_text()) if self.manifest_file.is_file() else {}

    # ------------------------------------------------------------------ metrics

    def write_metrics(self, history: Sequence[Mapping[str, float]]) -> None:
        fields: list[str] = []
        for row in history:
            fields += [k for k in row if k not in fields]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
        _write_text(self.metrics_file, buf.getvalue())

    # ------------------------------------------------------------------ checkpoint

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        atomic_write(self.checkpoint_file, lambda fh: torch.save(dict(state), fh))

    def load_checkpoint(self, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        if not self.checkpoint_file.is_file():
            raise MmfuseError(f"no checkpoint in {self.root}: nothing to resume")
        return torch.load(self.checkpoint_file, map_location=map_location, weights_only=True)

    # ------------------------------------------------------------------ embeddings

    def write_embeddings(self, entity: str, z: np.ndarray, ids: Sequence[str]) -> Path:
        path = self.embeddings_dir / f"{entity}.npy"
        atomic_write(path, lambda fh: np.save(fh, z))
        _write_text(self.embeddings_dir / f"{entity}.ids.txt", "".join(f"{i}\n" for i in ids))
        return path

    def read_embeddings(self, entity: str) -> tuple[np.ndarray, list[str]]:
        path = self.embeddings_dir / f"{entity}.npy"
        if not path.is_file():
            known = sorted(p.stem for p in self.embeddings_dir.glob("*.npy"))
            raise MmfuseError(f"no embeddings for entity {entity!r} in {self.root}; "
                              f"known: {', '.join(known) or '(none)'}")
        ids = (self.embeddings_dir / f"{entity}.ids.txt").read_text(encoding="utf-8").splitlines()
        return np.load(path), ids

    def write_evaluation(self, result: Mapping[str, Any]) -> None:
        _write_text(self.evaluation_file, json.dumps(result, indent=2) + "\n")

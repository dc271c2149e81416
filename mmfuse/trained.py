"""A run as a Python object: ``mmfuse.train`` makes one, ``Run.open`` reads a finished one.

    run = mmfuse.Run.open("runs/emoji")
    run.embeddings("emoji")          # DataFrame indexed by id
    run.evaluation                   # what evaluation.json holds, or None
    run.embed("emoji", {"image": images, "text": rows}, ids=new_ids)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmfuse.errors import DataError, MmfuseError
from mmfuse.run import RunDir
from mmfuse.spec import Spec, load_spec

if TYPE_CHECKING:
    import pandas as pd

    from mmfuse.build import Built


class Run:
    """A run folder: its spec, manifest, metrics, embeddings, evaluation and model."""

    def __init__(self, path: Path | str, built: Built | None = None):
        self.dir = RunDir(Path(path))
        self._built = built  # the trained model on the CPU, once loaded

    @classmethod
    def open(cls, path: Path | str) -> Run:
        """A finished (or stopped) run folder; an error if ``path`` is not one."""
        run = cls(path)
        if not run.dir.exists():
            raise MmfuseError(f"{run.path} is not an mmfuse run folder (no resolved_spec.yaml)")
        return run

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def path(self) -> Path:
        return self.dir.root

    @property
    def spec(self) -> Spec:
        """The resolved spec the run was trained with."""
        return self.dir.read_spec()

    @property
    def manifest(self) -> dict[str, Any]:
        return self.dir.read_manifest()

    @property
    def evaluation(self) -> dict[str, Any] | None:
        """What ``evaluation.json`` holds (None: the run was not evaluated)."""
        file = self.dir.evaluation_file
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    @property
    def metrics(self) -> pd.DataFrame:
        """The per-epoch mean of every loss term (``metrics.csv``), one row an epoch."""
        import pandas as pd

        if not self.dir.metrics_file.is_file():
            raise MmfuseError(f"{self.path} has no metrics.csv (no epoch finished)")
        return pd.read_csv(self.dir.metrics_file)

    @property
    def entities(self) -> list[str]:
        return sorted(p.stem for p in self.dir.embeddings_dir.glob("*.npy"))

    def embeddings(self, entity: str) -> pd.DataFrame:
        """Every instance's embedding: one row per id (the index, named ``entity``),
        columns ``z0`` … ``z{d-1}``."""
        z, ids = self.dir.read_embeddings(entity)
        return _frame(z, ids, entity)

    def embed(self, entity: str, data: Mapping[str, Any], ids: Sequence[Any] | None = None
              ) -> pd.DataFrame:
        """Embed new instances of ``entity`` through the trained encoders, with nothing but
        the run folder (its training data is not read).

        ``data`` maps each view that gives ``entity`` a code to the new instances' data:
        in the view's input space (:func:`mmfuse.api.embed_new`) as arrays, scipy sparse
        matrices, DataFrames or ``.npy``/``.npz`` files; or, for a view whose reader
        featurizes new raw input (``word2vec``, ``tfidf``, ``glove``), raw input featurized
        as in training: a file (new documents, one a line) or a list of str (one document
        each).  ``ids`` name the rows (default: a DataFrame's index, else 0 … n-1)."""
        from mmfuse.api import embed_new, load_trained, new_inputs

        if self._built is None:
            self._built = load_trained(self.dir)
        index = next((value.index for value in data.values()
                      if hasattr(value, "columns") and hasattr(value, "index")), None)
        names = None if ids is None else [str(i) for i in ids]
        z = embed_new(self._built, entity, new_inputs(self._built, entity, data, names))
        names = ids if ids is not None else index if index is not None else range(len(z))
        if len(names) != len(z):
            raise DataError(f"{len(names)} ids for {len(z)} new instances")
        return _frame(z, list(names), entity)


def _frame(z: np.ndarray, ids: Sequence[Any], entity: str) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(z, index=pd.Index(ids, name=entity),
                        columns=[f"z{i}" for i in range(z.shape[1])])


def train(spec: Spec | Mapping[str, Any] | Path | str, out: Path | str | None = None,
          **options: Any) -> Run:
    """Train a spec (a :class:`Spec`, a spec file, or a mapping as
    :meth:`Spec.from_dict` takes) into the run folder ``out`` (default
    ``runs/<name>/<time>``); return it as a :class:`Run`.  ``options`` are those of
    :func:`mmfuse.api.train` (``resume``, ``device``, ``evaluate``, ``callbacks``, ...)."""
    from mmfuse.api import train as train_spec

    if isinstance(spec, (str, Path)):
        spec = load_spec(spec)
    elif isinstance(spec, Mapping):
        spec = Spec.from_dict(spec)
    result = train_spec(spec, out, **options)
    built = result.built
    if built.device.type == "cpu":
        built.model.eval()
        return Run(result.run.root, built=built)
    return Run(result.run.root)

"""Predictions of a trained run for the cells of its matrix views.

A cell ``(i, j)`` of view ``v`` is predicted as the factor term reconstructs it,
``link_v(z_r(i) · z_c(j) + b_v)``, from the run's embeddings and the term's intercept, and
returned in the data's own units (a view trained with ``scale: standard`` is scaled back
with its column statistics).  Rows may be known instances or new ones embedded through the
trained encoders (:func:`mmfuse.api.embed_new`): cold start from side information.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mmfuse.data import Data, MatrixData
from mmfuse.errors import MmfuseError
from mmfuse.plugins import Plugins, get_plugins
from mmfuse.run import RunDir
from mmfuse.spec import Spec


class PredictError(MmfuseError):
    pass


@dataclass
class CellModel:
    """What predicting a view's cells needs: embeddings, intercepts, links (each view's
    likelihood, with its learnt parameters), scaling."""

    spec: Spec
    embeddings: dict[str, np.ndarray]
    intercepts: dict[str, float]
    data: Data
    plugins: Plugins
    likelihoods: dict[str, Any]

    @classmethod
    def from_run(cls, run: RunDir, data: Data | None = None, spec: Spec | None = None,
                 plugins: Plugins | None = None) -> CellModel:
        from mmfuse.build import make_likelihoods
        from mmfuse.data import load_data

        spec = spec or run.read_spec()
        plugins = plugins or get_plugins()
        state = run.load_checkpoint("cpu")["model"]
        intercepts = {key.split(".", 1)[1]: float(value) for key, value in state.items()
                      if key.startswith("factor_bias.")}
        embeddings = {e: run.read_embeddings(e)[0] for e in spec.entities}
        likelihoods, _ = make_likelihoods(spec, plugins)  # the run's spec: no issues
        for view, lk in likelihoods.items():
            if isinstance(lk, torch.nn.Module):
                prefix = f"likelihood_modules.{view}."
                lk.load_state_dict({k[len(prefix):]: v for k, v in state.items()
                                    if k.startswith(prefix)})
        return cls(spec, embeddings, intercepts, data or load_data(spec, plugins), plugins,
                   likelihoods)

    def check_view(self, view: str) -> tuple[str, str]:
        """The view's row and column entities; an error unless it has a factor term."""
        v = self.spec.views.get(view)
        if v is None or v.is_tensor or v.features:
            matrix = [n for n, s in self.spec.views.items() if s.cols and not s.is_tensor]
            raise PredictError(f"{view!r} is not a matrix view between two entities; "
                               f"those are: {', '.join(matrix) or 'none'}")
        if view not in self.intercepts:
            raise PredictError(f"view {view!r} was trained without a factor term: its cells "
                               "have no prediction")
        return v.rows, v.cols  # type: ignore[return-value]

    def natural(self, view: str, z_rows: np.ndarray, z_cols: np.ndarray) -> np.ndarray:
        """``z_r · z_c + b`` for paired rows of ``z_rows`` and ``z_cols`` (the link's input)."""
        return np.einsum("ij,ij->i", z_rows, z_cols) + self.intercepts[view]

    def to_data_units(self, view: str, natural: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The link of ``natural`` scores, scaled back to the data's units."""
        scores = torch.from_numpy(np.asarray(natural, np.float32))
        with torch.no_grad():
            out = self.likelihoods[view].link(scores).numpy()
        matrix = self.data.views[view]
        if isinstance(matrix, MatrixData) and matrix.center is not None:
            out = out * matrix.spread[cols] + matrix.center[cols]  # type: ignore[index]
        return out.astype(np.float64)

    def cells(self, view: str, rows: np.ndarray, cols: np.ndarray,
              z_rows: np.ndarray | None = None) -> np.ndarray:
        """Predictions of cells ``(rows[k], cols[k])`` in data units; ``z_rows`` (one per
        cell) replaces the row entity's embeddings (new rows)."""
        r, c = self.check_view(view)
        zr = self.embeddings[r][rows] if z_rows is None else z_rows
        return self.to_data_units(view, self.natural(view, zr, self.embeddings[c][cols]), cols)

    def row_scores(self, view: str, z_rows: np.ndarray) -> np.ndarray:
        """Every column's natural score for each given row embedding (n × n_cols): ranks
        columns as the predictions do (the link is increasing)."""
        _, c = self.check_view(view)
        return z_rows @ self.embeddings[c].T + self.intercepts[view]

    def top(self, view: str, rows: np.ndarray | None, k: int,
            z_rows: np.ndarray | None = None, chunk: int = 512
            ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best columns of each row with no training value (known ``rows``; new
        rows, ``z_rows``, exclude nothing): column indices and predictions (n × k)."""
        r, c = self.check_view(view)
        zs = self.embeddings[r][rows] if z_rows is None else z_rows
        n_cols = len(self.embeddings[c])
        k = min(k, n_cols)
        matrix = self.data.views[view]
        best_cols, best = [], []
        for start in range(0, len(zs), chunk):
            scores = self.row_scores(view, zs[start:start + chunk])
            if rows is not None and isinstance(matrix, MatrixData):
                exclude_observed(scores, matrix, rows[start:start + chunk])
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1, kind="stable")
            cols = np.take_along_axis(part, order, 1)
            best_cols.append(cols)
            values = self.to_data_units(
                view, np.take_along_axis(scores, cols, 1).ravel(), cols.ravel())
            best.append(values.reshape(cols.shape))
        return np.concatenate(best_cols), np.concatenate(best)


def exclude_observed(scores: np.ndarray, matrix: MatrixData, rows: np.ndarray) -> None:
    """Set the scores of cells with a training value to -inf (in place)."""
    if matrix.sparse:
        part = matrix.sparse_rows(np.asarray(rows))
        owner = np.repeat(np.arange(len(rows)), np.diff(part.indptr))
        scores[owner, part.indices] = -np.inf
        return
    values, mask = matrix.rows(np.asarray(rows), scaled=False)
    observed = ~np.isnan(values) if mask is None else mask
    scores[observed] = -np.inf

"""What a trained model needs from its training data, kept in the run folder, so that a run
embeds new instances (and predicts their cells) with nothing but its folder.

A training writes ``inputs.json`` — every entity's size, every view's shape, layout (dense
or sparse), dtype, which cells count as missing, and its featurizer (reader, plugin, the
JSON part of its state) — and ``inputs/<view>.npz`` for a view that has arrays to keep: the
column statistics of ``scale: standard`` (``scale.center``, ``scale.spread``) and a
featurizer's state arrays (``featurizer.<name>``: word vectors, a tf-idf vocabulary, ...;
see :attr:`mmfuse.plugin_api.ViewArray.state`).  Factor intercepts and the weights are in
the checkpoint, entity ids beside the embeddings.  :func:`stored_data` makes a
:class:`~mmfuse.data.Data` of these, whose views know their shape and scaling but hold no
cells, and :func:`build_stored` the run's model on it: the training files are never read.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from mmfuse.data import Data, MatrixData, TensorData, dtype_problem, read_ids
from mmfuse.errors import DataError, MmfuseError, PluginError, describe
from mmfuse.plugin_api import check_params, declared_featurizer, declared_params

if TYPE_CHECKING:
    from mmfuse.build import Built
    from mmfuse.plugins import Plugins
    from mmfuse.run import RunDir
    from mmfuse.spec import Spec

log = logging.getLogger(__name__)

#: ``inputs.json``'s ``format``: raised when what is kept changes incompatibly.
FORMAT = 1
#: What a file given for a view is when it ends so: an array in the view's input space.
ARRAY_SUFFIXES = (".npy", ".npz")
RETRAIN = ("train it again (mmfuse train RUN/resolved_spec.yaml --out NEW_RUN, with the "
           "training data in place) to make a run folder that embeds on its own")


class StoredMatrix(MatrixData):
    """A matrix view as a run folder keeps it: shape, layout and scaling, no cells."""

    def __init__(self, shape: tuple[int, int], sparse: bool, zero_missing: bool,
                 center: np.ndarray | None = None, spread: np.ndarray | None = None):
        self.sparse = sparse
        self.zero_missing = zero_missing
        self.shape = tuple(shape)  # type: ignore[assignment]
        self.center, self.spread = center, spread

    def _no_cells(self, *args: Any, **kwargs: Any):
        raise DataError("a run folder keeps no training cells: this needs the run's training "
                        "data (the paths in its resolved_spec.yaml)")

    csr = csc = property(_no_cells)  # type: ignore[assignment]
    _read = _take = observed_mean = column_counts = sketch = has_nan = _no_cells


class StoredTensor(TensorData):
    """A tensor view as a run folder keeps it: shape and dtype, no tensors."""

    def __init__(self, shape: tuple[int, ...], dtype: str):
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.rows_of = None

    def take(self, idx: np.ndarray) -> np.ndarray:
        return StoredMatrix._no_cells(None)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- writing (training)


def _split_state(view: str, reader: str, state: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A featurizer's state as JSON values and arrays; a :class:`PluginError` names what
    cannot be kept (an object array, a value JSON cannot hold)."""
    values: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, value in state.items():
        where = f"reader {reader!r} (view {view!r}): its state {name!r}"
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufUS":
                raise PluginError(f"{where} is an array of {value.dtype} (dtype kind "
                                  f"{value.dtype.kind!r}): a run folder keeps arrays of "
                                  "numbers, bools or str only (a plugin bug)")
            arrays[name] = value
            continue
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise PluginError(f"{where} is neither a numpy array nor a JSON value "
                              f"({describe(exc)}): a run folder cannot keep it (a plugin bug)"
                              ) from exc
        values[name] = value
    return values, arrays


def describe_inputs(spec: Spec, data: Data, plugins: Plugins
                    ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """``inputs.json``'s content and each view's arrays (``inputs/<view>.npz``)."""
    views: dict[str, Any] = {}
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for name, store in data.views.items():
        v = spec.views[name]
        scaled = getattr(store, "center", None) is not None  # `scale: auto` resolved
        entry: dict[str, Any] = {"shape": list(store.shape), "missing": v.missing,
                                 "scale": "standard" if scaled else "none"}
        own: dict[str, np.ndarray] = {}
        if isinstance(store, MatrixData):
            entry.update(kind="matrix", sparse=bool(store.sparse),
                         zero_missing=bool(store.zero_missing))
            if store.center is not None and store.spread is not None:
                own["scale.center"] = np.asarray(store.center, dtype=np.float32)
                own["scale.spread"] = np.asarray(store.spread, dtype=np.float32)
        else:
            entry.update(kind="tensor", dtype=str(store.dtype))
        reader = v.source.reader
        state = data.states.get(name)
        featurize = (declared_featurizer(plugins.readers.get(reader))
                     if reader in plugins.readers else None)
        if featurize is not None or state is not None:
            values, state_arrays = _split_state(name, reader, state or {})
            entry["featurizer"] = {
                "reader": reader, "plugin": plugins.readers.entries[reader].plugin
                if reader in plugins.readers else None,
                "state": values, "arrays": sorted(state_arrays)}
            own.update({f"featurizer.{k}": a for k, a in state_arrays.items()})
        if own:
            entry["arrays"] = f"inputs/{name}.npz"
            arrays[name] = own
        views[name] = entry
    return {"format": FORMAT, "entities": dict(data.sizes), "views": views}, arrays


# ---------------------------------------------------------------------- reading (embedding)


def stored_data(run: RunDir, spec: Spec, inputs: Mapping[str, Any]) -> Data:
    """The run's data as its folder keeps it (no cells); ids from its embeddings' ids files
    (``0 … n-1`` for an entity the run wrote no embeddings of)."""
    if inputs.get("format") != FORMAT:
        raise MmfuseError(f"{run.inputs_file} has format {inputs.get('format')!r}; this mmfuse "
                          f"reads format {FORMAT}: use the mmfuse that made the run, or "
                          f"{RETRAIN}")
    stored = inputs.get("views", {})
    missing = sorted(set(spec.views) - set(stored))
    if missing:
        raise MmfuseError(f"{run.inputs_file} describes no view {', '.join(map(repr, missing))} "
                          f"of the run's resolved_spec.yaml (the files do not belong together): "
                          f"{RETRAIN}")
    views: dict[str, MatrixData | TensorData] = {}
    states: dict[str, dict[str, Any]] = {}
    for name in spec.views:
        entry = stored[name]
        own = run.read_input_arrays(name) if entry.get("arrays") else {}
        if entry["kind"] == "tensor":
            views[name] = StoredTensor(tuple(entry["shape"]), entry.get("dtype", "float32"))
        else:
            views[name] = StoredMatrix(tuple(entry["shape"]), entry["sparse"],
                                       entry.get("zero_missing", False),
                                       own.get("scale.center"), own.get("scale.spread"))
        feat = entry.get("featurizer")
        if feat is not None:
            states[name] = {**feat.get("state", {}),
                            **{k.removeprefix("featurizer."): a for k, a in own.items()
                               if k.startswith("featurizer.")}}
    sizes = {e: int(n) for e, n in inputs["entities"].items()}
    ids = {}
    for entity, n in sizes.items():
        file = run.embeddings_dir / f"{entity}.ids.txt"
        ids[entity] = (file.read_text(encoding="utf-8").splitlines() if file.is_file()
                       else [str(i) for i in range(n)])
    return Data(sizes=sizes, ids=ids, views=views, states=states)


def build_stored(spec: Spec, plugins: Plugins, data: Data) -> Built:
    """The run's model (on the CPU, seeded, untrained) built on its stored data: as
    :func:`mmfuse.build.build` builds it, without reading a training file, and without the
    batcher (``batcher`` is None: it walks training cells)."""
    import torch

    from mmfuse.build import Built, make_model
    from mmfuse.graph import build_graph

    graph = build_graph(spec, plugins)
    plan, model = make_model(spec, plugins, graph, data, start_intercepts=False)
    return Built(spec, graph, data, plan, model, None, torch.device("cpu"))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- new instances


def load_new_data(view: str, path: Path) -> Any:
    """The new instances of ``--data VIEW=FILE``: a ``.npy`` array (NaN cells missing) or a
    scipy sparse ``.npz`` (cells not stored are missing) of numbers; a :class:`DataError`
    names the file and what is wrong (never unpickles anything)."""
    where = f"--data {view}={path}"
    if path.is_dir():
        raise DataError(f"{where}: is a folder; give a .npy or .npz file")
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    try:
        with path.open("rb") as fh:
            start = fh.read(6)
    except OSError as exc:
        raise DataError(f"{where}: cannot read it: {describe(exc)}") from exc
    if path.suffix == ".npz" and not zipfile.is_zipfile(path):
        raise DataError(f"{where}: not an .npz (zip) archive: damaged, truncated or another "
                        "format; write it with scipy.sparse.save_npz")
    if path.suffix != ".npz" and start != b"\x93NUMPY":
        why = "empty" if not start else "it does not start as one"
        raise DataError(f"{where}: not a .npy file ({why}); write it with np.save (or give "
                        "a scipy sparse .npz)")
    try:
        array = sp.load_npz(path) if path.suffix == ".npz" else np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DataError(f"{where}: holds Python objects (a pickled array); mmfuse never "
                            "unpickles data: save a numeric array") from exc
        raise DataError(f"{where}: cannot read it: {describe(exc)}") from exc
    except Exception as exc:  # numpy's and scipy's errors on a damaged or foreign file
        raise DataError(f"{where}: cannot read it: {describe(exc)}; give a .npy array "
                        "(np.save) or a scipy sparse .npz (scipy.sparse.save_npz)") from exc
    if not (isinstance(array, np.ndarray) or sp.issparse(array)):
        array.close()
        raise DataError(f"{where}: a numpy .npz archive; give a .npy array or a scipy "
                        "sparse .npz")
    problem = dtype_problem(array.dtype)
    if problem is not None:
        raise DataError(f"{where}: {problem}")
    values = array.data if sp.issparse(array) else array
    if values.dtype.kind == "f" and np.isinf(values).any():
        raise DataError(f"{where}: {int(np.isinf(values).sum()):,} infinite cells; replace "
                        "them (by NaN where they mean 'unknown': a NaN cell is missing)")
    return array


def read_new_ids(path: Path) -> list[str]:
    """The ids of new instances (``--ids FILE``: one a line, unique)."""
    try:
        return read_ids(path, f"--ids {path}")
    except (ValueError, OSError) as exc:
        raise DataError(str(exc) if isinstance(exc, ValueError)
                        else f"--ids {path}: cannot read it: {describe(exc)}") from exc


def featurizes(spec: Spec, plugins: Plugins, view: str) -> bool:
    """Whether the view's reader declares how to featurize new raw input."""
    reader = spec.views[view].source.reader
    return reader in plugins.readers and declared_featurizer(
        plugins.readers.get(reader)) is not None


def featurize_new(built: Built, plugins: Plugins, view: str, path: Path,
                  ids: list[str] | None = None) -> np.ndarray:
    """New raw input of ``view`` (a file of the kind its reader reads) featurized with the
    state its reader learnt in training: one row per new instance, in the view's input
    space."""
    from mmfuse.plugin_api import ReadContext, ViewArray

    spec = built.spec
    v = spec.views[view]
    reader = v.source.reader
    where = f"--data {view}={path}"
    featurize = declared_featurizer(plugins.readers.get(reader))
    if featurize is None:
        raise DataError(f"{where}: reader {reader!r} of view {view!r} featurizes no new raw "
                        "input: give the new instances as a .npy array (or scipy sparse .npz) "
                        "in the view's input space")
    if view not in built.data.states:
        raise DataError(f"{where}: the run keeps no {reader} state for view {view!r} (the "
                        "vocabulary, vectors, ... that featurize new input as in training): "
                        "it was made by an older mmfuse, or by a version of the reader that "
                        f"featurized no new input; {RETRAIN}")
    if not path.exists():
        raise DataError(f"{where}: file not found")
    ctx = ReadContext(view=view, row_ids=list(ids) if ids is not None else None, col_ids=None,
                      spec_dir=Path.cwd())
    params = dict(v.source.params)
    model = declared_params(plugins.readers.get(reader))
    if model is not None:  # every default filled in, as the reader received them
        params, _ = check_params(model, params)
    try:
        out = featurize(path, params, built.data.states[view], ctx)
    except MmfuseError:
        raise
    except Exception as exc:  # plugin code: its message, naming the file
        raise DataError(f"{where}: reader {reader!r} cannot featurize it: {describe(exc)}"
                        ) from exc
    array = out.data if isinstance(out, ViewArray) else out
    if not (isinstance(array, np.ndarray) or sp.issparse(array)):
        raise DataError(f"{where}: reader {reader!r} featurized it into "
                        f"{type(array).__name__}, not an array (a plugin bug)")
    if v.features and array.ndim == 1:
        array = array.reshape(-1, 1)
    return array

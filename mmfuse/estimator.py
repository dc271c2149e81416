"""``FusionEmbedder``: mmfuse as a scikit-learn transformer.

    from mmfuse import FusionEmbedder
    pipe = Pipeline([("fuse", FusionEmbedder(views={"text": range(100), "image": range(100,
                     12388)}, spec={"views": {"image": {"tensor": {"shape": [3, 64, 64]}}}})),
                     ("clf", LogisticRegression())])

``X`` is a mapping view → data (arrays, scipy sparse matrices, DataFrames), a MuData
(modalities → views, observations → the instances), or one 2-D array / DataFrame whose column
groups are the views (what scikit-learn's splitters can index).  Each view becomes a view of
one entity whose instances are the rows of ``X``: a 2-D view a matrix view with a column entity
of its own (``{view}_columns``), a 1-D one a feature, an n-D one a tensor view.  ``spec`` adds
anything else a spec says (encoders, likelihoods, weights, the preset, training); the data
comes from ``X``.  ``transform`` of new rows goes through the trained encoders
(:func:`mmfuse.api.embed_new`).
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import yaml
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils import check_random_state
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from mmfuse.errors import DataError
from mmfuse.obsm import KEY
from mmfuse.plugin_api import ViewArray
from mmfuse.plugins import Register, Registry, get_plugins
from mmfuse.spec import Spec

log = logging.getLogger(__name__)

#: The reader through which the estimator hands ``X`` to mmfuse (never registered globally).
READER = "fusion_embedder"
#: Spec sections an override (``train__batch_size=32``) may set.
SECTIONS = ("name", "model", "train", "views", "entities")
ENTITY = "sample"
LEARNT = ("model_", "spec_", "history_", "embedding_", "ids_", "views_", "entity_")


class FusionEmbedder(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Learn one vector per row of ``X`` from all of its views (an mmfuse model).

    Parameters
    ----------
    views : None, a mapping or a list
        For a 2-D ``X``: the column groups, ``{view: columns}`` where columns are positions
        (a list, ``range`` or slice), column names, or one name prefix (a string; DataFrame);
        None: one view ``X`` of every column.  For a mapping or MuData ``X``: None (every
        view) or the names of the views to use.
    spec : None, a mapping or a path to a YAML file
        A partial spec: ``model``, ``train``, per-view settings under ``views`` (``tensor:
        {shape}`` reshapes a 2-D group into a tensor view, ``features: true``, encoders,
        ``likelihood``, ``weight``, ...) and ``entities``.  No ``source``: ``X`` is the data.
    dim, epochs : int or None
        ``model.dim`` and ``train.epochs`` (None: the spec's, else mmfuse's default).
    random_state : int, RandomState or None
        The spec's ``seed`` (an int is used as it is).
    **overrides
        Any spec field, ``section__field__...=value`` (``train__batch_size=32``,
        ``model__preset="mmeda1"``, ``views__text__weight=10``); settable by ``set_params``
        and grid searches like the named parameters.

    Attributes
    ----------
    spec_ : Spec
        The resolved spec that was trained.
    embedding_ : ndarray (n_samples, dim)
        The training rows' embeddings.
    ids_ : list of str
        The training rows' ids (DataFrame index, MuData obs_names, else positions).
    history_ : list of dict
        Per-epoch mean of every loss term.
    model_ : mmfuse.build.Built
        The trained model (on the CPU), what ``transform`` encodes new rows with.
    views_ : dict
        Each view's columns of a 2-D ``X`` (positions), or its trailing shape.
    """

    def __init__(self, views: Any = None, spec: Any = None, dim: int | None = None,
                 epochs: int | None = None, random_state: Any = None, **overrides: Any):
        self.views = views
        self.spec = spec
        self.dim = dim
        self.epochs = epochs
        self.random_state = random_state
        self._overrides = dict(overrides)

    # ------------------------------------------------------------------ parameters

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {**super().get_params(deep=deep), **self._overrides}

    def set_params(self, **params: Any) -> FusionEmbedder:
        """Set named parameters and spec overrides (``train__batch_size=32``); overrides
        are checked by ``fit``, as scikit-learn checks every parameter."""
        own = set(self._get_param_names())
        for key, value in params.items():
            if key in own:
                setattr(self, key, value)
            else:
                self._overrides[key] = value
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN cells are missing, as in every mmfuse view
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # ------------------------------------------------------------------ fit / transform

    def fit(self, X: Any, y: Any = None) -> FusionEmbedder:
        """Train an mmfuse model on ``X`` (``y`` is ignored)."""
        self._fit(X)
        return self

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> Any:
        """``fit(X)``, then the training rows' embeddings (``embedding_``)."""
        index = self._fit(X)
        return self._output(self.embedding_, index)

    def transform(self, X: Any) -> Any:
        """Embed the rows of ``X`` (new or not) through the trained encoders."""
        check_is_fitted(self, "model_")
        arrays, index = self._views_of(X, reset=False)
        return self._output(self._embed(arrays), index)

    def write_obsm(self, mdata: Any, key: str = KEY) -> Any:
        """Embed a MuData's observations (``transform``) into ``mdata.obsm[key]``; returns
        ``mdata``.  After ``fit(mdata)``: ``fuse.write_obsm(mdata)``, as scanpy's tools
        write ``X_pca``."""
        if not _is_mudata(mdata):
            raise ValueError(f"write_obsm takes a MuData; got {type(mdata).__name__}")
        check_is_fitted(self, "model_")
        arrays, _ = self._views_of(mdata, reset=False)
        mdata.obsm[key] = self._embed(arrays)
        return mdata

    def _embed(self, arrays: Mapping[str, Any]) -> np.ndarray:
        from mmfuse.api import embed_new

        arrays = {v: a.reshape(-1, 1) if a.ndim == 1 else a for v, a in arrays.items()}
        return embed_new(self.model_, self.entity_, arrays)

    @property
    def _n_features_out(self) -> int:
        return self.spec_.model.dim

    def _output(self, z: np.ndarray, index: Any) -> Any:
        """``z``, or a DataFrame indexed by the rows' ids under ``set_output(transform=
        "pandas")``."""
        if _get_output_config("transform", self)["dense"] != "pandas":
            return z
        import pandas as pd

        index = pd.Index(range(len(z)) if index is None else index, name=self.entity_)
        return pd.DataFrame(z, index=index, columns=self.get_feature_names_out())

    # ------------------------------------------------------------------ internals

    def _fit(self, X: Any) -> Any:
        from mmfuse.api import train

        for key in (*LEARNT, "n_features_in_", "feature_names_in_"):  # a refit starts afresh
            self.__dict__.pop(key, None)
        base = self._base_spec()
        self.entity_ = _entity_of(base)
        arrays, index = self._views_of(X, reset=True, base=base)
        ids = None if index is None else [str(i) for i in index]
        spec = Spec.from_dict(self._spec_dict(base, arrays), source="FusionEmbedder")
        plugins = _with_reader(get_plugins(), arrays, ids)
        with tempfile.TemporaryDirectory(prefix="mmfuse-fit-") as tmp:
            result = train(spec, Path(tmp) / "run", plugins=plugins, evaluate=False)
        built = result.built
        built.model.cpu().eval()  # embed_new encodes on the CPU
        self.model_ = replace(built, device=_cpu())
        self.spec_ = spec
        self.history_ = list(result.trainer.history)
        # the training rows through transform's path, so that fit_transform is transform
        # wherever training ran (on the CPU these are the run's own embeddings, to the bit)
        self.embedding_ = self._embed(arrays)
        self.ids_ = ids if ids is not None else [str(i) for i in range(len(self.embedding_))]
        return index

    def _base_spec(self) -> dict[str, Any]:
        """The ``spec`` parameter with the overrides and named parameters applied."""
        if self.spec is None:
            base: dict[str, Any] = {}
        elif isinstance(self.spec, Mapping):
            base = copy.deepcopy(dict(self.spec))
        elif isinstance(self.spec, (str, Path)):
            base = yaml.safe_load(Path(self.spec).read_text(encoding="utf-8")) or {}
            if not isinstance(base, dict):
                raise ValueError(f"spec {self.spec}: a spec file holds a mapping")
        else:
            raise TypeError(f"spec must be a mapping or a YAML file; got "
                            f"{type(self.spec).__name__}")
        for key in ("seed", "dataset", "evaluate", "base_dir"):
            if key in base:
                raise ValueError(f"spec: `{key}` is not for FusionEmbedder"
                                 + (" (use random_state)" if key == "seed" else ""))
        for key, value in self._overrides.items():
            *path, last = key.split("__")
            if not all(path + [last]) or key.split("__")[0] not in SECTIONS:
                raise ValueError(f"invalid parameter {key!r} for FusionEmbedder: use one of "
                                 f"{', '.join(self._get_param_names())}, or a spec field "
                                 f"as SECTION__FIELD (sections: {', '.join(SECTIONS)})")
            node = base
            for part in path:
                node = node.setdefault(part, {})
                if not isinstance(node, dict):
                    raise ValueError(f"override {key!r}: {part!r} is not a mapping")
            node[last] = copy.deepcopy(value)
        if self.dim is not None:
            base.setdefault("model", {})["dim"] = self.dim
        if self.epochs is not None:
            base.setdefault("train", {})["epochs"] = self.epochs
        rs = self.random_state
        base["seed"] = int(rs) if isinstance(rs, (int, np.integer)) else int(
            check_random_state(rs).randint(np.iinfo(np.int32).max))
        return base

    def _spec_dict(self, base: dict[str, Any], arrays: Mapping[str, Any]) -> dict[str, Any]:
        """The spec: ``base`` with one entity, and a view reading ``X`` for each view."""
        settings = base.get("views") or {}
        unknown = sorted(set(settings) - set(arrays))
        if unknown:
            raise ValueError(f"spec: views {unknown} have no data in X; X has "
                             f"{sorted(arrays)}")
        entities = {self.entity_: {}, **(base.get("entities") or {})}
        views = {}
        for name, data in arrays.items():
            view = copy.deepcopy(settings.get(name) or {})
            if "source" in view:
                raise ValueError(f"spec: views.{name}.source: the data comes from X")
            view.setdefault("rows", self.entity_)
            matrix = not (view.get("features") or "tensor" in view)
            if data.ndim > 2 and "tensor" not in view:
                view["tensor"] = {"shape": list(data.shape[1:])}
            elif data.ndim == 2 and matrix:
                view.setdefault("cols", f"{name}_columns")
            if view.get("cols"):
                entities.setdefault(view["cols"], {})
            view["source"] = {"reader": READER}
            views[name] = view
        return {**base, "name": base.get("name", "fusion_embedder"), "entities": entities,
                "views": views}

    def _views_of(self, X: Any, reset: bool, base: Mapping[str, Any] | None = None
                  ) -> tuple[dict[str, Any], Any]:
        """The views of ``X`` (view → array) and the rows' index (None: positions)."""
        if _is_mudata(X):
            arrays, index = _mudata_views(X)
            return self._chosen(arrays, reset), index
        if isinstance(X, Mapping) and not sp.issparse(X):  # (dok_matrix is a dict)
            arrays, index = _mapping_views(X)
            return self._chosen(arrays, reset), index
        return self._column_groups(X, reset, base)

    def _chosen(self, arrays: dict[str, Any], reset: bool) -> dict[str, Any]:
        if isinstance(self.views, Mapping):
            raise ValueError("views: a mapping of column groups is for a 2-D X; X is a "
                             "mapping (or MuData) of views already: give view names or None")
        if not reset:
            names = list(self.views_)  # what the model was fitted on
        else:
            names = list(arrays) if self.views is None else [str(v) for v in self.views]
        missing = sorted(set(names) - set(arrays))
        if missing:
            raise ValueError(f"views {missing} are not in X; it has {sorted(arrays)}")
        chosen = {n: arrays[n] for n in names}
        if reset:
            self.views_ = {n: tuple(a.shape[1:]) for n, a in chosen.items()}
        else:
            _check_shapes(chosen, self.views_)
        return chosen

    def _column_groups(self, X: Any, reset: bool, base: Mapping[str, Any] | None
                       ) -> tuple[dict[str, Any], Any]:
        index = getattr(X, "index", None) if hasattr(X, "columns") else None
        data = validate_data(self, X, reset=reset, accept_sparse=["csr", "csc"],
                             ensure_all_finite="allow-nan", dtype="numeric")
        if reset:
            names = getattr(self, "feature_names_in_", None)
            groups = {"X": np.arange(data.shape[1])} if self.views is None else {
                str(v): _positions(sel, data.shape[1], names, v)
                for v, sel in _as_mapping(self.views).items()}
            _check_partition(groups, data.shape[1], names)
            shapes = {v: s["tensor"]["shape"] for v, s in ((base or {}).get("views") or {})
                      .items() if isinstance(s, Mapping) and "tensor" in s}
            self.views_ = groups
            self._tensor_shapes = shapes
        arrays = {}
        for view, cols in self.views_.items():
            part = data[:, cols]
            shape = self._tensor_shapes.get(view)
            if shape is not None:
                if sp.issparse(part):
                    part = part.toarray()
                if int(np.prod(shape)) != part.shape[1]:
                    raise ValueError(f"view {view!r}: {part.shape[1]} columns cannot be a "
                                     f"tensor of shape {list(shape)}")
                part = part.reshape(len(part), *shape)
            arrays[view] = part
        return arrays, index


# --------------------------------------------------------------------------- helpers


def _cpu():
    import torch

    return torch.device("cpu")


def _entity_of(base: Mapping[str, Any]) -> str:
    """The entity of ``X``'s rows: the one the spec's views name as ``rows``, else
    ``sample``."""
    rows = {s["rows"] for s in (base.get("views") or {}).values()
            if isinstance(s, Mapping) and "rows" in s}
    if len(rows) > 1:
        raise ValueError(f"spec: every view's rows are X's rows, one entity; got {sorted(rows)}")
    return rows.pop() if rows else ENTITY


def _with_reader(plugins, arrays: Mapping[str, Any], ids: list[str] | None):
    """The installed plugins plus a reader that hands each view its array from ``X``."""

    def read(path, params, ctx) -> ViewArray:
        data = arrays[ctx.view]
        if sp.issparse(data):  # mmfuse sorts and scales a sparse matrix's cells in place
            data = sp.csr_array(data, dtype=np.float32, copy=True)
        return ViewArray(data=data, row_ids=ids, info={"source": "FusionEmbedder X"})

    readers = Registry[Any]("readers")
    readers.entries = dict(plugins.readers.entries)
    Register(readers, "mmfuse.estimator").add(READER, read)
    return replace(plugins, readers=readers)


def _is_mudata(X: Any) -> bool:
    return hasattr(X, "mod") and hasattr(X, "obs_names") and not isinstance(X, Mapping)


def _as_array(value: Any, where: str) -> Any:
    if sp.issparse(value):
        return check_array(value, accept_sparse=["csr", "csc", "coo"],
                           ensure_all_finite="allow-nan", dtype="numeric")
    return check_array(value, ensure_2d=False, allow_nd=True, ensure_all_finite="allow-nan",
                       dtype="numeric", input_name=where)


def _mapping_views(X: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    if not X:
        raise ValueError("X is an empty mapping: give at least one view")
    index = None
    arrays = {}
    for name, value in X.items():
        if hasattr(value, "index") and hasattr(value, "columns"):  # a DataFrame
            if index is not None and not value.index.equals(index):
                raise ValueError(f"X[{name!r}]: its index differs from the other views'; "
                                 "align them (the rows of every view are the same instances)")
            index = value.index
        arrays[str(name)] = _as_array(value, f"X[{name!r}]")
    sizes = {n: a.shape[0] for n, a in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"the views of X have different numbers of rows: {sizes}")
    return arrays, index


def _mudata_views(mdata: Any) -> tuple[dict[str, Any], Any]:
    """Each modality's X, its rows the MuData's observations in their order; a modality
    that lacks some has rows with no observed cell for them (sparse: none stored; dense:
    NaN), which mmfuse trains and embeds from their other views."""
    import pandas as pd

    index = pd.Index(mdata.obs_names)
    arrays = {}
    for name, adata in mdata.mod.items():
        if adata.X is None:
            raise ValueError(f"MuData modality {name!r} has no X")
        data = _as_array(adata.X, f"modality {name!r}")
        at = index.get_indexer(pd.Index(adata.obs_names))
        if (at < 0).any():
            raise ValueError(f"MuData modality {name!r} has observations that are not the "
                             "MuData's; call mdata.update() after changing a modality")
        if len(at) == len(index) and (at == np.arange(len(at))).all():
            arrays[str(name)] = data
        elif sp.issparse(data):
            coo = sp.coo_array(data)
            arrays[str(name)] = sp.csr_array((coo.data, (at[coo.row], coo.col)),
                                             shape=(len(index), data.shape[1]))
        else:
            out = np.full((len(index), *data.shape[1:]), np.nan, dtype=np.float32)
            out[at] = data
            arrays[str(name)] = out
    return arrays, index


def _as_mapping(views: Any) -> Mapping[Any, Any]:
    if not isinstance(views, Mapping):
        raise ValueError("views: for a 2-D X, a mapping view → columns (positions, names "
                         "or a name prefix)")
    return views


def _positions(sel: Any, width: int, names: np.ndarray | None, view: Any) -> np.ndarray:
    """Column positions of one view's selector."""
    if isinstance(sel, str):
        if names is None:
            raise ValueError(f"views[{view!r}] = {sel!r}: a name prefix needs a DataFrame X")
        cols = np.flatnonzero([str(n).startswith(sel) for n in names])
        if not len(cols):
            raise ValueError(f"views[{view!r}]: no column name starts with {sel!r}")
        return cols
    if isinstance(sel, slice):
        return np.arange(width)[sel]
    items = list(sel)
    if items and all(isinstance(i, str) for i in items):
        if names is None:
            raise ValueError(f"views[{view!r}]: column names need a DataFrame X")
        lookup = {str(n): i for i, n in enumerate(names)}
        unknown = [i for i in items if i not in lookup]
        if unknown:
            raise ValueError(f"views[{view!r}]: no column {unknown[0]!r} in X")
        return np.array([lookup[i] for i in items])
    cols = np.asarray(items, dtype=np.int64)
    if cols.ndim != 1 or not len(cols) or cols.min() < 0 or cols.max() >= width:
        raise ValueError(f"views[{view!r}]: column positions must lie in [0, {width})")
    return cols


def _check_partition(groups: Mapping[str, np.ndarray], width: int,
                     names: np.ndarray | None) -> None:
    """Every column in one view, none in two."""
    owner: dict[int, str] = {}
    for view, cols in groups.items():
        for c in cols.tolist():
            if c in owner:
                label = names[c] if names is not None else c
                raise ValueError(f"column {label!r} is in views {owner[c]!r} and {view!r}")
            owner[c] = view
    left = sorted(set(range(width)) - set(owner))
    if left:
        labels = [names[c] if names is not None else c for c in left[:5]]
        raise ValueError(f"{len(left)} columns of X are in no view (first: {labels}); drop "
                         "them or add them to `views`")


def _check_shapes(arrays: Mapping[str, Any], fitted: Mapping[str, tuple[int, ...]]) -> None:
    for name, array in arrays.items():
        if tuple(array.shape[1:]) != tuple(fitted[name]):
            raise DataError(f"view {name!r}: X has rows of shape {list(array.shape[1:])}; "
                            f"the model was fitted on {list(fitted[name])}")

"""AnnData (``.h5ad``) and MuData (``.h5mu``) files: ``anndata`` reads a file's ``X`` (or a
layer, or an ``obsm`` matrix), ``mudata`` one modality of a MuData file.  Rows are the
observations (``obs_names``), columns the variables (``var_names``).  A MuData's modalities
may hold some of its observations each: the entity's instances are then the MuData's
observations, and those a modality lacks have no cell of that view (trained and embedded from
their other views).  Needs the optional packages (``pip install 'mmfuse[anndata]'``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import model_validator

from mmfuse.plugin_api import ReadContext, ReaderParams, ViewArray, reader_params

from .arrays import _require
from .ids import order_by_ids, positions_of

log = logging.getLogger(__name__)


class AnndataParams(ReaderParams):
    layer: str | None = None  # one of the file's layers (default: X)
    obsm: str | None = None  # an obsm matrix (its columns are no variables)

    @model_validator(mode="after")
    def _one_matrix(self):
        if self.layer is not None and self.obsm is not None:
            raise ValueError("give `layer` or `obsm`, not both")
        return self


class MudataParams(AnndataParams):
    modality: str | None = None  # default: the view's name


def _package(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise ValueError(f"reading this file needs the {name} package: "
                         "pip install 'mmfuse[anndata]'") from None


def from_anndata(adata: Any, params: Mapping[str, Any], ctx: ReadContext, where: str,
                 partial: bool = False) -> ViewArray:
    """An AnnData's ``X`` (``layer``: one of its layers; ``obsm``: an ``obsm`` matrix, whose
    columns are no variables) with its rows, and columns, in the order of the entities'
    ids (every id must be there once; an entity with no ids file takes them from here).
    A sparse matrix's cells not stored are missing, as for ``npz``.  ``partial``: the
    observations may be some of the row entity's instances; the others get rows with no
    observed cell."""
    if params.get("layer") is not None and params.get("obsm") is not None:
        raise ValueError(f"{where}: give `layer` or `obsm`, not both")
    col_ids: list[str] | None = None
    if params.get("obsm") is not None:
        if params["obsm"] not in adata.obsm:
            raise ValueError(f"{where}: no obsm {params['obsm']!r}; it has "
                             f"{', '.join(adata.obsm.keys()) or '(none)'}")
        data = adata.obsm[params["obsm"]]
    elif params.get("layer") is not None:
        if params["layer"] not in adata.layers:
            raise ValueError(f"{where}: no layer {params['layer']!r}; it has "
                             f"{', '.join(adata.layers.keys()) or '(none)'}")
        data, col_ids = adata.layers[params["layer"]], [str(v) for v in adata.var_names]
    else:
        if adata.X is None:
            raise ValueError(f"{where}: X is empty; name a `layer` or an `obsm` matrix")
        data, col_ids = adata.X, [str(v) for v in adata.var_names]
    data = sp.csr_array(data) if sp.issparse(data) else np.asarray(data)
    row_ids = [str(o) for o in adata.obs_names]
    mask = None
    if partial and ctx.row_ids is not None and len(row_ids) < len(ctx.row_ids):
        data, mask = _spread(data, positions_of(row_ids, ctx.row_ids, where, "obs"),
                             len(ctx.row_ids))
        log.info("%s holds %s of the %s observations; the others are trained and embedded "
                 "from their other views", where, f"{len(row_ids):,}", f"{len(ctx.row_ids):,}")
        row_ids = list(ctx.row_ids)  # placed in the entity's order already
    else:
        rows = order_by_ids(row_ids, ctx.row_ids, where, "obs")
        if rows is not None:
            data, row_ids = data[rows], list(ctx.row_ids)
    if col_ids is not None and ctx.col_ids is not None:
        cols = order_by_ids(col_ids, ctx.col_ids, where, "var")
        data, col_ids = data[:, cols], list(ctx.col_ids)
        mask = None if mask is None else mask[:, cols]
    return ViewArray(data=data, mask=mask, row_ids=row_ids, col_ids=col_ids)


def _spread(data: Any, at: np.ndarray, n: int) -> tuple[Any, np.ndarray | None]:
    """``data``'s rows at positions ``at`` of ``n`` rows; the other rows have no observed
    cell (sparse: none stored; dense: masked)."""
    if sp.issparse(data):
        coo = sp.coo_array(data)
        return sp.csr_array((coo.data, (at[coo.row], coo.col)), shape=(n, data.shape[1])), None
    out = np.zeros((n, *data.shape[1:]), dtype=data.dtype)
    out[at] = data
    mask = np.zeros(out.shape, dtype=bool)
    mask[at] = True
    return out, mask


def _observations(fh: Any) -> list[str]:
    """A MuData file's observations (the union of its modalities'), from its open h5py
    file."""
    return [str(o) for o in _package("anndata").io.read_elem(fh["obs"]).index]


def _chosen(params: Mapping[str, Any]) -> dict[str, str]:
    return {k: params[k] for k in ("layer", "obsm") if params.get(k) is not None}


@reader_params(AnndataParams)
def read_anndata(path: Path | None, params: Mapping[str, Any], ctx: ReadContext
                 ) -> ViewArray:
    """An ``.h5ad`` file.  params: ``layer`` or ``obsm`` (default: ``X``)."""
    path = _require(path)
    adata = _package("anndata").read_h5ad(path)
    out = from_anndata(adata, params, ctx, path.name)
    out.info = {"file": str(path), **_chosen(params)}
    return out


@reader_params(MudataParams)
def read_mudata(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One modality of an ``.h5mu`` file: its observations are the view's rows (the
    entity), its variables the columns.  An entity with no ids file takes the MuData's
    observations; a modality may hold some of them.  params: ``modality`` (default: the
    view's name), ``layer`` or ``obsm`` (default: ``X``)."""
    path = _require(path)
    mudata = _package("mudata")
    modality = params["modality"] or ctx.view
    with _package("h5py").File(path, "r") as fh:
        known = sorted(fh["mod"]) if "mod" in fh else []
        if modality in known and ctx.row_ids is None:
            ctx = replace(ctx, row_ids=_observations(fh))
    if modality not in known:
        raise ValueError(f"{path.name}: no modality {modality!r}; it has "
                         f"{', '.join(known) or '(none)'} (params.modality names one)")
    adata = mudata.read_h5ad(path, modality)
    out = from_anndata(adata, params, ctx, f"{path.name} modality {modality!r}", partial=True)
    out.info = {"file": str(path), "modality": modality, **_chosen(params)}
    return out

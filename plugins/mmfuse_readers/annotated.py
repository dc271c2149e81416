"""AnnData (``.h5ad``) and MuData (``.h5mu``) files: ``anndata`` reads a file's ``X`` (or a
layer, or an ``obsm`` matrix), ``mudata`` one modality of a MuData file.  Rows are the
observations (``obs_names``), columns the variables (``var_names``).  Needs the optional
packages (``pip install 'mmfuse[anndata]'``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import model_validator

from mmfuse.plugin_api import ReadContext, ReaderParams, ViewArray, reader_params

from .arrays import _require
from .ids import order_by_ids


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


def from_anndata(adata: Any, params: Mapping[str, Any], ctx: ReadContext, where: str
                 ) -> ViewArray:
    """An AnnData's ``X`` (``layer``: one of its layers; ``obsm``: an ``obsm`` matrix, whose
    columns are no variables) with its rows, and columns, in the order of the entities'
    ids (every id must be there once; an entity with no ids file takes them from here).
    A sparse matrix's cells not stored are missing, as for ``npz``."""
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
    rows = order_by_ids(row_ids, ctx.row_ids, where, "obs")
    if rows is not None:
        data, row_ids = data[rows], list(ctx.row_ids)
    if col_ids is not None and ctx.col_ids is not None:
        cols = order_by_ids(col_ids, ctx.col_ids, where, "var")
        data, col_ids = data[:, cols], list(ctx.col_ids)
    return ViewArray(data=data, row_ids=row_ids, col_ids=col_ids)


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
    entity), its variables the columns.  params: ``modality`` (default: the view's name),
    ``layer`` or ``obsm`` (default: ``X``)."""
    path = _require(path)
    mudata = _package("mudata")
    modality = params["modality"] or ctx.view
    with _package("h5py").File(path, "r") as fh:
        known = sorted(fh["mod"]) if "mod" in fh else []
    if modality not in known:
        raise ValueError(f"{path.name}: no modality {modality!r}; it has "
                         f"{', '.join(known) or '(none)'} (params.modality names one)")
    adata = mudata.read_h5ad(path, modality)
    out = from_anndata(adata, params, ctx, f"{path.name} modality {modality!r}")
    out.info = {"file": str(path), "modality": modality, **_chosen(params)}
    return out

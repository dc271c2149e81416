"""Tables (CSV, TSV, Parquet, Feather) read with pandas/pyarrow: ``table`` (one row per
instance: an id column and value columns) and ``triplets`` (long format: row id, column id,
value → a scipy sparse matrix)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from mmfuse.plugin_api import ReadContext, ReaderParams, ViewArray, reader_params

from .arrays import _require
from .ids import codes, order_by_ids

Column = str | int  # a column by name or position


class TableParams(ReaderParams):
    id: Column | None = 0  # the id column (null: rows in the entity's order)
    columns: Annotated[list[Column], Field(min_length=1)] | None = None  # default: all others


class TripletParams(ReaderParams):
    row: Column = 0
    col: Column = 1
    value: Column | None = 2  # null: every listed pair is a 1

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet",
           ".pq": "parquet", ".feather": "feather", ".arrow": "feather"}


def read_frame(path: Path, ids: list[str | int]) -> pd.DataFrame:
    """The whole file as a DataFrame, by suffix; the columns named (or numbered) in ``ids``
    are read as text, so that ids such as ``007`` keep their leading zeros."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path.name}: unknown table format {path.suffix!r}; known: "
                         f"{', '.join(sorted(FORMATS))}")
    if kind in ("csv", "tsv"):
        sep = "," if kind == "csv" else "\t"
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        names = [header[i] if isinstance(i, int) and i < len(header) else i for i in ids]
        return pd.read_csv(path, sep=sep, dtype={n: str for n in names if n in header},
                           keep_default_na=True)
    try:
        return pd.read_parquet(path) if kind == "parquet" else pd.read_feather(path)
    except ImportError as exc:
        raise ValueError(f"{path.name}: reading {kind} files needs pyarrow "
                         "(pip install 'mmfuse[tables]')") from exc


def column(frame: pd.DataFrame, key: str | int, where: str, param: str) -> str:
    """The name of a column given by name or position (``params.{param}``)."""
    if isinstance(key, int) and not isinstance(key, bool):
        if not 0 <= key < frame.shape[1]:
            raise ValueError(f"{where}: params.{param} = {key}: the file has "
                             f"{frame.shape[1]} columns")
        return frame.columns[key]
    if key not in frame.columns:
        raise ValueError(f"{where}: params.{param}: no column {key!r}; it has "
                         f"{', '.join(map(str, frame.columns[:10]))}"
                         + (", ..." if frame.shape[1] > 10 else ""))
    return key


def numeric(frame: pd.DataFrame, where: str) -> np.ndarray:
    """The frame's values as float32 (missing values NaN); non-numeric columns are errors."""
    bad = [str(c) for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad:
        raise ValueError(f"{where}: value columns must be numeric; not numeric: "
                         f"{', '.join(bad[:5])}" + (", ..." if len(bad) > 5 else ""))
    return frame.to_numpy(dtype=np.float32, na_value=np.nan)


@reader_params(TableParams)
def read_table(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """One row per instance: an id column and value columns (empty cells are missing).

    params: ``id`` (the id column, by name or position; default the first; ``null``: no id
    column, the rows are the entity's instances in file order), ``columns`` (the value
    columns; default every other one).  Rows are put in the order of the row entity's ids
    (every id must appear once, and no other); a matrix view's columns likewise in the order
    of its column entity's ids, by column name.  An entity with no ids file takes them
    from here.
    """
    path = _require(path)
    id_key = params["id"]
    frame = read_frame(path, [] if id_key is None else [id_key])
    where = path.name
    row_ids = None
    if id_key is not None:
        name = column(frame, id_key, where, "id")
        row_ids = frame[name].astype(str).tolist()
        frame = frame.drop(columns=[name])
    if params["columns"] is not None:
        frame = frame[[column(frame, c, where, "columns") for c in params["columns"]]]
    if frame.shape[1] == 0:
        raise ValueError(f"{where}: no value columns")
    values = numeric(frame, where)
    col_ids = [str(c) for c in frame.columns]
    rows = None if row_ids is None else order_by_ids(row_ids, ctx.row_ids, where, "row")
    if rows is not None:
        values, row_ids = values[rows], list(ctx.row_ids)
    if ctx.col_ids is not None:
        cols = order_by_ids(col_ids, ctx.col_ids, where, "column")
        values, col_ids = values[:, cols], list(ctx.col_ids)
    return ViewArray(data=np.ascontiguousarray(values), row_ids=row_ids, col_ids=col_ids,
                     info={"file": str(path)})


@reader_params(TripletParams)
def read_triplets(path: Path | None, params: Mapping[str, Any], ctx: ReadContext
                  ) -> ViewArray:
    """Long format, one stored cell a line: row id, column id, value → a scipy sparse
    matrix (cells not listed are missing).

    params: ``row``, ``col``, ``value``: their columns, by name or position (default the
    first three; ``value: null``: every listed pair is a 1).  Ids are mapped to the
    entities' ids (an id the entity does not have is an error naming it); an entity with
    no ids file takes the distinct ids listed here, sorted.  A pair listed twice is an
    error.
    """
    path = _require(path)
    keys = {k: params[k] for k in ("row", "col", "value")}
    frame = read_frame(path, [keys["row"], keys["col"]])
    where = path.name
    names = {k: column(frame, key, where, k) for k, key in keys.items() if key is not None}
    if len(set(names.values())) != len(names):
        raise ValueError(f"{where}: params row, col and value name the same column twice")
    if frame[[names["row"], names["col"]]].isna().any().any():
        raise ValueError(f"{where}: a row or column id is empty")
    r, row_ids = codes(frame[names["row"]], ctx.row_ids, where, "row")
    c, col_ids = codes(frame[names["col"]], ctx.col_ids, where, "column")
    if "value" in names:
        values = numeric(frame[[names["value"]]], where)[:, 0]
        if np.isnan(values).any():
            first = int(np.flatnonzero(np.isnan(values))[0])
            raise ValueError(f"{where}: data row {first + 1} has no value")
    else:
        values = np.ones(len(frame), dtype=np.float32)
    pairs = pd.MultiIndex.from_arrays([r, c])
    if pairs.has_duplicates:
        i = int(np.flatnonzero(pairs.duplicated())[0])
        raise ValueError(f"{where}: the pair ({row_ids[r[i]]!r}, {col_ids[c[i]]!r}) is listed "
                         f"twice (data row {i + 1})")
    matrix = sp.csr_array((values, (r, c)), shape=(len(row_ids), len(col_ids)))
    return ViewArray(data=matrix, row_ids=row_ids, col_ids=col_ids,
                     info={"file": str(path), "cells": int(matrix.nnz)})

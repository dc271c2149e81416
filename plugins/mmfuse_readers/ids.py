"""Rows and columns that a file names by id, put in the order of the entity's ids."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def _example(values) -> str:
    return repr(str(next(iter(values))))


def unique_ids(ids: Sequence[str], where: str, what: str) -> None:
    """``ids`` have no duplicate; else a ValueError naming one."""
    seen = pd.Index(ids)
    if seen.has_duplicates:
        dup = seen[seen.duplicated()][0]
        raise ValueError(f"{where}: {what} id {str(dup)!r} is listed twice; ids must be unique")


def order_by_ids(found: Sequence[str], known: Sequence[str] | None, where: str, what: str
                 ) -> np.ndarray | None:
    """Positions in ``found`` that list the entity's ids ``known`` in their order (None:
    the entity has no ids yet, ``found`` gives them).  Every id must be known and every
    known id found; else a ValueError naming ``where``, how many and an example id."""
    unique_ids(found, where, what)
    if known is None:
        return None
    index = pd.Index(found)
    _known_only(index, known, where, what)
    order = index.get_indexer(pd.Index(known))
    if (order < 0).any():
        absent = [k for k, o in zip(known, order, strict=True) if o < 0]
        raise ValueError(f"{where}: {len(absent)} of the entity's {len(known)} ids have no "
                         f"{what}, e.g. {absent[0]!r}")
    return order



def positions_of(found: Sequence[str], known: Sequence[str], where: str, what: str
                 ) -> np.ndarray:
    """The position among the entity's ids ``known`` of each id in ``found``, a source that
    may hold some of the entity's instances only (a MuData modality); an id that is not
    the entity's is a ValueError naming ``where``."""
    unique_ids(found, where, what)
    index = pd.Index(found)
    _known_only(index, known, where, what)
    return pd.Index(known).get_indexer(index)


def _known_only(found: pd.Index, known: Sequence[str], where: str, what: str) -> None:
    """Every id in ``found`` is one of the entity's ids ``known``; else a ValueError naming
    ``where``, how many and an example id."""
    unknown = found.difference(pd.Index(known), sort=False)
    if len(unknown):
        raise ValueError(f"{where}: {len(unknown)} {what} ids are not ids of the entity, e.g. "
                         f"{_example(unknown)} (the entity's ids look like "
                         f"{', '.join(repr(k) for k in known[:3])})")


def codes(values: pd.Series, known: Sequence[str] | None, where: str, what: str
          ) -> tuple[np.ndarray, list[str]]:
    """The position of each id of ``values`` among the entity's ids ``known`` (None: the
    distinct ids in ``values``, sorted, become them), and those ids."""
    if known is None:
        uniques = pd.Index(values.unique()).sort_values()
        known = [str(u) for u in uniques]
        unique_ids(known, where, what)
        return uniques.get_indexer(values), known
    strings = values.astype(str)
    positions = pd.Index(known).get_indexer(strings)
    bad = np.flatnonzero(positions < 0)
    if len(bad):
        raise ValueError(f"{where}: {len(np.unique(strings.iloc[bad]))} {what} ids are not "
                         f"ids of the entity, e.g. {strings.iloc[bad[0]]!r} (data row "
                         f"{bad[0] + 1}; the entity's ids look like "
                         f"{', '.join(repr(k) for k in known[:3])})")
    return positions, list(known)

"""Embeddings into the ``obsm`` of an AnnData (``.h5ad``) or MuData (``.h5mu``) file, in the
order of its observations: ``mmfuse embed --out data.h5mu``.

The file is changed in place: only the new ``obsm`` entry is written (its ``X``, layers and
other entries are not read or rewritten), and only once every observation has been matched
to an embedding by id, so a mismatch leaves the file as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmfuse.errors import DataError

SUFFIXES = (".h5ad", ".h5mu")
KEY = "X_mmfuse"


def in_obs_order(obs: Sequence[str], ids: Sequence[str], z: np.ndarray, where: str
                 ) -> tuple[np.ndarray, int]:
    """The rows of ``z`` (one per id of ``ids``) in the order of the observations ``obs``,
    and how many embeddings no observation has.  Every observation needs an embedding."""
    import pandas as pd

    at = pd.Index(ids).get_indexer(pd.Index(obs))
    if (at < 0).any():
        lacking = [o for o, a in zip(obs, at, strict=True) if a < 0]
        raise DataError(f"{where}: {len(lacking):,} of its {len(obs):,} observations have no "
                        f"embedding (the first: {lacking[0]!r}); the embedded ids look like "
                        f"{', '.join(repr(i) for i in ids[:3])}")
    return np.ascontiguousarray(z[at]), len(ids) - len(set(at.tolist()))


def write(path: Path, ids: Sequence[str], z: np.ndarray, key: str = KEY,
          modality: str | None = None, replace: bool = False) -> tuple[str, int]:
    """Write ``z`` (rows named by ``ids``) as ``obsm[key]`` of the file at ``path`` (of a
    MuData's modality ``modality``, else of the file itself).  Returns where it went and
    how many embeddings no observation has (not written)."""
    try:
        import anndata.io as io
        import h5py
    except ImportError:
        raise DataError(f"writing {path.suffix} files needs the anndata package: pip install "
                        "'mmfuse[anndata]'") from None
    if path.suffix not in SUFFIXES:
        raise DataError(f"{path}: embeddings go into the obsm of an .h5ad or .h5mu file")
    if not path.is_file():
        raise DataError(f"{path}: no such file; the embeddings are written into an existing "
                        "file's obsm (for a new file use .npy, .csv or .tsv)")
    if modality is not None and path.suffix != ".h5mu":
        raise DataError(f"--modality {modality!r}: only a MuData (.h5mu) file has modalities")
    try:
        fh = h5py.File(path, "r+")
    except OSError as exc:
        raise DataError(f"{path}: cannot open it for writing ({exc})") from None
    with fh:
        group = fh
        where = path.name
        if modality is not None:
            known = sorted(fh["mod"]) if "mod" in fh else []
            if modality not in known:
                raise DataError(f"{path.name}: no modality {modality!r}; it has "
                                f"{', '.join(known) or '(none)'}")
            group, where = fh["mod"][modality], f"{path.name} modality {modality!r}"
        if "obs" not in group:
            raise DataError(f"{where}: no obs; is it an AnnData / MuData file?")
        obs = [str(o) for o in io.read_elem(group["obs"]).index]
        rows, unused = in_obs_order(obs, list(ids), z, where)
        if "obsm" not in group:
            io.write_elem(group, "obsm", {key: rows})
        else:
            if key in group["obsm"]:
                if not replace:
                    raise DataError(f"{where} has obsm[{key!r}] already: name another key "
                                    "(--obsm), or --replace it")
                del group["obsm"][key]
            io.write_elem(group["obsm"], key, rows)
    return f"{where} obsm[{key!r}]", unused

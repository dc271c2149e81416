"""Turn the parsed scikit-fusion tables into aligned arrays and id files.

Every shared entity (dicty genes; pharma chemicals and depositors) is aligned BY NAME: the
instances kept are those every file lists, in sorted order, and each file's rows / columns
are reindexed to that order (:func:`.tables.aligned`), whatever order the file lists them in.
Entities that only one file lists (conditions, GO terms, actions, …) keep the file's order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .tables import Table, aligned, common_names, names_of, parse_table

DICTY_FILES = {
    "annotations": "dicty.gene_annnotations.csv.gz",  # sic: three n's in the package
    "expression": "dicty.gene_expression.csv.gz",
    "ppi": "dicty.ppi.csv.gz",
}
PHARMA_FILES = {
    "actions": "pharma.actions.csv.gz",
    "pubmed": "pharma.pubmed.csv.gz",
    "depositors": "pharma.depositors.csv.gz",
    "fingerprints": "pharma.fingerprints.csv.gz",
    "depo_cats": "pharma.depo_cats.csv.gz",
    "tanimoto": "pharma.tanimoto.csv.gz",
}


@dataclass
class Prepared:
    """What a builder hands to the writer: arrays (``.npy``), id lists (``.txt``), notes."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    ids: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


def _sort_key(name: str) -> tuple[int, int, str]:
    """Numeric ids (PubChem CIDs) in numeric order, others alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _nonzero(scale: np.ndarray) -> np.ndarray:
    """A per-column scale with zeros (constant columns) replaced by 1."""
    return np.where(scale > 0, scale, 1.0)


def _zero_one(values: np.ndarray, file: str) -> np.ndarray:
    """A 0/1 matrix (empty cells are 0) as float32; any other value is an error."""
    filled = np.nan_to_num(values, nan=0.0)
    bad = ~np.isin(filled, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"{file}: expected 0/1 cells, found {np.unique(filled[bad])[:5]}")
    return filled.astype(np.float32)


def _order_note(tables: list[tuple[Table, str]], order: list[str]) -> dict[str, Any]:
    """Whether the files list the shared entity in one same order, and in the order written."""
    lists = [names_of(t, axis) for t, axis in tables]
    return {"files_list_them_in_one_same_order": all(n == lists[0] for n in lists),
            "files_list_them_in_the_written_order": all(n == order for n in lists)}


def _parse_all(files: Mapping[str, bytes], names: Mapping[str, str]) -> dict[str, Table]:
    return {key: parse_table(files[file], file) for key, file in names.items()}


DICTY_TRANSFORMS = {
    "expression.npy": "log2(1 + value of the file); NaN (missing) for genes whose values are "
                      "all 0 (taken as unmeasured)",
    "expression_z.npy": "expression.npy standardised per condition (mean 0, sd 1 over the "
                        "measured genes)",
    "expression_raw.npy": "as in the file",
    "ppi.npy": "1 where the file gives a score for (i, j) or (j, i), else 0 (diagonal as given)",
    "ppi_scores.npy": "the file's scores (DFMF constraint weights), NaN where empty",
    "go.npy": "1 where the file has 1, 0 where empty",
}


def _expression(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log2(1 + x) with all-zero genes missing, the same standardised per condition, and
    which genes are all zero."""
    if (raw < 0).any():
        raise ValueError(f"{DICTY_FILES['expression']}: negative expression values")
    unmeasured = (raw == 0).all(axis=1)  # no signal in any condition
    expression = np.log2(1.0 + raw)
    expression[unmeasured] = np.nan
    mean, sd = np.nanmean(expression, axis=0), np.nanstd(expression, axis=0)
    return expression, (expression - mean) / _nonzero(sd), unmeasured


def build_dicty(files: Mapping[str, bytes]) -> Prepared:
    """genes × conditions expression, genes × genes PPI, genes × GO terms annotations."""
    t = _parse_all(files, DICTY_FILES)
    gene_axes = [(t["annotations"], "rows"), (t["expression"], "rows"),
                 (t["ppi"], "rows"), (t["ppi"], "cols")]
    genes, dropped = common_names(gene_axes)
    genes.sort(key=_sort_key)
    if not genes:
        raise ValueError("dicty: no gene is listed in every file")
    raw = aligned(t["expression"], genes, None)
    expression, standardised, unmeasured = _expression(raw)
    scores = aligned(t["ppi"], genes, genes)
    listed = ~np.isnan(scores)
    ppi = (listed | listed.T).astype(np.float32)
    go = _zero_one(aligned(t["annotations"], genes, None), DICTY_FILES["annotations"])
    notes = {
        "alignment": {
            "method": "by gene id: genes listed in every file, sorted; each file's rows and "
                      "columns reindexed by name",
            "dropped_per_axis": dropped,
            **_order_note(gene_axes, genes),
        },
        "transforms": DICTY_TRANSFORMS,
        "stats": {"genes_all_zero_expression": int(unmeasured.sum()),
                  "ppi_edges": int(ppi.sum()),
                  "ppi_cells_listed_in_one_direction_only": int((listed != listed.T).sum()),
                  "genes_without_ppi": int((ppi.sum(1) == 0).sum()),
                  "go_annotations": int(go.sum()),
                  "go_terms_per_gene_mean": round(float(go.sum(1).mean()), 3)},
    }
    return Prepared(
        arrays={"expression": expression.astype(np.float32),
                "expression_z": standardised.astype(np.float32),
                "expression_raw": raw.astype(np.float32), "ppi": ppi,
                "ppi_scores": scores.astype(np.float32), "go": go},
        ids={"genes": genes, "conditions": names_of(t["expression"], "cols"),
             "go_terms": names_of(t["annotations"], "cols")},
        notes=notes,
    )


def _depositors(t: Mapping[str, Table]) -> tuple[list[str], str]:
    """Depositor names (depositors.csv columns = depo_cats.csv rows), and how they were got."""
    dep, cats = t["depositors"], t["depo_cats"]
    if dep.cols is not None and cats.rows is not None:
        names, _ = common_names([(dep, "cols"), (cats, "rows")])
        return names, f"by name ({dep.split_rule['cols']})"
    if dep.col_header == cats.row_header and dep.values.shape[1] == cats.values.shape[0]:
        names = [f"depositor_{i:03d}" for i in range(dep.values.shape[1])]
        return names, ("positional ids: the names hold commas and cannot be split, but both "
                       "files carry the identical header line, so positions correspond")
    raise ValueError("pharma: depositor names cannot be split and the two files' headers differ")


def _unnamed(names: list[str], what: str) -> list[str]:
    """Empty names (one depositor category is ``""``) become ``(unnamed <what> i)``."""
    return [n if n.strip() else f"(unnamed {what} {i})" for i, n in enumerate(names)]


def build_pharma(files: Mapping[str, bytes]) -> Prepared:
    """chemicals × actions / PubMed ids / depositors / fingerprint bits / chemicals
    (Tanimoto), depositors × categories."""
    t = _parse_all(files, PHARMA_FILES)
    chem_axes = [(t[k], "rows") for k in ("actions", "pubmed", "depositors", "fingerprints",
                                          "tanimoto")] + [(t["tanimoto"], "cols")]
    chemicals, dropped = common_names(chem_axes)
    chemicals.sort(key=_sort_key)
    depositors, how = _depositors(t)
    positional = how.startswith("positional")
    dep_cols = None if positional else depositors
    arrays = {
        key: _zero_one(aligned(t[key], chemicals, None), PHARMA_FILES[key])
        for key in ("actions", "pubmed", "fingerprints")
    }
    arrays["depositors"] = _zero_one(aligned(t["depositors"], chemicals, dep_cols),
                                     PHARMA_FILES["depositors"])
    arrays["depo_cats"] = _zero_one(aligned(t["depo_cats"], dep_cols, None),
                                    PHARMA_FILES["depo_cats"])
    tanimoto = aligned(t["tanimoto"], chemicals, chemicals)
    arrays["tanimoto"] = np.nan_to_num(-1e4 * tanimoto, nan=0.0).astype(np.float32) + 0.0
    notes = {
        "alignment": {
            "chemicals": "by PubChem CID: chemicals listed in every file, in numeric order",
            "depositors": how,
            "dropped_per_axis": dropped,
            **_order_note(chem_axes, chemicals),
            "header_split_rules": {k: v.split_rule for k, v in t.items()},
        },
        "transforms": {
            "0/1 files": "1 where the file has 1, 0 where it has 0 or nothing",
            "tanimoto.npy": "-1e4 x the file's values (the file stores DFMF constraint weights "
                            "-1e-4 x similarity), so 0..1; diagonal as given",
        },
    }
    ids = {"chemicals": chemicals, "actions": names_of(t["actions"], "cols"),
           "pubmed_ids": names_of(t["pubmed"], "cols"), "depositors": depositors,
           "fingerprint_bits": names_of(t["fingerprints"], "cols"),
           "depositor_categories": _unnamed(names_of(t["depo_cats"], "cols"), "category")}
    return Prepared(arrays=arrays, ids=ids, notes=notes)


def check_ids(ids: Mapping[str, list[str]]) -> None:
    """Every id file must round-trip through mmfuse's reader: one id a line, none blank."""
    for name, values in ids.items():
        bad = [v for v in values if not v.strip() or re.search(r"[\r\n]", v)]
        if bad:
            raise ValueError(f"{name}: ids that cannot be written one per line: {bad[:3]}")
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: duplicate ids")


BUILDERS = {"dicty": (DICTY_FILES, build_dicty), "pharma": (PHARMA_FILES, build_pharma)}

#: The files each set writes (id lists ``<name>.txt``, arrays ``<name>.npy``).
OUTPUTS = {
    "dicty": (("genes", "conditions", "go_terms"),
              ("expression", "expression_z", "expression_raw", "ppi", "ppi_scores", "go")),
    "pharma": (("chemicals", "actions", "pubmed_ids", "depositors", "fingerprint_bits",
                "depositor_categories"),
               ("actions", "pubmed", "depositors", "fingerprints", "depo_cats", "tanimoto")),
}


def output_files(name: str) -> set[str]:
    """File names the set ``name`` writes (besides ``manifest.json``)."""
    ids, arrays = OUTPUTS[name]
    return {f"{i}.txt" for i in ids} | {f"{a}.npy" for a in arrays}

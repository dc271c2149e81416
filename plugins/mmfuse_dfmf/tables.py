"""The gzip CSV format of scikit-fusion's data files, and aligning tables by name.

Each file is::

    line 1: the row names, comma-separated          (one per data line)
    line 2: the column names, comma-separated       (one per value of a data line)
    line 3…: one line of comma-separated numbers per row; an empty cell is missing

No field is quoted, yet some names hold commas (``Anesthetics, General``,
``Fluoropharm Co.,Ltd``).  A header is split so that it yields exactly as many names as the
data has rows / columns: first on every comma, then only on commas not followed by a space,
then also keeping the names of :data:`KNOWN_NAMES` whole.  A header that none of these splits
to the right count is ambiguous: its names are then ``None`` and the caller decides.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

import numpy as np

#: Names in scikit-fusion 0.2.1 that hold a comma NOT followed by a space (pharma depositors).
KNOWN_NAMES = (
    "Fluoropharm Co.,Ltd",
    "P.Ravikumar,M.Jeyam and G.Shalini.Biochematics Division,Dept.of Bioinformatics,"
    "Bharathiar University, Coimbatore",
    "S.GURUDEEBAN,T.RAMANATHAN & K.SATYAVANI, Marine Medicinal Plant Biotechnology "
    "Laboratory, Faculty of Marine Sciences, Annamalai Universtiy",
)


@dataclass
class Table:
    """One file: ``values`` (rows × cols, float64, NaN = empty cell) with its names.

    ``rows`` / ``cols`` are ``None`` where the header could not be split unambiguously;
    ``row_header`` / ``col_header`` keep the header lines as they are in the file.
    """

    file: str
    values: np.ndarray
    rows: list[str] | None
    cols: list[str] | None
    row_header: str
    col_header: str
    split_rule: dict[str, str]


def _split_known(header: str) -> list[str]:
    """Split on commas not followed by a space, keeping :data:`KNOWN_NAMES` whole."""
    marks = {}
    for i, name in enumerate(KNOWN_NAMES):
        if name in header:
            mark = f"\x00{i}\x00"
            marks[mark] = name
            header = header.replace(name, mark)
    return [marks.get(part, part) for part in re.split(r",(?! )", header)]


SPLITTERS = (
    ("every comma", lambda h: h.split(",")),
    ("commas not followed by a space", lambda h: re.split(r",(?! )", h)),
    ("commas not followed by a space, known names kept whole", _split_known),
)


def split_names(header: str, count: int) -> tuple[list[str] | None, str]:
    """``count`` names from a header line, and the rule that gave them (or ``None``)."""
    for rule, split in SPLITTERS:
        names = split(header)
        if len(names) == count:
            return names, rule
    return None, f"ambiguous: no rule splits it into {count} names"


def _parse_line(line: str, width: int, file: str, number: int) -> np.ndarray:
    parts = line.split(",")
    if len(parts) != width:
        raise ValueError(f"{file} line {number}: {len(parts)} values; line 3 has {width}")
    try:
        return np.array([p.strip() or "nan" for p in parts], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{file} line {number}: a value is not a number") from None


def parse_table(raw: bytes, file: str) -> Table:
    """Parse one gzip CSV file of the format above."""
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not a gzip UTF-8 file ({exc})") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 3:
        raise ValueError(f"{file}: expected a row-name line, a column-name line and data")
    row_header, col_header, data = lines[0], lines[1], lines[2:]
    width = len(data[0].split(","))
    values = np.stack([_parse_line(line, width, file, i + 3) for i, line in enumerate(data)])
    rows, row_rule = split_names(row_header, len(data))
    cols, col_rule = split_names(col_header, width)
    for kind, names in (("row", rows), ("column", cols)):
        if names is not None and len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})[:5]
            raise ValueError(f"{file}: duplicate {kind} names {dup}")
    return Table(file, values, rows, cols, row_header, col_header,
                 {"rows": row_rule, "cols": col_rule})


def names_of(table: Table, axis: str) -> list[str]:
    """Row or column names; an error when the header was ambiguous."""
    names = table.rows if axis == "rows" else table.cols
    if names is None:
        raise ValueError(f"{table.file}: its {axis} header cannot be split into names "
                         f"({table.split_rule[axis]})")
    return names


def positions(names: list[str], order: list[str], file: str) -> np.ndarray:
    """Where each name of ``order`` sits in ``names`` (reindexing by name, never position)."""
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in order if name not in index]
    if missing:
        raise ValueError(f"{file}: no {missing[:3]} among its names")
    return np.array([index[name] for name in order], dtype=np.int64)


def aligned(table: Table, rows: list[str] | None, cols: list[str] | None) -> np.ndarray:
    """``table.values`` reindexed to the given row / column names (None: keep that axis)."""
    r = (positions(names_of(table, "rows"), rows, table.file) if rows is not None
         else np.arange(table.values.shape[0]))
    c = (positions(names_of(table, "cols"), cols, table.file) if cols is not None
         else np.arange(table.values.shape[1]))
    return table.values[np.ix_(r, c)]


def common_names(tables: list[tuple[Table, str]]) -> tuple[list[str], dict[str, int]]:
    """Names present on every given (table, axis), sorted; and how many each table drops."""
    sets = [set(names_of(t, axis)) for t, axis in tables]
    common = set.intersection(*sets)
    dropped = {f"{t.file}:{axis}": len(s - common) for (t, axis), s in zip(tables, sets,
                                                                          strict=True)}
    return sorted(common), dropped

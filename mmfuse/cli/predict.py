"""``mmfuse predict``: cell predictions and top-K lists of a trained run's matrix view."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from mmfuse.cli.options import RunArg
from mmfuse.cli.render import console
from mmfuse.cli.results import new_instances
from mmfuse.errors import DataError

IdsOpt = Annotated[list[str] | None, typer.Option(
    help="Ids (repeat the option, or separate with commas).")]
SHOWN_LINES = 50


def _ids(values: list[str] | None, file: Path | None) -> list[str]:
    out = [i for v in values or [] for i in v.split(",") if i]
    if file is not None:
        try:
            out += [line.strip() for line in file.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"--rows-file {file}: {exc}") from None
    return out


def _positions(wanted: list[str], known: list[str], entity: str, option: str) -> np.ndarray:
    index = {i: k for k, i in enumerate(known)}
    unknown = [i for i in wanted if i not in index]
    if unknown:
        example = ", ".join(repr(i) for i in known[:3])
        raise DataError(f"{option}: {len(unknown)} id(s) not of entity {entity!r}, e.g. "
                        f"{unknown[0]!r} (its ids look like {example})")
    return np.array([index[i] for i in wanted], dtype=np.int64)


def _write(out: Path, header: list[str], records: list[tuple]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        import pandas as pd

        pd.DataFrame.from_records(records, columns=header).to_parquet(out, index=False)
    elif out.suffix in (".csv", ".tsv"):
        with out.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, delimiter="," if out.suffix == ".csv" else "\t")
            writer.writerow(header)
            writer.writerows(records)
    else:
        raise typer.BadParameter("use .csv, .tsv or .parquet (.npy: with --cols only)",
                                 param_hint="--out")


def _show(title: str, header: list[str], records: list[tuple]) -> None:
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name, justify="right" if name in ("rank", "prediction") else "left")
    for rec in records[:SHOWN_LINES]:
        table.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in rec))
    console.print(table)
    if len(records) > SHOWN_LINES:
        console.print(f"… {len(records) - SHOWN_LINES:,} more lines: write them all with --out",
                      highlight=False)


def predict_command(
    run_path: RunArg,
    view: Annotated[str, typer.Option(help="The matrix view whose cells are predicted.")],
    rows: IdsOpt = None,
    rows_file: Annotated[Path | None, typer.Option(
        help="Row ids, one per line.", exists=True, dir_okay=False)] = None,
    cols: IdsOpt = None,
    top: Annotated[int | None, typer.Option(
        min=1, help="The K best columns per row without a training value.")] = None,
    data: Annotated[list[str] | None, typer.Option(
        help="New rows: VIEW=FILE (repeat per view): a .npy / scipy sparse .npz in the view's "
             "input space, or raw input of a featurized view (new documents, one a line); "
             "they go through the trained encoders.")] = None,
    ids: Annotated[Path | None, typer.Option(
        help="Ids of the new rows given by --data, one a line (default new-0 … new-(n-1)).",
        dir_okay=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write .csv, .tsv, .parquet (or .npy: a rows × cols matrix, with --cols).")] = None,
) -> None:
    """Predict cells of a matrix view (--cols) or each row's top-K columns (--top), for known
    rows (--rows) or new ones given by their data (--data)."""
    if (cols is None) == (top is None):
        raise typer.BadParameter("give either --cols (those cells) or --top K", param_hint="--cols")
    wanted = _ids(rows, rows_file)
    if bool(wanted) == bool(data):
        raise typer.BadParameter("give known rows (--rows / --rows-file) or new rows (--data)",
                                 param_hint="--rows")
    from mmfuse.predict import CellModel
    from mmfuse.run import RunDir

    run = RunDir(run_path)
    if data:  # new rows go through the trained encoders: the run folder alone
        from mmfuse.api import load_trained

        built = load_trained(run)
        model = CellModel.from_run(run, data=built.data)
    elif top is not None:  # known rows: their training cells are left out of the top K
        from mmfuse.errors import MmfuseError, SpecError

        try:
            model = CellModel.from_run(run)
        except SpecError as exc:
            raise MmfuseError(
                "--top for known rows leaves out the cells they had in training, so it reads "
                f"the run's training data, which cannot be read ({exc.issues[0]}); --cols "
                "predicts their cells from the run folder alone") from exc
    else:  # known rows' cells: the run folder alone
        from mmfuse.inputs import stored_data

        inputs = run.read_inputs()
        spec = run.read_spec()
        model = CellModel.from_run(run, spec=spec, data=None if inputs is None
                                   else stored_data(run, spec, inputs))
    r, c = model.check_view(view)
    col_ids = model.data.ids[c]
    col_name = c if c != r else f"{c} (column)"  # a square view: gene × gene
    if data:
        z, new_ids = new_instances(built, r, data, ids)
        row_ids = new_ids if new_ids is not None else [f"new-{k}" for k in range(len(z))]
        row_idx = None
    else:
        row_idx = _positions(wanted, model.data.ids[r], r, "--rows")
        z, row_ids = model.embeddings[r][row_idx], wanted
    if top is not None:
        best_cols, values = model.top(view, row_idx, top, z_rows=None if row_idx is not None
                                      else z)
        header = [r, "rank", col_name, "prediction"]
        records = [(row_ids[i], k + 1, col_ids[j], float(values[i, k]))
                   for i in range(len(row_ids)) for k, j in enumerate(best_cols[i])]
        title = f"{view}: top {top} {c} per {r}"
    else:
        col_idx = _positions(_ids(cols, None), col_ids, c, "--cols")
        pairs_r = np.repeat(np.arange(len(row_ids)), len(col_idx))
        pairs_c = np.tile(col_idx, len(row_ids))
        values = model.cells(view, pairs_r if row_idx is None else row_idx[pairs_r], pairs_c,
                             z_rows=z[pairs_r] if row_idx is None else None)
        if out is not None and out.suffix == ".npy":
            np.save(out, values.reshape(len(row_ids), len(col_idx)).astype(np.float32))
            console.print(f"wrote {len(row_ids)} × {len(col_idx)} predictions to {out}",
                          highlight=False)
            return
        header = [r, col_name, "prediction"]
        records = [(row_ids[a], col_ids[b], float(v))
                   for a, b, v in zip(pairs_r, pairs_c, values, strict=True)]
        title = f"{view}: predicted cells"
    if out is None:
        _show(title, header, records)
        return
    _write(out, header, records)
    console.print(f"wrote {len(records):,} predictions to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict_command)

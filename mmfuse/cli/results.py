"""``mmfuse evaluate`` and ``mmfuse embed``: use a trained run."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from mmfuse.cli.options import RunArg
from mmfuse.cli.render import console, evaluation_table
from mmfuse.errors import DataError, describe


def evaluate_command(run_path: RunArg) -> None:
    """Probe a run's embeddings on its spec's targets, beside the trivial floor."""
    from mmfuse.api import evaluate_run
    from mmfuse.run import RunDir

    run = RunDir(run_path)
    result = evaluate_run(run)
    console.print(evaluation_table(result))
    console.print(f"wrote {run.evaluation_file}", highlight=False)


def load_new_data(view: str, path: Path) -> Any:
    """The new instances of ``--data VIEW=FILE``: a ``.npy`` array (NaN cells missing) or a
    scipy sparse ``.npz`` (cells not stored are missing) of numbers; a :class:`DataError`
    names the file and what is wrong (never unpickles anything)."""
    import scipy.sparse as sp

    from mmfuse.data import dtype_problem

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


def _parse_data(items: list[str]) -> dict[str, Any]:
    """VIEW=FILE pairs: ``.npy`` arrays (NaN cells missing) or scipy sparse ``.npz`` files
    (cells not stored are missing)."""
    arrays: dict[str, Any] = {}
    for item in items:
        view, sep, path = item.partition("=")
        if not sep or not view or not path:
            raise typer.BadParameter(f"{item!r}: expected VIEW=FILE.npy", param_hint="--data")
        arrays[view] = load_new_data(view, Path(path))
    return arrays


def _write(out: Path, z: np.ndarray, ids: list[str]) -> None:
    if out.suffix not in (".csv", ".tsv", ".npy"):
        raise typer.BadParameter("use .npy, .csv or .tsv", param_hint="--out")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, z)
        out.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
        return
    with out.open("w", newline="", encoding="utf-8") as fh:  # ids quoted where they need it
        writer = csv.writer(fh, delimiter="," if out.suffix == ".csv" else "\t")
        writer.writerow(["id", *(f"z{i}" for i in range(z.shape[1]))])
        writer.writerows([i, *(f"{v:.7g}" for v in row)] for i, row in zip(ids, z, strict=True))


def embed_command(
    run_path: RunArg,
    entity: Annotated[str, typer.Option(help="Entity to embed.")],
    out: Annotated[Path, typer.Option(help="Output file: .npy (+ .ids.txt), .csv or .tsv.")],
    data: Annotated[list[str] | None, typer.Option(
        help="New instances: VIEW=FILE.npy in the view's input space (repeat per view).")] = None,
) -> None:
    """Write an entity's embeddings; with --data, embed new instances through the encoders."""
    from mmfuse.api import embed_new, load_trained
    from mmfuse.run import RunDir

    run = RunDir(run_path)
    if data:
        arrays = _parse_data(data)
        built = load_trained(run)
        if entity not in built.plan.codes:
            known = ", ".join(sorted(built.plan.codes))
            raise DataError(f"--entity {entity!r}: no such entity in this run's spec with views "
                            f"to embed it from; known: {known}")
        z = embed_new(built, entity, arrays)
        ids = [str(i) for i in range(len(z))]
    else:
        z, ids = run.read_embeddings(entity)
    _write(out, z, ids)
    console.print(f"wrote {len(z)} × {z.shape[1]} embeddings of {entity!r} to {out}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
    app.command("embed")(embed_command)

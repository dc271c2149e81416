"""``mmfuse evaluate`` and ``mmfuse embed``: use a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import scipy.sparse as sp
import typer

from mmfuse.api import embed_new, evaluate_run, load_trained
from mmfuse.cli.options import RunArg
from mmfuse.cli.render import console, evaluation_table
from mmfuse.errors import DataError
from mmfuse.run import RunDir


def evaluate_command(run_path: RunArg) -> None:
    """Probe a run's embeddings on its spec's targets, beside the trivial floor."""
    run = RunDir(run_path)
    result = evaluate_run(run)
    console.print(evaluation_table(result))
    console.print(f"wrote {run.evaluation_file}", highlight=False)


def _parse_data(items: list[str]) -> dict[str, Any]:
    """VIEW=FILE pairs: ``.npy`` arrays (NaN cells missing) or scipy sparse ``.npz`` files
    (cells not stored are missing)."""
    arrays: dict[str, Any] = {}
    for item in items:
        view, sep, path = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected VIEW=FILE.npy", param_hint="--data")
        try:
            if path.endswith(".npz"):
                arrays[view] = sp.load_npz(path)
            else:
                arrays[view] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"--data {item}: {exc}") from None
    return arrays


def _write(out: Path, z: np.ndarray, ids: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix in (".csv", ".tsv"):
        sep = "," if out.suffix == ".csv" else "\t"
        header = sep.join(["id", *(f"z{i}" for i in range(z.shape[1]))])
        rows = [sep.join([i, *(f"{v:.7g}" for v in row)]) for i, row in zip(ids, z, strict=True)]
        out.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    elif out.suffix == ".npy":
        np.save(out, z)
        out.with_suffix(".ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    else:
        raise typer.BadParameter("use .npy, .csv or .tsv", param_hint="--out")


def embed_command(
    run_path: RunArg,
    entity: Annotated[str, typer.Option(help="Entity to embed.")],
    out: Annotated[Path, typer.Option(help="Output file: .npy (+ .ids.txt), .csv or .tsv.")],
    data: Annotated[list[str] | None, typer.Option(
        help="New instances: VIEW=FILE.npy in the view's input space (repeat per view).")] = None,
) -> None:
    """Write an entity's embeddings; with --data, embed new instances through the encoders."""
    run = RunDir(run_path)
    if data:
        z = embed_new(load_trained(run), entity, _parse_data(data))
        ids = [str(i) for i in range(len(z))]
    else:
        z, ids = run.read_embeddings(entity)
    _write(out, z, ids)
    console.print(f"wrote {len(z)} × {z.shape[1]} embeddings of {entity!r} to {out}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
    app.command("embed")(embed_command)

"""``mmfuse evaluate`` and ``mmfuse embed``: use a trained run."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from mmfuse.cli.options import RunArg
from mmfuse.cli.render import console, evaluation_table
from mmfuse.errors import DataError
from mmfuse.obsm import KEY, SUFFIXES, write


def _trained(run, spec):
    """The run's trained model on its training data (embedding every instance again, as
    the view ablation does, walks the data; the run folder alone does not keep it), or
    None, said why, where that data or the checkpoint cannot be read."""
    import logging

    from mmfuse.build import build
    from mmfuse.errors import MmfuseError
    from mmfuse.plugins import get_plugins

    try:
        built = build(spec, get_plugins(), device="cpu")
        run.load_checkpoint("cpu", spec=spec, model=built.model)
    except MmfuseError as exc:
        logging.getLogger(__name__).warning("no view ablation: %s", exc)
        return None
    built.model.eval()
    return built


def evaluate_command(run_path: RunArg) -> None:
    """Probe a run's embeddings on its spec's targets, beside the trivial floor; with two
    or more views of a target's entity, each view left out too (evaluate.ablation)."""
    from mmfuse.api import evaluate_run
    from mmfuse.evaluate import ablation_wanted
    from mmfuse.run import RunDir

    run = RunDir(run_path)
    spec = run.read_spec()
    # the model only where a view can be left out: building it reads the data once, for the
    # baselines too
    built = _trained(run, spec) if ablation_wanted(spec) else None
    result = evaluate_run(run, spec, built.data if built is not None else None, built)
    console.print(evaluation_table(result))
    console.print(f"wrote {run.evaluation_file}", highlight=False)


def _parse_data(items: list[str]) -> dict[str, Path]:
    """VIEW=FILE pairs: ``.npy`` arrays (NaN cells missing), scipy sparse ``.npz`` files
    (cells not stored are missing), or raw input of a view whose reader featurizes it."""
    files: dict[str, Path] = {}
    for item in items:
        view, sep, path = item.partition("=")
        if not sep or not view or not path:
            raise typer.BadParameter(f"{item!r}: expected VIEW=FILE", param_hint="--data")
        if view in files:
            raise typer.BadParameter(f"view {view!r} is given twice", param_hint="--data")
        files[view] = Path(path)
    return files


def new_instances(built, entity: str, data: list[str], ids_file: Path | None):
    """``--data`` (and ``--ids``) through a run's model (:func:`mmfuse.api.load_trained`):
    the new instances' embeddings and their ids (``--ids``; ``None`` without it)."""
    from mmfuse.api import embed_new, new_inputs
    from mmfuse.inputs import read_new_ids

    files = _parse_data(data)
    ids = read_new_ids(ids_file) if ids_file is not None else None
    if entity not in built.plan.codes:
        known = ", ".join(sorted(built.plan.codes))
        raise DataError(f"--entity {entity!r}: no such entity in this run's spec with views "
                        f"to embed it from; known: {known}")
    z = embed_new(built, entity, new_inputs(built, entity, files, ids))
    if ids is not None and len(ids) != len(z):
        raise DataError(f"--ids {ids_file} lists {len(ids)} id{'s' * (len(ids) != 1)} for "
                        f"{len(z)} new instance{'s' * (len(z) != 1)}")
    return z, ids


def _write(out: Path, z: np.ndarray, ids: list[str]) -> None:
    if out.suffix not in (".csv", ".tsv", ".npy"):
        raise typer.BadParameter("use .npy, .csv or .tsv (or an existing .h5ad / .h5mu file)",
                                 param_hint="--out")
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
    out: Annotated[Path, typer.Option(
        help="Output file: .npy (+ .ids.txt), .csv or .tsv; or an existing .h5ad / .h5mu "
             "file, whose obsm gets the embeddings in the order of its observations.")],
    data: Annotated[list[str] | None, typer.Option(
        help="New instances: VIEW=FILE (repeat per view): a .npy / scipy sparse .npz in the "
             "view's input space, or raw input of a featurized view (new documents, one a "
             "line, for word2vec/tfidf/glove; a folder of images named by --ids), "
             "featurized as in training.")] = None,
    ids: Annotated[Path | None, typer.Option(
        help="Ids of the new instances given by --data, one a line (default 0 … n-1).",
        dir_okay=False)] = None,
    obsm: Annotated[str, typer.Option(
        help="Key of the obsm entry, for an .h5ad / .h5mu --out.")] = KEY,
    modality: Annotated[str | None, typer.Option(
        help="Write into this modality's obsm (an .h5mu --out; default: the MuData's "
             "own).")] = None,
    replace: Annotated[bool, typer.Option(
        "--replace", help="Replace an obsm entry of that key (default: an error).")] = False,
) -> None:
    """Write an entity's embeddings; with --data, embed new instances through the encoders
    (the run folder alone: its training data is not read)."""
    from mmfuse.run import RunDir

    run = RunDir(run_path)
    if data:
        from mmfuse.api import load_trained

        z, new_ids = new_instances(load_trained(run), entity, data, ids)
        names = new_ids if new_ids is not None else [str(i) for i in range(len(z))]
    elif ids is not None:
        raise typer.BadParameter("--ids names the new instances of --data; give --data too",
                                 param_hint="--ids")
    else:
        z, names = run.read_embeddings(entity)
    if out.suffix in SUFFIXES:
        where, unused = write(out, names, z, key=obsm, modality=modality, replace=replace)
        console.print(f"wrote {len(z) - unused} × {z.shape[1]} embeddings of {entity!r} "
                      f"into {where}" + (f" ({unused:,} embedded ids are no observation of "
                                         "the file: not written)" if unused else ""),
                      highlight=False)
        return
    if modality is not None or replace or obsm != KEY:
        raise typer.BadParameter("--obsm, --modality and --replace are for an .h5ad / .h5mu "
                                 "file", param_hint="--out")
    _write(out, z, names)
    console.print(f"wrote {len(z)} × {z.shape[1]} embeddings of {entity!r} to {out}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
    app.command("embed")(embed_command)

"""``mmfuse data prepare goodreads``: the command-line face of :func:`.prepare.prepare`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from mmfuse.errors import MmfuseError

from .covers import CoverDownloader, CoverSource, FolderCovers
from .prepare import PrepareParams, default_cache, prepare


class Sample(str, Enum):
    first = "first"
    random = "random"


def _cover_source(covers: Path | None, download: bool, out: Path) -> CoverSource:
    if covers is not None and download:
        raise MmfuseError("give either --covers DIR or --download-covers, not both")
    if covers is None and not download:
        raise MmfuseError("covers needed: give --covers DIR (images named by book_id) or "
                          "--download-covers (fetch image_url into OUT/covers_cache)")
    if covers is not None:
        if not covers.is_dir():
            raise MmfuseError(f"--covers {covers}: no such folder")
        return FolderCovers(covers)
    return CoverDownloader(default_cache(out))


def _summary(manifest: dict, out: Path) -> str:
    counts = manifest["counts"]
    kept = ", ".join(f"{k} {v:,}" for k, v in counts["kept_after"].items())
    drops = counts["dropped_no_cover"]
    why = ", ".join(f"{reason} {k:,}" for reason, k in drops.items() if k)
    text = (f"goodreads: {manifest['n_books']:,} real books ({manifest['n_fiction']:,} fiction, "
            f"{manifest['n_nonfiction']:,} non-fiction) in {out}\n"
            f"  read {counts['read']:,}{' (stopped early)' if counts['stopped_early'] else ''}; "
            f"kept after each filter: {kept}\n"
            f"  drew {counts['drawn']:,}, dropped {sum(drops.values()):,} without a usable "
            f"cover{f' ({why})' if why else ''}")
    if manifest["short_by"]:
        text += (f"\n  [yellow]only {manifest['n_books']:,} of "
                 f"{manifest['params']['n']:,} requested books: the input is exhausted[/]")
    return text


def prepare_goodreads(
    books: Annotated[Path, typer.Option(help="goodreads_books.json.gz (UCSD Book Graph).")],
    genres: Annotated[Path, typer.Option(help="goodreads_book_genres_initial.json.gz.")],
    out: Annotated[Path, typer.Option(
        help="Folder to write; data/goodreads is where specs/goodreads.yaml looks.")],
    covers: Annotated[Path | None, typer.Option(
        help="Folder of cover images named by book_id (with or without extension).")] = None,
    download_covers: Annotated[bool, typer.Option(
        "--download-covers",
        help="Download covers from image_url into OUT/covers_cache (resumable).")] = False,
    n: Annotated[int, typer.Option("--n", min=1, help="Number of books.")] = 5000,
    sample: Annotated[Sample, typer.Option(
        help="first: the first books in file order; random: a seeded uniform sample.")
    ] = Sample.first,
    seed: Annotated[int, typer.Option(help="Seed of --sample random.")] = 0,
    image_size: Annotated[int, typer.Option(
        min=8, help="Covers are resized to SIZE×SIZE (aspect kept, padded).")] = 64,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="Threads fetching and decoding covers.")] = 8,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Prepare real Goodreads data (UCSD Book Graph) for specs/goodreads.yaml.

    Keeps English books with a description, a rating, a real cover and genres.
    Labels fiction / non-fiction by the top-voted genre (ties: manifest.json).
    Writes book_ids.txt, covers.npy, descriptions.txt, is_fiction.npy,
    average_rating.npy and manifest.json (every count) to OUT.
    A rerun reuses the covers already downloaded.
    """
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    from mmfuse.cli.render import console, err_console

    source = _cover_source(covers, download_covers, out)
    params = PrepareParams(n=n, sample=sample.value, seed=seed, image_size=image_size,
                           workers=workers)
    progress = Progress(TextColumn("{task.description:<16}"), BarColumn(), TaskProgressColumn(),
                        TimeElapsedColumn(), console=err_console,
                        disable=quiet or not err_console.is_terminal)
    with progress:
        manifest = prepare(books, genres, out, source, params, progress)
    console.print(_summary(manifest, out), highlight=False)

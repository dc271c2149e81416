"""`mmfuse data prepare goodreads` on small files in the real UCSD Book Graph format.

Every test cover is a solid colour derived from its book id (on a non-square canvas), so after
preparing, each row of covers.npy can be checked to be its own book's cover.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from mmfuse_goodreads.covers import CoverDownloader, FolderCovers
from mmfuse_goodreads.dataset import Goodreads
from mmfuse_goodreads.output import check_alignment
from mmfuse_goodreads.prepare import PrepareParams, prepare, sample_key
from mmfuse_goodreads.records import Book, fiction_code
from PIL import Image
from typer.testing import CliRunner

from mmfuse.cli import app
from mmfuse.errors import DataError

SIZE = 16
FICTION_VOTES = {"fiction": 40, "romance": 12}
HISTORY_VOTES = {"history, historical fiction, biography": 30, "non-fiction": 9}
NOPHOTO = "https://s.gr-assets.com/assets/nophoto/book/111x148-bcc042a9c91a29c1d680899eff700a03.png"

# book_id: (overrides of the book record, genres entry or None for no entry, cover kind)
# cover kinds: "png" / "bare" (file without extension) / None (no file) / "junk" (unreadable)
BOOKS: dict[str, tuple[dict, dict | None, str | None]] = {
    "101": ({}, FICTION_VOTES, "png"),
    "102": ({"language_code": "eng"}, HISTORY_VOTES, "bare"),
    "103": ({"language_code": "fre"}, FICTION_VOTES, "png"),
    "104": ({"language_code": ""}, FICTION_VOTES, "png"),
    "105": ({"description": ""}, FICTION_VOTES, "png"),
    "106": ({"average_rating": "0"}, FICTION_VOTES, "png"),
    "107": ({"average_rating": "0.00"}, HISTORY_VOTES, "png"),
    "108": ({"image_url": NOPHOTO}, FICTION_VOTES, "png"),
    "109": ({}, None, "png"),                       # no genre entry
    "110": ({}, {}, "png"),                         # an entry without genres
    "111": ({}, {"fiction": 3, "history, historical fiction, biography": 3}, "png"),  # tie
    "112": ({"language_code": "en-US"},
            {"romance": 2, "mystery, thriller, crime": 2}, "png"),                   # tie
    "113": ({}, FICTION_VOTES, None),               # cover file missing
    "114": ({"language_code": "en-GB", "description": "Line one.\nLine\ttwo.\r\n\u2028end "},
            {"young-adult": 5, "fiction": 2}, "png"),
    "115": ({"language_code": "en-CA"}, {"fantasy, paranormal": 4, "children": 1}, "bare"),
    "116": ({}, {"children": 7, "fiction": 2}, "png"),
    "117": ({}, {"comics, graphic": 3}, "junk"),     # unreadable cover
    "118": ({"average_rating": "3.05"}, {"poetry": 1}, "png"),
}
# What prepare must keep from BOOKS (file order) with its label: ties go to the alphabetically
# first top genre ("fiction" beats "history, ..."; "mystery, ..." beats "romance").
EXPECTED = {"101": 1, "102": 0, "111": 1, "112": 0, "114": 1, "115": 1, "116": 0, "118": 0}


def colour(book_id: str) -> tuple[int, int, int]:
    r, g, b = hashlib.sha256(book_id.encode()).digest()[:3]
    return 32 + r % 200, 32 + g % 200, 32 + b % 200  # never black (the padding colour)


def cover_bytes(book_id: str) -> bytes:
    buffer = BytesIO()
    Image.new("RGB", (10, 16), colour(book_id)).save(buffer, format="PNG")  # tall, like covers
    return buffer.getvalue()


def book_record(book_id: str, **overrides: str) -> dict:
    record = {
        "isbn": "0312853122", "text_reviews_count": "1", "series": [], "country_code": "US",
        "language_code": "en", "popular_shelves": [{"count": "3", "name": "to-read"}],
        "asin": "", "is_ebook": "false", "average_rating": "4.29", "kindle_asin": "",
        "similar_books": [], "description": f"The story of book {book_id}.",
        "format": "Paperback", "link": f"https://www.goodreads.com/book/show/{book_id}",
        "authors": [{"author_id": "604031", "role": ""}], "publisher": "St. Martin's Press",
        "num_pages": "256", "publication_day": "1", "isbn13": "9780312853129",
        "publication_month": "9", "edition_information": "", "publication_year": "1984",
        "url": f"https://www.goodreads.com/book/show/{book_id}",
        "image_url": f"https://images.gr-assets.com/books/1473603845m/{book_id}.jpg",
        "book_id": book_id, "ratings_count": "3", "work_id": "5333265", "title": f"Book {book_id}",
        "title_without_series": f"Book {book_id}",
    }
    return {**record, **overrides}


def write_gz(path: Path, records: list[dict]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    return path


def write_inputs(root: Path, books: dict = BOOKS, url_base: str | None = None) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    records = []
    for book_id, (overrides, _, _) in books.items():
        record = book_record(book_id, **overrides)
        if url_base and "nophoto" not in record["image_url"]:
            record["image_url"] = f"{url_base}/books/1473603845m/{book_id}.jpg"
        records.append(record)
    genres = [{"book_id": b, "genres": g} for b, (_, g, _) in books.items() if g is not None]
    return (write_gz(root / "goodreads_books.json.gz", records),
            write_gz(root / "goodreads_book_genres_initial.json.gz", genres))


def write_covers(folder: Path, books: dict = BOOKS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for book_id, (_, _, kind) in books.items():
        if kind in ("png", "bare"):
            (folder / (book_id + (".png" if kind == "png" else ""))).write_bytes(
                cover_bytes(book_id))
        elif kind == "junk":
            (folder / f"{book_id}.jpg").write_bytes(b"not an image")
    return folder


def assert_own_covers(out: Path) -> None:
    """Each row's centre is its book's colour; the side padding is black (aspect kept)."""
    ids = (out / "book_ids.txt").read_text().split()
    covers = np.load(out / "covers.npy")
    assert covers.shape == (len(ids), 3, SIZE, SIZE) and covers.dtype == np.uint8
    for book_id, cover in zip(ids, covers, strict=True):
        assert tuple(cover[:, SIZE // 2, SIZE // 2]) == colour(book_id), book_id
        assert cover[:, :, 0].max() == 0 and cover[:, :, -1].max() == 0


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path, Path]:
    books, genres = write_inputs(tmp_path / "in")
    return books, genres, write_covers(tmp_path / "covers")


def test_fiction_rule_and_ties():
    assert fiction_code({"fiction": 2, "non-fiction": 1}) == 1
    assert fiction_code({"non-fiction": 2, "fiction": 1}) == 0
    assert fiction_code({"young-adult": "3"}) == 1  # votes may be strings
    assert fiction_code({"romance": 2, "mystery, thriller, crime": 2}) == 2  # tie, non-fiction
    assert fiction_code({"history, historical fiction, biography": 1, "fiction": 1}) == 3
    assert fiction_code({}) is None


def test_prepare_keeps_the_right_books_labels_counts_and_covers(inputs, tmp_path):
    books, genres, covers = inputs
    out = tmp_path / "out"
    params = PrepareParams(n=100, image_size=SIZE, workers=2)
    manifest = prepare(books, genres, out, FolderCovers(covers), params)
    ids = (out / "book_ids.txt").read_text().split()
    assert ids == list(EXPECTED)
    assert np.load(out / "is_fiction.npy").tolist() == list(EXPECTED.values())
    assert np.load(out / "is_fiction.npy").dtype == np.int64
    rating = np.load(out / "average_rating.npy")
    assert rating.dtype == np.float32 and rating[ids.index("118")] == np.float32(3.05)
    descriptions = (out / "descriptions.txt").read_text(encoding="utf-8").split("\n")
    assert descriptions[ids.index("114")] == "Line one. Line two. end"
    assert len(descriptions) == len(ids) + 1 and descriptions[-1] == ""
    assert_own_covers(out)
    counts = manifest["counts"]
    assert counts["read"] == len(BOOKS)
    assert counts["kept_after"] == {"description": 17, "average_rating": 15, "language": 13,
                                    "cover_url": 12, "genre": 10}
    assert counts["dropped_no_cover"] == {"missing": 1, "download_failed": 0, "unreadable": 1}
    assert counts["drawn"] == 10 and counts["sampled"] == 8 and counts["genre_ties_kept"] == 2
    assert manifest["short_by"] == 92 and manifest["n_books"] == 8
    assert (manifest["n_fiction"], manifest["n_nonfiction"]) == (4, 4)
    assert manifest["inputs"]["books"] == {"name": books.name, "bytes": books.stat().st_size}
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["source"] == "real" and on_disk["counts"] == counts
    assert sorted(p.name for p in out.iterdir()) == sorted(on_disk["files"])
    assert "real Goodreads data" in Goodreads().ensure(out, {})


def test_first_keeps_drawing_past_missing_covers_and_stops_early(inputs, tmp_path):
    books, genres, covers = inputs
    out = tmp_path / "out"
    manifest = prepare(books, genres, out, FolderCovers(covers),
                       PrepareParams(n=5, image_size=SIZE, workers=1))
    assert (out / "book_ids.txt").read_text().split() == ["101", "102", "111", "112", "114"]
    counts = manifest["counts"]
    assert counts["drawn"] == 6 and counts["dropped_no_cover"]["missing"] == 1  # book 113
    assert counts["stopped_early"] and counts["read"] < len(BOOKS) and manifest["short_by"] == 0
    assert_own_covers(out)


def test_random_sample_is_seeded_in_file_order_and_redraws(inputs, tmp_path):
    books, genres, covers = inputs
    folder = FolderCovers(covers)

    def draw(seed: int, n: int, name: str) -> tuple[list[str], dict]:
        out = tmp_path / name
        manifest = prepare(books, genres, out, folder, PrepareParams(
            n=n, sample="random", seed=seed, image_size=SIZE, workers=1))
        assert_own_covers(out)
        return (out / "book_ids.txt").read_text().split(), manifest

    def key_order(seed: int, eligible) -> list[str]:
        """Reference: eligible books by their seeded key (the random sample's order)."""
        key = {b: sample_key(seed, Book(b, list(BOOKS).index(b), "", 1.0, 0, False, ""))
               for b in eligible}
        return sorted(eligible, key=key.__getitem__)

    def file_order(ids) -> list[str]:
        return sorted(ids, key=list(BOOKS).index)

    first, manifest = draw(0, 4, "a")
    assert first == file_order(key_order(0, EXPECTED)[:4]) and first == draw(0, 4, "b")[0]
    assert manifest["counts"]["passes"] == 1
    others = {seed: draw(seed, 4, f"s{seed}")[0] for seed in range(1, 4)}
    assert all(ids == file_order(key_order(seed, EXPECTED)[:4]) for seed, ids in others.items())
    assert any(ids != first for ids in others.values())
    assert draw(3, 8, "all")[0] == list(EXPECTED)  # every eligible book, whatever the drops

    # most covers missing: the first pass's candidates run out, a second pass draws more
    for path in covers.iterdir():
        if path.name.split(".")[0] not in ("115", "116", "118"):
            path.unlink()
    ids, manifest = draw(0, 3, "few")
    assert ids == ["115", "116", "118"]
    counts = manifest["counts"]
    assert counts["passes"] == 2 and counts["read"] == len(BOOKS)  # counted on pass 1 only
    candidates = key_order(0, [b for b in BOOKS if b in EXPECTED or b in ("113", "117")])
    assert counts["drawn"] == max(candidates.index(b) for b in ids) + 1
    assert counts["dropped_no_cover"]["missing"] == counts["drawn"] - 3


def test_alignment_check_catches_swapped_covers(inputs, tmp_path):
    books, genres, covers = inputs
    out = tmp_path / "out"
    prepare(books, genres, out, FolderCovers(covers), PrepareParams(n=4, image_size=SIZE))
    assert check_alignment(out) == 4
    arr = np.load(out / "covers.npy")
    np.save(out / "covers.npy", arr[[1, 0, 2, 3]])
    with pytest.raises(DataError, match="not their book's cover"):
        check_alignment(out)
    (out / "descriptions.txt").write_text("one\ntwo\n")
    with pytest.raises(DataError, match="descriptions.txt has 2 lines"):
        check_alignment(out)


def test_refuses_foreign_files_and_bad_inputs(inputs, tmp_path):
    books, genres, covers = inputs
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="thesis.tex"):
        prepare(books, genres, mine, FolderCovers(covers), PrepareParams(image_size=SIZE))
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    with pytest.raises(DataError, match="no such file"):
        prepare(tmp_path / "nope.json.gz", genres, tmp_path / "o", FolderCovers(covers))
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(gzip.compress(b'{"book_id": "1"}\n{not json\n'))
    with pytest.raises(DataError, match="broken.json.gz:2"):
        prepare(broken, genres, tmp_path / "o", FolderCovers(covers))


class CoverServer:
    """A local HTTP server: /books/.../<id>.jpg → that book's cover; book 113 is 404; book 115
    fails once with 503 and then succeeds.  Counts requests per path."""

    def __init__(self):
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests[self.path] += 1
                book_id = Path(self.path).stem
                if book_id == "113" or (book_id == "115" and server.requests[self.path] == 1):
                    self.send_error(404 if book_id == "113" else 503)
                    return
                body = b"junk" if book_id == "117" else cover_bytes(book_id)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def cover_server():
    server = CoverServer()
    yield server
    server.close()


def test_downloader_retries_caches_and_resumes(tmp_path, cover_server):
    books, genres = write_inputs(tmp_path / "in", url_base=cover_server.url)
    out = tmp_path / "out"

    def run() -> dict:
        downloader = CoverDownloader(out / "covers_cache", retries=2, backoff=0.01, timeout=5)
        return prepare(books, genres, out, downloader,
                       PrepareParams(n=100, image_size=SIZE, workers=4))

    manifest = run()
    assert (out / "book_ids.txt").read_text().split() == list(EXPECTED)
    assert_own_covers(out)
    assert manifest["counts"]["dropped_no_cover"] == {"missing": 0, "download_failed": 1,
                                                      "unreadable": 1}
    assert manifest["covers"]["stats"] == {"downloaded": 9, "failed": 1}
    assert cover_server.requests["/books/1473603845m/115.jpg"] == 2  # one retry
    assert not any(p.name.endswith(".part") for p in (out / "covers_cache").iterdir())
    assert (out / "covers_cache" / "113.failed").is_file()
    before = sum(cover_server.requests.values())
    assert before == 11 and "/books/1473603845m/108.jpg" not in cover_server.requests

    manifest = run()  # everything cached: no request at all
    assert sum(cover_server.requests.values()) == before
    assert manifest["covers"]["stats"] == {"cached": 9, "failed_before": 1}
    assert (out / "book_ids.txt").read_text().split() == list(EXPECTED)


def flat(text: str) -> str:
    """Terminal output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_cli_prepares_real_data_that_ensure_then_uses(inputs, tmp_path):
    books, genres, covers = inputs
    out = tmp_path / "data" / "goodreads"
    runner = CliRunner()
    base = ["data", "prepare", "goodreads", "--books", str(books), "--genres", str(genres),
            "--out", str(out)]
    result = runner.invoke(app, [*base, "--covers", str(covers), "--n", "3", "--image-size",
                                 str(SIZE), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 real books" in flat(result.output) and "stopped early" in flat(result.output)
    assert (out / "book_ids.txt").read_text().split() == ["101", "102", "111"]
    message = Goodreads().ensure(out, {"n_books": 5000})
    assert "real Goodreads data" in message and "3 books" in message
    with pytest.raises(ValueError, match="holds real Goodreads data"):
        Goodreads().ensure(out, {"source": "sample"})

    both = runner.invoke(app, [*base, "--covers", str(covers), "--download-covers"])
    assert both.exit_code == 1 and "not both" in flat(both.output)
    neither = runner.invoke(app, base)
    assert neither.exit_code == 1 and "--download-covers" in flat(neither.output)
    missing = runner.invoke(app, [*base[:4], str(tmp_path / "x.gz"), *base[5:], "--covers",
                                  str(covers)])
    assert missing.exit_code == 1 and "no such file" in flat(missing.output)


def test_ensure_without_real_data_says_how_to_prepare(tmp_path):
    with pytest.raises(ValueError, match="mmfuse data prepare goodreads"):
        Goodreads().ensure(tmp_path / "empty", {"source": "real"})


@pytest.mark.slow
def test_shipped_spec_trains_on_prepared_real_format_data(tmp_path):
    """specs/goodreads.yaml reads a prepared folder as is (data/goodreads beside specs/)."""
    import shutil

    from mmfuse.api import train
    from mmfuse.spec import load_spec

    books = {str(1000 + i): ({"description": f"A tale of {'magic' if i % 2 else 'war'} {i}."},
                             {"fiction" if i % 2 else "non-fiction": 3}, "png")
             for i in range(60)}
    book_file, genre_file = write_inputs(tmp_path / "in", books)
    prepare(book_file, genre_file, tmp_path / "data" / "goodreads",
            FolderCovers(write_covers(tmp_path / "covers", books)), PrepareParams(n=60))
    (tmp_path / "specs").mkdir()
    shutil.copy(Path(__file__).resolve().parents[1] / "specs" / "goodreads.yaml",
                tmp_path / "specs" / "goodreads.yaml")
    result = train(load_spec(tmp_path / "specs" / "goodreads.yaml", ["train.epochs=1"]),
                   tmp_path / "run")
    assert "real Goodreads data" in result.built.data.dataset_message
    assert np.load(tmp_path / "run" / "embeddings" / "book.npy").shape == (60, 50)

"""Shared fixtures: tiny specs with real files, written to tmp_path."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mmfuse.plugins import get_plugins


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Every test sees the plugins as installed (a test may register a throwaway one)."""
    get_plugins.cache_clear()
    yield
    get_plugins.cache_clear()


def write_multiview(root: Path, *, n_book=48, n_user=32, n_word=24, seed=0) -> Path:
    """Three entities, four views: a cover tensor, book × word text, a sparse user × book
    ratings matrix with missing cells (book is its column entity) and a square word × word
    matrix.  A latent factor of each book shows in its cover and its text; ``label.npy``
    is its sign, ``score.npy`` a continuous target."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    u = rng.standard_normal((n_book, 2))
    covers = np.clip(128 + 60 * u[:, :1, None, None] * np.ones((1, 3, 16, 16))
                     + 20 * rng.standard_normal((n_book, 3, 16, 16)), 0, 255).astype(np.uint8)
    np.save(root / "covers.npy", covers)
    words = rng.standard_normal((n_word, 2))
    np.save(root / "text.npy", (u @ words.T + 0.3 * rng.standard_normal((n_book, n_word)))
            .astype(np.float32))
    users = rng.standard_normal((n_user, 2))
    ratings = users @ u.T
    keep = rng.random(ratings.shape) < 0.3
    sp.save_npz(root / "ratings.npz", sp.csr_array(np.where(keep, ratings, 0.0) * keep))
    cooc = words @ words.T
    np.save(root / "cooc.npy", cooc.astype(np.float32))
    (root / "book_ids.txt").write_text("".join(f"b{i}\n" for i in range(n_book)))
    np.save(root / "label.npy", (u[:, 0] > 0).astype(np.int64))
    np.save(root / "score.npy", (u[:, 1] + 0.1 * rng.standard_normal(n_book)).astype(np.float32))
    spec = root / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""\
        name: tiny
        seed: 0
        entities:
          book: {{ids: book_ids.txt}}
          user: {{size: {n_user}}}
          word: {{size: {n_word}}}
        views:
          cover:
            rows: book
            tensor: {{shape: [3, 16, 16]}}
            source: {{reader: npy, path: covers.npy}}
            encoder: {{type: conv, params: {{channels: [4, 2], hidden: 16}}}}
          text:
            rows: book
            cols: word
            source: {{reader: npy, path: text.npy}}
            encoder: {{type: dense, params: {{hidden: [16]}}}}
            col_encoder: {{type: dense, params: {{hidden: [16]}}}}
          ratings:
            rows: user
            cols: book
            source: {{reader: npz, path: ratings.npz}}
            encoder: {{params: {{hidden: [16]}}}}
            col_encoder: {{params: {{hidden: [16]}}}}
          cooc:
            rows: word
            cols: word
            source: {{reader: npy, path: cooc.npy}}
            encoder: {{params: {{hidden: []}}}}
            col_encoder: {{params: {{hidden: []}}}}
        model: {{preset: mmeda2, dim: 8}}
        train: {{epochs: 2, batch_size: 16, device: cpu, tol: 0.0}}
        evaluate:
          split: {{test_fraction: 0.25, seed: 0}}
          targets:
            label: {{entity: book, path: label.npy, task: classification, probe: logistic}}
            score: {{entity: book, path: score.npy, task: regression, probe: ridge}}
        """))
    return spec


@pytest.fixture
def multiview(tmp_path) -> Path:
    return write_multiview(tmp_path / "data")


def plugin_rows(output: str) -> dict[str, tuple[str, str]]:
    """name → (kind, plugin) from the `mmfuse plugins` table (kind, name, plugin, package)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│|┃]", line)]
        cells = [c for c in cells if c]
        if len(cells) == 4 and cells[:3] != ["kind", "name", "plugin"]:
            rows[cells[1]] = (cells[0], cells[2])
    return rows


@pytest.fixture
def read_plugin_table():
    """The parser of the `mmfuse plugins` table (shared by the CLI and plugin tests)."""
    return plugin_rows


@pytest.fixture(scope="session")
def template(tmp_path_factory) -> Path:
    """The multiview project (spec and files) that the bad-input corpus copies and breaks."""
    root = tmp_path_factory.mktemp("template")
    write_multiview(root)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, template) -> Path:
    """``template`` trained for one epoch: the run folder that corpus cases copy."""
    from typer.testing import CliRunner

    from mmfuse.cli import app
    run = tmp_path_factory.mktemp("trained") / "run"
    result = CliRunner().invoke(app, ["train", str(template / "spec.yaml"), "--out", str(run),
                                      "-q", "--no-report", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    return run

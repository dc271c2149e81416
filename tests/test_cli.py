"""The ``mmfuse`` command line, driven in-process with Typer's CliRunner."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import traceback
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import yaml
from conftest import write_multiview
from typer.testing import CliRunner

import mmfuse
from mmfuse.build import build, count_parameters
from mmfuse.cli import app
from mmfuse.errors import SpecError
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec

ENTITIES = {"book": 48, "user": 32, "word": 24}
DIM = 8


def invoke(*args, **kwargs):
    return CliRunner().invoke(app, [str(a) for a in args], **kwargs)


def flat(output: str) -> str:
    """Output with runs of whitespace as one space (rich wraps long lines; see the xfail below)."""
    return " ".join(output.split())


def line_of(text: str, needle: str) -> int:
    """1-based line of the only line of ``text`` containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, (needle, hits)
    return hits[0]


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """The multiview spec trained for one epoch: (spec path, run folder)."""
    root = tmp_path_factory.mktemp("cli")
    spec = write_multiview(root / "data")
    run = root / "run"
    result = invoke("train", spec, "--out", run, "-q", "--epochs", 1)
    assert result.exit_code == 0, result.output
    return spec, run


# --------------------------------------------------------------------------- broken specs

BROKEN = {
    # name: (old, new, needle on the reported line, field, start of the message)
    "unknown-key": ("    source: {reader: npy, path: text.npy}\n",
                    "    source: {reader: npy, path: text.npy}\n    colour: red\n",
                    "colour: red", "views.text.colour",
                    "unknown key; did you mean 'columns'? known:"),
    "unknown-entity": ("    rows: user\n", "    rows: reader\n", "rows: reader",
                       "views.ratings.rows", "unknown entity 'reader'; known entities: book"),
    "wrong-shape": ("shape: [3, 16, 16]", "shape: [3, 8, 8]", "shape: [3, 8, 8]",
                    "views.cover.tensor.shape", "covers.npy has shape [48, 3, 16, 16]; expected"),
    "missing-file": ("path: text.npy", "path: gone.npy", "path: gone.npy",
                     "views.text.source.path", "file not found:"),
    "unknown-encoder": ("type: conv,", "type: convv,", "type: convv",
                        "views.cover.encoder.type", "unknown encoder 'convv'; known:"),
    "malformed-yaml": ("seed: 0\n", "seed: 0\n  extra: 1\n", "extra: 1", "<spec>",
                       "malformed YAML: mapping values are not allowed here"),
}


@pytest.fixture
def broken(tmp_path, monkeypatch, request) -> tuple[str, str]:
    """A broken copy of the multiview spec in the working directory: (expected start, text)."""
    old, new, needle, field, message = BROKEN[request.param]
    spec = write_multiview(tmp_path)
    text = spec.read_text()
    assert old in text
    text = text.replace(old, new, 1)
    spec.write_text(text)
    monkeypatch.chdir(tmp_path)
    return f"spec.yaml:{line_of(text, needle)} {field}: {message}", text


@pytest.mark.parametrize("broken", list(BROKEN), indirect=True)
@pytest.mark.parametrize("command", ["validate", "train"])
def test_broken_spec_exits_3_with_file_line_field(broken, command):
    expected, _ = broken
    result = invoke(command, "spec.yaml", *(["--out", "run", "-q"] if command == "train" else []))
    assert result.exit_code == 3, result.output
    assert expected in flat(result.output)
    assert "Traceback" not in result.output
    assert "problem in the spec" in result.output
    assert not Path("run", "checkpoint.pt").exists()


@pytest.mark.parametrize("broken", ["unknown-entity"], indirect=True)
def test_graph_command_reports_spec_errors(broken):
    expected, _ = broken
    result = invoke("graph", "spec.yaml")
    assert result.exit_code == 3
    assert expected in flat(result.output)


@pytest.mark.parametrize("broken", ["unknown-key", "wrong-shape"], indirect=True)
def test_debug_lets_the_spec_error_propagate(broken):
    result = invoke("--debug", "validate", "spec.yaml")
    assert isinstance(result.exception, SpecError)
    assert result.exit_code != 0
    text = "".join(traceback.format_exception(*result.exc_info))
    assert text.startswith("Traceback")
    assert "SpecError" in text
    env_debug = invoke("validate", "spec.yaml", env={"MMFUSE_DEBUG": "1"})
    assert isinstance(env_debug.exception, SpecError)


def test_spec_errors_all_reported_with_a_count(multiview, monkeypatch):
    text = multiview.read_text().replace("rows: user", "rows: reader").replace(
        "type: conv,", "type: convv,")
    multiview.write_text(text)
    monkeypatch.chdir(multiview.parent)
    result = invoke("validate", "spec.yaml")
    assert result.exit_code == 3
    out = flat(result.output)
    assert f"spec.yaml:{line_of(text, 'type: convv')} views.cover.encoder.type:" in out
    assert f"spec.yaml:{line_of(text, 'rows: reader')} views.ratings.rows:" in out
    assert "2 problems in the spec" in out


@pytest.mark.parametrize("broken", ["unknown-key"], indirect=True)
def test_each_issue_is_one_output_line(broken):
    result = invoke("validate", "spec.yaml")
    with pytest.raises(SpecError) as info:
        load_spec("spec.yaml")
    lines = result.output.splitlines()
    for issue in info.value.issues:
        assert len(str(issue)) > 100
        assert str(issue) in lines


def test_set_errors_point_at_set_on_the_command_line(multiview):
    result = invoke("validate", multiview, "--set", "train.epochs=0")
    assert result.exit_code == 3
    assert "--set train.epochs: Input should be greater than or equal to 1" in result.output


def test_missing_spec_file_is_a_usage_error(tmp_path):
    result = invoke("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_debug_traceback_from_the_installed_command(tmp_path):
    spec = write_multiview(tmp_path)
    spec.write_text(spec.read_text().replace("rows: user", "rows: reader"))
    exe = str(Path(sys.executable).with_name("mmfuse"))

    def run(*args):
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    # (without --debug the same error is one line and exit 3: tested in-process above)
    debug = run("--debug", "validate", "spec.yaml")
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "mmfuse.errors.SpecError" in debug.stderr
    # `python -m mmfuse` is the same command (what `torchrun -m mmfuse` runs)
    module = subprocess.run([sys.executable, "-m", "mmfuse", "validate", "spec.yaml"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert module.returncode == 3
    assert "unknown entity 'reader'" in module.stdout + module.stderr


# --------------------------------------------------------------------------- look before training


def test_validate_prints_graph_data_and_parameter_count(multiview):
    result = invoke("validate", multiview)
    assert result.exit_code == 0, result.output
    n = count_parameters(build(load_spec(multiview), get_plugins(), device="cpu").model)
    assert n > 0
    assert f"parameters: {n:,}" in result.output
    assert "data: cover [48, 3, 16, 16], text [48, 24], ratings [32, 48], cooc [24, 24]" in (
        result.output)
    assert "spec 'tiny': 3 entities, 4 views" in result.output
    assert "spec and data OK" in result.output


def test_graph_text(multiview):
    result = invoke("graph", multiview)
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.split()) for line in result.output.splitlines()]
    assert lines[0] == "spec 'tiny': 3 entities, 4 views"
    assert "book ← cover (row), text (row), ratings (col)" in lines
    assert "user ← ratings (row)" in lines
    assert "word ← text (col), cooc (row), cooc (col)" in lines
    assert "cover tensor book × [3×16×16] (npy)" in lines
    assert "ratings matrix user × book (npz)" in lines


def test_graph_dot_has_one_edge_per_view_entity_edge(multiview):
    result = invoke("graph", multiview, "--format", "dot")
    assert result.exit_code == 0, result.output
    out = result.output.strip()
    assert out.startswith('digraph "tiny" {')
    assert out.endswith("}")
    edge_lines = [line for line in out.splitlines() if "->" in line]
    edges = [re.fullmatch(r'\s*"view:(\w+)" -> "entity:(\w+)" \[label="(row|col)"\];', line)
             for line in edge_lines]
    assert all(edges), edge_lines
    spec = load_spec(multiview)
    expected = sorted([(v, s.rows, "row") for v, s in spec.views.items()]
                      + [(v, s.cols, "col") for v, s in spec.views.items() if s.cols])
    assert sorted(m.groups() for m in edges) == expected
    assert len(edge_lines) == 7
    nodes = re.findall(r'^\s*"(entity|view):(\w+)" \[label="(\w+)", shape=(\w+)\];$', out, re.M)
    assert {(k, n, shape) for k, n, _, shape in nodes} == {
        ("entity", "book", "ellipse"), ("entity", "user", "ellipse"),
        ("entity", "word", "ellipse"), ("view", "cover", "box3d"), ("view", "text", "box"),
        ("view", "ratings", "box"), ("view", "cooc", "box")}
    assert out.count("{") == out.count("}")


def test_plugins_lists_builtins_with_their_plugin(read_plugin_table):
    result = invoke("plugins")
    assert result.exit_code == 0, result.output
    rows = read_plugin_table(result.output)
    expected = {
        "dense": ("encoder", "encoders"), "conv": ("encoder", "encoders"),
        "npy": ("reader", "readers"), "npz": ("reader", "readers"),
        "images": ("reader", "readers"), "word2vec": ("reader", "readers"),
        "gaussian": ("likelihood", "likelihoods"), "bernoulli": ("likelihood", "likelihoods"),
        "goodreads": ("dataset", "goodreads"),
    }
    for name, row in expected.items():
        assert rows.get(name) == row, (name, result.output)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.output == f"mmfuse {mmfuse.__version__}\n"
    assert mmfuse.__version__ == version("mmfuse")


# --------------------------------------------------------------------------- train


def test_train_writes_the_run_folder(trained):
    spec_path, run = trained
    for name in ("resolved_spec.yaml", "manifest.json", "metrics.csv", "checkpoint.pt",
                 "evaluation.json"):
        assert (run / name).is_file(), name
    for entity, n in ENTITIES.items():
        z = np.load(run / "embeddings" / f"{entity}.npy")
        assert z.shape == (n, DIM)
        assert np.isfinite(z).all()
        ids = (run / "embeddings" / f"{entity}.ids.txt").read_text().splitlines()
        assert len(ids) == n
    book_ids = (run / "embeddings" / "book.ids.txt").read_text().splitlines()
    assert book_ids == [f"b{i}" for i in range(48)]
    assert (run / "embeddings" / "user.ids.txt").read_text().splitlines() == [
        str(i) for i in range(32)]

    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "done"
    assert manifest["name"] == "tiny"
    assert manifest["training"]["epochs_run"] == 1
    assert manifest["data"]["entities"] == ENTITIES
    assert manifest["spec_digest"] == load_spec(run / "resolved_spec.yaml").digest()

    with (run / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1
    assert "loss" in rows[0]
    assert float(rows[0]["loss"]) == pytest.approx(manifest["training"]["final_loss"], rel=1e-4)

    resolved = yaml.safe_load((run / "resolved_spec.yaml").read_text())
    assert resolved["train"]["epochs"] == 1
    assert Path(resolved["views"]["text"]["source"]["path"]) == spec_path.parent / "text.npy"

    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert "model" in state

    evaluation = json.loads((run / "evaluation.json").read_text())
    assert set(evaluation["targets"]) == {"label", "score"}
    for target in evaluation["targets"].values():
        assert set(target["metrics"]) <= set(target["floor"])


def test_train_output_and_quiet(trained):
    spec_path, run = trained
    # the fixture trained with -q; check what a quiet run prints by retraining elsewhere
    result = invoke("train", spec_path, "--out", run.parent / "again", "-q", "--epochs", 1)
    assert result.exit_code == 0, result.output
    assert "trained 1 epochs" in result.output
    assert f"run: {run.parent / 'again'}" in result.output
    assert "epoch   1" not in result.output
    assert "trivial floor" in result.output  # quiet: no progress, the evaluation table still
    silent = invoke("train", spec_path, "--out", run.parent / "silent", "-q", "--no-report",
                    "--epochs", 1)
    assert silent.exit_code == 0 and "trivial floor" not in silent.output
    assert (run.parent / "silent" / "evaluation.json").is_file()
    first = np.load(run / "embeddings" / "book.npy")
    again = np.load(run.parent / "again" / "embeddings" / "book.npy")
    np.testing.assert_allclose(again, first, atol=1e-6)  # same spec, seed, device


def test_train_refuses_an_existing_run_and_leaves_it_alone(trained):
    spec_path, run = trained
    before = snapshot(run)
    result = invoke("train", spec_path, "--out", run, "-q", "--epochs", 1)
    assert result.exit_code == 1
    assert "already holds a run" in result.output
    assert "--resume" in result.output
    assert "Traceback" not in result.output
    assert snapshot(run) == before


def test_resume_without_a_checkpoint_is_an_error(trained, tmp_path):
    spec_path, _ = trained
    out = tmp_path / "empty"
    result = invoke("train", spec_path, "--out", out, "--resume", "-q", "--epochs", 1)
    assert result.exit_code == 1
    assert "nothing to resume" in result.output
    assert not (out / "checkpoint.pt").exists()
    result = invoke("train", spec_path, "--resume", "-q")
    assert result.exit_code == 2
    assert "--resume needs --out" in result.output


# --------------------------------------------------------------------------- use a run


def test_evaluate_recreates_evaluation_json(trained, tmp_path):
    _, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    original = json.loads((copy / "evaluation.json").read_text())
    (copy / "evaluation.json").unlink()
    result = invoke("evaluate", copy)
    assert result.exit_code == 0, result.output
    again = json.loads((copy / "evaluation.json").read_text())
    assert set(again) == set(original)
    assert set(again["targets"]) == {"label", "score"}
    for name, target in original["targets"].items():
        assert again["targets"][name]["metrics"] == pytest.approx(target["metrics"])
        assert again["targets"][name]["floor"] == pytest.approx(target["floor"])
    assert "label" in result.output and "score" in result.output


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 1
    assert "not an mmfuse run folder" in flat(result.output)


def test_embed_csv_has_an_id_column(trained, tmp_path):
    _, run = trained
    out = tmp_path / "f.csv"
    result = invoke("embed", run, "--entity", "book", "--out", out)
    assert result.exit_code == 0, result.output
    with out.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id", *(f"z{i}" for i in range(DIM))]
    assert [r[0] for r in rows[1:]] == [f"b{i}" for i in range(48)]
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_allclose(values, np.load(run / "embeddings" / "book.npy"), rtol=1e-5,
                               atol=1e-7)


def test_embed_unknown_entity_lists_known(trained, tmp_path):
    _, run = trained
    result = invoke("embed", run, "--entity", "nobody", "--out", tmp_path / "f.npy")
    assert result.exit_code == 1
    assert "no embeddings for entity 'nobody'" in result.output
    assert "known: book, user, word" in result.output


def ratings_columns(data_dir: Path, fill: float) -> np.ndarray:
    """The ratings view's columns (book is its column entity): ratingsᵀ, missing cells = fill."""
    ratings = sp.load_npz(data_dir / "ratings.npz").tocoo()
    dense = np.full(ratings.shape, fill, dtype=np.float32)
    dense[ratings.row, ratings.col] = ratings.data
    return dense.T.copy()


@pytest.mark.parametrize("form", ["sparse-npz", "missing-as-nan"])
def test_embed_new_data_reproduces_training_embeddings(trained, tmp_path, form):
    spec_path, run = trained
    data_dir = spec_path.parent
    if form == "sparse-npz":
        ratings = tmp_path / "ratings_cols.npz"
        sp.save_npz(ratings, sp.csr_array(sp.load_npz(data_dir / "ratings.npz").T))
    else:
        ratings = tmp_path / "ratings_cols.npy"
        np.save(ratings, ratings_columns(data_dir, np.nan))
    out = tmp_path / "new.npy"
    result = invoke("embed", run, "--entity", "book", "--out", out,
                    "--data", f"cover={data_dir / 'covers.npy'}",
                    "--data", f"text={data_dir / 'text.npy'}",
                    "--data", f"ratings={ratings}")
    assert result.exit_code == 0, result.output
    z = np.load(out)
    assert z.shape == (48, DIM)
    np.testing.assert_allclose(z, np.load(run / "embeddings" / "book.npy"), atol=1e-5)
    assert out.with_suffix(".ids.txt").read_text().splitlines() == [str(i) for i in range(48)]


def test_embed_new_data_from_some_views_says_what_it_left_out(trained, tmp_path):
    spec_path, run = trained  # mmeda2: trained without view dropout, and told so
    result = invoke("embed", run, "--entity", "book", "--out", tmp_path / "x.npy",
                    "--data", f"text={spec_path.parent / 'text.npy'}")
    assert result.exit_code == 0, result.output
    out = flat(result.output)
    assert "from text only (no data for cover, ratings)" in out
    assert "trained without view dropout" in out
    assert np.load(tmp_path / "x.npy").shape == (48, 8)
    result = invoke("embed", run, "--entity", "book", "--out", tmp_path / "y.npy",
                    "--data", f"cooc={spec_path.parent / 'cooc.npy'}")
    assert result.exit_code == 1 and "not used: ['cooc']" in flat(result.output)


def test_embed_new_data_with_reader_row_ids(tmp_path):
    spec = write_multiview(tmp_path / "data")
    spec.write_text(spec.read_text().replace(
        "source: {reader: npy, path: text.npy}",
        "source: {reader: npy, path: text.npy, params: {row_ids: book_ids.txt}}"))
    run = tmp_path / "run"
    assert invoke("train", spec, "--out", run, "-q", "--epochs", 1).exit_code == 0
    np.save(tmp_path / "r.npy", ratings_columns(spec.parent, np.nan))
    result = invoke("embed", run, "--entity", "book", "--out", tmp_path / "new.npy",
                    "--data", f"cover={spec.parent / 'covers.npy'}",
                    "--data", f"text={spec.parent / 'text.npy'}",
                    "--data", f"ratings={tmp_path / 'r.npy'}")
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- data
# `mmfuse data prepare goodreads` now prepares the real UCSD files (--books/--genres); the
# synthetic sample is what the goodreads dataset writes when a spec's `dataset:` asks for it.

GOODREADS_SPEC = """\
name: gr
dataset: {name: goodreads, root: gr, params: {n_books: 60, image_size: 16}}
entities:
  book: {ids: gr/book_ids.txt}
views:
  cover:
    rows: book
    tensor: {shape: [3, 16, 16]}
    source: {reader: npy, path: gr/covers.npy}
    encoder: {type: conv, params: {channels: [4], hidden: 8}}
model: {dim: 4}
train: {epochs: 1, batch_size: 30, device: cpu}
"""


def test_spec_dataset_writes_the_synthetic_goodreads_sample(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(GOODREADS_SPEC)
    result = invoke("validate", spec)
    assert result.exit_code == 0, result.output
    assert "goodreads: SYNTHETIC Goodreads-shaped sample (60 books, seed 0)" in flat(result.output)
    out = tmp_path / "gr"
    assert len((out / "book_ids.txt").read_text().splitlines()) == 60
    covers = np.load(out / "covers.npy")
    assert covers.shape == (60, 3, 16, 16)
    assert covers.dtype == np.uint8
    assert np.load(out / "is_fiction.npy").shape == (60,)
    assert np.load(out / "average_rating.npy").shape == (60,)
    assert len((out / "descriptions.txt").read_text().splitlines()) == 60
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["n_books"], manifest["image_size"]) == (60, 16)
    assert "data: cover [60, 3, 16, 16]" in result.output


def test_spec_dataset_with_unknown_params_is_a_spec_error(tmp_path, monkeypatch):
    (tmp_path / "spec.yaml").write_text(GOODREADS_SPEC.replace("n_books: 60", "n_boks: 60"))
    monkeypatch.chdir(tmp_path)
    result = invoke("validate", "spec.yaml")
    assert result.exit_code == 3
    out = flat(result.output)
    assert "spec.yaml:2 dataset: goodreads: unknown params ['n_boks']" in out
    assert "Traceback" not in result.output
    assert not (tmp_path / "gr" / "covers.npy").exists()


def test_schema_is_the_spec_json_schema():
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    assert set(schema["properties"]) == set(mmfuse.Spec.model_fields)
    assert set(schema["required"]) == {"name", "entities", "views"}
    assert schema["additionalProperties"] is False  # unknown keys are errors in editors too
    view = schema["$defs"]["ViewSpec"]["properties"]
    assert view["likelihood"]["description"].startswith("a registered likelihood by name")
    assert [f["type"] for f in view["likelihood"]["anyOf"]] == ["string", "object"]


def test_shell_completion_is_offered():
    result = invoke("--help")
    assert "--install-completion" in result.output


def test_a_bad_spec_is_answered_without_importing_torch(tmp_path):
    """`validate` checks the spec, its references and its data before it imports torch to
    build the model: a mistake is answered in about a second."""
    np.save(tmp_path / "m.npy", np.zeros((4, 3), np.float32))
    bad = {"schema.yaml": "views:\n  m: {rows: a, cols: b, wieght: 2,"
                          " source: {reader: npy, path: m.npy}}\n",
           "file.yaml": "views:\n  m: {rows: a, cols: b, source: {reader: npy, path: no.npy}}\n"}
    for name, views in bad.items():
        (tmp_path / name).write_text("name: t\nentities: {a: {}, b: {}}\n" + views)
    code = ("import sys\n"
            "from typer.testing import CliRunner\n"
            "from mmfuse.cli import app\n"
            "for name in sys.argv[1:]:\n"
            "    r = CliRunner().invoke(app, ['validate', name])\n"
            "    assert r.exit_code == 3, r.output\n"
            "print(sorted({'torch', 'sklearn'} & {m.split('.')[0] for m in sys.modules}))\n")
    out = subprocess.run([sys.executable, "-c", code, *bad], cwd=tmp_path, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert out.strip() == "[]"


def test_the_progress_bar_shows_the_whole_runs_time_left(monkeypatch):
    from types import SimpleNamespace

    import mmfuse.cli.progress as progress

    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    batcher = SimpleNamespace(epoch_size=lambda: 100, steps_per_epoch=lambda: 10,
                              primary_is_view=False, primary="book")
    trainer = SimpleNamespace(built=SimpleNamespace(batcher=batcher), epoch=0)
    bar = progress.ProgressBar(total_epochs=3)
    bar.on_train_start(trainer)  # t = 0
    bar.on_epoch_start(trainer, 1, 10)  # t = 1
    bar.on_step_end(trainer, 1, {"loss": 1.0})  # t = 2, 3: 1 step in 3 s, 29 steps to go
    terms = bar.progress.tasks[0].fields["terms"]
    bar.on_train_end(trainer)
    assert "run left ≈1:27" in terms

"""The bad-input corpus: specs and command lines as a careless or hostile user would give
them (data files: ``test_bad_data.py``; run folders, checkpoints, signals in training:
``test_bad_runs.py``), signals at start-up, and byte-level mutations of every file.  Every
case must end in a clear project message and its documented exit code (README, "Errors"),
never an internal error or a traceback."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time

import hypothesis.strategies as st
import pytest
from badcase import (
    Case,
    both,
    flat,
    run_case,
    spec_append,
    spec_replace,
    write_bytes,
    write_text,
)
from hypothesis import HealthCheck, given, settings
from typer.testing import CliRunner

from mmfuse.cli import app

VALIDATE = ("validate", "{spec}")
TRAIN = ("train", "{spec}", "--out", "{root}/run", "-q", "--no-report", "--epochs", "1")


def text_view(line: str):
    """An edit adding ``line`` to the spec's `text` view."""
    source = "    source: {reader: npy, path: text.npy}\n"
    return spec_replace(source, f"{source}    {line}\n")

CASES = [
    # ------------------------------------------------------------------ spec: YAML
    Case("yaml-malformed", VALIDATE, 3, "malformed YAML",
         spec_replace("seed: 0\n", "seed: 0\n  extra: 1\n")),
    Case("yaml-not-a-mapping", VALIDATE, 3, "a spec is a YAML mapping",
         write_text("spec.yaml", "- a\n- b\n")),
    Case("yaml-empty", VALIDATE, 3, "name", write_text("spec.yaml", "")),
    Case("yaml-non-utf8", VALIDATE, 3, "UTF-8",
         write_bytes("spec.yaml", b"name: caf\xe9\nseed: 0\n")),
    Case("yaml-binary", VALIDATE, 3, "spec", write_bytes("spec.yaml", bytes(range(256)))),
    Case("yaml-alias-bomb", VALIDATE, 3, "alias", write_text("spec.yaml", "".join(
        [f"a{i}: &a{i + 1} [" + ", ".join([f"*a{i}"] * 9) + "]\n" for i in range(1, 9)]
    ).replace("a1: &a2 [*a1", "a0: &a1 [x]\na1: &a2 [*a1", 1))),
    Case("yaml-deep-nesting", VALIDATE, 3, "nest",
         write_text("spec.yaml", "name: x\nviews: " + "[" * 5000 + "]" * 5000 + "\n")),
    Case("yaml-huge", VALIDATE, 3, "too large",
         write_text("spec.yaml", "name: x\njunk: [" + "1, " * 3_000_000 + "1]\n")),
    Case("yaml-recursive-alias", VALIDATE, 3, "recursive",
         write_text("spec.yaml", "name: &x\n  a: *x\n")),
    Case("yaml-duplicate-key", VALIDATE, 3, "duplicate key", spec_append("seed: 1\n")),
    Case("yaml-tab-indent", VALIDATE, 3, "malformed YAML",
         spec_replace("name: tiny\n", "name: tiny\n\tseed: 1\n")),
    Case("yaml-python-tag", VALIDATE, 3, "malformed YAML",
         spec_replace("name: tiny\n", "name: !!python/object/apply:os.system [echo hi]\n")),
    Case("yaml-key-is-a-list", VALIDATE, 3, "keys must be plain names",
         spec_append("? [a, b]\n: 1\n")),
    # ------------------------------------------------------------------ spec: fields
    Case("unknown-top-key", VALIDATE, 3, ("unknown key", "did you mean 'views'"),
         spec_replace("views:\n", "viewz:\n")),
    Case("unknown-view-key", VALIDATE, 3, ("views.text.colour", "unknown key"),
         text_view("colour: red")),
    Case("typo-in-view-key", VALIDATE, 3, "did you mean 'likelihood'",
         text_view("likelihod: gaussian")),
    Case("seed-negative", VALIDATE, 3, "seed", spec_replace("seed: 0", "seed: -1")),
    Case("seed-huge", VALIDATE, 3, "seed", spec_replace("seed: 0", "seed: 1180591620717411303424")),
    Case("seed-string", VALIDATE, 3, "seed", spec_replace("seed: 0", "seed: zero")),
    Case("lr-inf", VALIDATE, 3, "train.lr", spec_replace("tol: 0.0", "tol: 0.0, lr: .inf")),
    Case("lr-nan", VALIDATE, 3, "train.lr", spec_replace("tol: 0.0", "tol: 0.0, lr: .nan")),
    Case("lr-zero", VALIDATE, 3, "train.lr", spec_replace("tol: 0.0", "tol: 0.0, lr: 0")),
    Case("lr-negative", VALIDATE, 3, "train.lr", spec_replace("tol: 0.0", "tol: 0.0, lr: -1")),
    Case("weight-inf", VALIDATE, 3, "weight",
         text_view("weight: .inf")),
    Case("weight-negative", VALIDATE, 3, "weight",
         text_view("weight: -2")),
    Case("dim-huge", VALIDATE, 3, "model.dim", spec_replace("dim: 8", "dim: 1000000000")),
    Case("dim-zero", VALIDATE, 3, "model.dim", spec_replace("dim: 8", "dim: 0")),
    Case("hidden-huge", VALIDATE, 3, "hidden",
         spec_replace("{type: dense, params: {hidden: [16]}}",
                      "{type: dense, params: {hidden: [1000000000]}}")),
    Case("epochs-negative", VALIDATE, 3, "train.epochs",
         spec_replace("epochs: 2", "epochs: -1")),
    Case("batch-zero", VALIDATE, 3, "train.batch_size",
         spec_replace("batch_size: 16", "batch_size: 0")),
    Case("name-absolute-path", VALIDATE, 3, "name", spec_replace("name: tiny", "name: /tmp/x")),
    Case("name-dotdot", VALIDATE, 3, "name", spec_replace("name: tiny", "name: ../up")),
    Case("unknown-entity", VALIDATE, 3, "unknown entity 'reader'",
         spec_replace("    rows: user\n", "    rows: reader\n")),
    Case("unknown-encoder", VALIDATE, 3, "unknown encoder 'convv'",
         spec_replace("type: conv,", "type: convv,")),
    Case("unknown-reader", VALIDATE, 3, "unknown reader 'npyy'",
         spec_replace("reader: npy, path: text.npy", "reader: npyy, path: text.npy")),
    Case("unknown-likelihood", VALIDATE, 3, "likelihood",
         text_view("likelihood: gauss")),
    Case("unknown-preset", VALIDATE, 3, "model.preset",
         spec_replace("preset: mmeda2", "preset: mmeda9")),
    Case("reader-param-typo", VALIDATE, 3, ("mmapp", "did you mean 'mmap'"),
         spec_replace("reader: npy, path: text.npy", "reader: npy, path: text.npy, "
                      "params: {mmapp: false}")),
    Case("reader-param-wrong-type", VALIDATE, 3, "mmap",
         spec_replace("reader: npy, path: text.npy", "reader: npy, path: text.npy, "
                      "params: {mmap: sometimes}")),
    Case("encoder-param-typo", VALIDATE, 3, "hiden",
         spec_replace("{type: dense, params: {hidden: [16]}}",
                      "{type: dense, params: {hiden: [16]}}")),
    Case("every-phase-at-once", VALIDATE, 3,
         ("views.text.colour", "unknown entity 'reader'", "file not found", "3 problems"),
         both(text_view("colour: red"),
              spec_replace("path: cooc.npy", "path: gone.npy"),
              spec_replace("    rows: user\n", "    rows: reader\n"))),
    # ------------------------------------------------------------------ --set
    Case("set-double-dot", ("validate", "{spec}", "--set", "train..epochs=3"), 3,
         ("--set", "train..epochs")),
    Case("set-no-equals", ("validate", "{spec}", "--set", "train.epochs"), 3,
         ("--set", "expected key.path=value")),
    Case("set-unknown-key", ("validate", "{spec}", "--set", "train.epoch=3"), 3,
         ("--set", "did you mean 'epochs'")),
    Case("set-not-a-mapping", ("validate", "{spec}", "--set", "seed.x=3"), 3,
         ("--set", "not a mapping")),
    Case("set-bad-value", ("validate", "{spec}", "--set", "train.epochs=many"), 3,
         ("--set", "train.epochs")),
    # ------------------------------------------------------------------ command line
    Case("spec-missing", ("validate", "{root}/nope.yaml"), 2, "does not exist"),
    Case("spec-is-a-folder", ("validate", "{root}"), 2, "is a directory"),
    Case("unknown-command", ("trian",), 2, "No such command"),
    Case("epochs-not-a-number", ("train", "{spec}", "--epochs", "x"), 2, "--epochs"),
    Case("nproc-zero", ("train", "{spec}", "--nproc", "0"), 2, "--nproc"),
    Case("resume-without-out", ("train", "{spec}", "--resume"), 2, "--resume needs --out"),
    Case("device-unknown", TRAIN + ("--device", "tpu"), 3, "train.device"),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, template, request, tmp_path):
    trained = request.getfixturevalue("trained_run") if case.needs_run else None
    run_case(case, template, trained, tmp_path)


# --------------------------------------------------------------------------- signals at start-up


@pytest.mark.parametrize(("signum", "code", "says"), [
    (signal.SIGINT, 130, "interrupted while starting"),
    (signal.SIGTERM, 143, "terminated while starting")])
def test_a_signal_while_starting_exits_with_one_line(signum, code, says):
    """Ctrl-C or SIGTERM while the command imports torch and the plugins: the documented exit
    code and one line, not a 40-line KeyboardInterrupt traceback or a silent death."""
    code_ = "import mmfuse.__main__ as m; print('ready', flush=True); m.main()"
    child = subprocess.Popen([sys.executable, "-c", code_, "--help"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    time.sleep(0.1)  # main() has set its handlers; importing torch and the plugins takes >1 s
    child.send_signal(signum)
    out, err = child.communicate(timeout=60)
    assert child.returncode == code, (out, err)
    assert err.strip() == says


# --------------------------------------------------------------------------- byte-level mutations

MUTATED = ["spec.yaml", "text.npy", "ratings.npz", "covers.npy", "book_ids.txt", "label.npy"]
EDITS = st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                           st.floats(0, 1, exclude_max=True), st.integers(0, 255)),
                 min_size=1, max_size=4)


def _mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for op, where, byte in edits:
        i = int(where * len(out)) if out else 0
        if op == "flip" and out:
            out[i] ^= byte or 1
        elif op == "insert":
            out[i:i] = bytes([byte])
        elif op == "delete" and out:
            del out[i]
        elif op == "truncate":
            del out[i:]
    return bytes(out)


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(name=st.sampled_from(MUTATED), edits=EDITS)
def test_any_byte_mutation_gives_ok_or_a_project_error(template, tmp_path_factory, name, edits):
    """A spec or data file with bytes flipped, inserted, deleted or cut off: `validate` says
    OK (exit 0) or gives a project error (exit 1 or 3) — never an internal error."""
    root = tmp_path_factory.mktemp("mutant")
    shutil.copytree(template, root, dirs_exist_ok=True)
    (root / name).write_bytes(_mutate((root / name).read_bytes(), edits))
    result = CliRunner().invoke(app, ["validate", str(root / "spec.yaml")])
    out = flat(result.output)
    assert result.exit_code in (0, 1, 3), out
    assert "internal error" not in out and "Traceback" not in result.output, out
    assert result.exception is None or isinstance(result.exception, SystemExit), out

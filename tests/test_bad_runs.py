"""The bad-input corpus: run folders, checkpoints and signals.  Every case must end in a
clear project message and its documented exit code (README, "Errors"), never an internal
error or a traceback (harness: ``badcase.py``).  The trained run a case copies (``{run}``)
lies beside the project copy (``root.parent / "run"``), and was trained where the template
project lies: every ``--resume`` of it is also a resume after moving the project folder."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from badcase import Case, both, run_case, write_text
from typer.testing import CliRunner

import mmfuse.run
from mmfuse.cli import app

TRAIN = ("train", "{spec}", "--out", "{root}/run", "-q", "--no-report", "--epochs", "1")
RESUME = ("train", "{spec}", "--out", "{run}", "--resume", "-q", "--no-report")
EMBED = ("embed", "{run}", "--entity", "book", "--out", "{root}/z.npy",
         "--data", "text={root}/text.npy")
PREDICT = ("predict", "{run}", "--view", "ratings", "--rows", "0", "--top", "3")


def _run(root: Path) -> Path:
    return root.parent / "run"


def _unchanged(*names: str):
    """A check that the named files still hold what the edit wrote (no lost data)."""
    def check(root: Path) -> None:
        for name in names:
            assert (root / name).read_bytes() == b"mine\n", name
    return check


def _absent(*names: str):
    def check(root: Path) -> None:
        for name in names:
            assert not (root / name).exists(), name
    return check


def _checkpoint_epoch(epoch: int):
    """A check that the run's checkpoint is intact and holds epoch ``epoch``."""
    def check(root: Path) -> None:
        state = mmfuse.run.RunDir(_run(root)).load_checkpoint()
        assert state["epoch"] == epoch
        assert not list(_run(root).glob("**/.*.tmp"))
    return check


def _checkpoint_bytes(data: bytes):
    def edit(root: Path) -> None:
        (_run(root) / "checkpoint.pt").write_bytes(data)
    return edit


def _truncate(root: Path) -> None:
    file = _run(root) / "checkpoint.pt"
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def _torch_file(make):
    """Replace the run's checkpoint by ``torch.save(make(state))`` (state: the real one)."""
    def edit(root: Path) -> None:
        file = _run(root) / "checkpoint.pt"
        state = torch.load(file, weights_only=True)
        torch.save(make(state), file)
    return edit


class Stranger:
    """A custom object: a pickle of it is refused by ``weights_only`` loading."""


def _pickled_object(state):
    return {**state, "extra": Stranger()}


def _reshaped(state):
    key = next(iter(state["model"]))
    return {**state, "model": {**state["model"], key: torch.zeros(3, 3)}}


def _other_identity(state):
    return {**state, "spec_digest": "0" * 16}


def _compiled_names(state):
    return {**state, "model": {f"_orig_mod.{k}": v for k, v in state["model"].items()}}


def _manifest(edit):
    """Rewrite the run's manifest through ``edit(dict)``."""
    def change(root: Path) -> None:
        file = _run(root) / "manifest.json"
        file.write_text(json.dumps(edit(json.loads(file.read_text()))))
    return change


def _stale_temp_files(root: Path) -> None:
    run = _run(root)
    (run / ".checkpoint.pt.dead0001.tmp").write_bytes(b"half a checkpoint")
    (run / "embeddings" / ".book.npy.dead0002.tmp").write_bytes(b"half")


_held: list[int] = []


def _hold_lock(root: Path) -> None:
    """Another training holds the run folder's lock (a second open file: flock locks of
    two open files conflict even in one process)."""
    fd = os.open(_run(root) / ".lock", os.O_RDWR | os.O_CREAT)
    os.write(fd, b"4242\n")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held.append(fd)


def _release_lock(root: Path) -> None:
    os.close(_held.pop())
    _checkpoint_epoch(1)(root)


CORRUPT = ("restore it from a copy, or train again",)

CASES = [
    # ------------------------------------------------------------------ run folders
    Case("out-is-a-file", TRAIN[:3] + ("{root}/spec.yaml", "-q", "--epochs", "1"), 1,
         ("--out", "project/spec.yaml", "not a folder")),
    Case("out-under-a-file", TRAIN[:3] + ("{root}/spec.yaml/run", "-q", "--epochs", "1"), 1,
         ("--out", "project/spec.yaml is a file")),
    Case("out-holds-user-files", TRAIN[:3] + ("{root}/mine", "-q", "--epochs", "1"), 1,
         ("project/mine", "not an mmfuse run folder", "manifest.json, metrics.csv",
          "nothing was written"),
         both(write_text("mine/manifest.json", "mine\n"), write_text("mine/metrics.csv", "mine\n")),
         check=both(_unchanged("mine/manifest.json", "mine/metrics.csv"),
                    _absent("mine/.lock", "mine/checkpoint.pt"))),
    Case("out-holds-a-user-json-manifest", TRAIN[:3] + ("{root}/mine", "-q"), 1,
         "not an mmfuse run folder", write_text("mine/manifest.json", '{"name": "tiny"}\n')),
    Case("out-holds-a-user-checkpoint", TRAIN[:3] + ("{root}/mine", "-q"), 1,
         "not an mmfuse run folder", write_text("mine/checkpoint.pt", "mine\n"),
         check=_unchanged("mine/checkpoint.pt")),
    Case("out-is-the-project", TRAIN[:3] + ("{root}", "-q"), 1,
         ("not an mmfuse run folder", "book_ids.txt", "more)")),
    Case("out-already-a-run", ("train", "{spec}", "--out", "{run}", "-q", "--epochs", "1"), 1,
         ("/run already holds a run", "add --resume"), needs_run=True,
         check=_checkpoint_epoch(1)),
    Case("out-empty-folder", TRAIN, 0, "trained 1 epochs",
         edit=lambda root: (root / "run").mkdir()),
    Case("out-left-by-a-killed-start", TRAIN, 0, "trained 1 epochs",
         edit=both(write_text("run/.lock", "123\n"),
                   write_text("run/.manifest.json.a1b2c3d4.tmp", "{")),
         check=_absent("run/.manifest.json.a1b2c3d4.tmp")),
    Case("out-in-use", RESUME + ("--epochs", "2"), 1,
         ("/run is in use by another training", "process 4242"), _hold_lock,
         check=_release_lock, needs_run=True),
    Case("resume-nothing", TRAIN + ("--resume",), 1, "nothing to resume"),
    Case("resume-user-folder", ("train", "{spec}", "--out", "{root}/mine", "--resume", "-q"), 1,
         ("project/mine is not an mmfuse run folder", "nothing to resume"),
         both(write_text("mine/checkpoint.pt", "mine\n"), write_text("mine/manifest.json",
                                                                     "mine\n")),
         check=_unchanged("mine/checkpoint.pt", "mine/manifest.json")),
    Case("resume-removes-stale-temp-files", RESUME + ("--epochs", "2"), 0, "trained 2 epochs",
         _stale_temp_files, check=_checkpoint_epoch(2), needs_run=True),
    Case("resume-a-run-of-older-mmfuse", RESUME + ("--epochs", "2"), 0, "trained 2 epochs",
         _manifest(lambda m: {k: v for k, v in m.items() if k != "format"}), needs_run=True),
    Case("resume-after-moving-the-project", RESUME + ("--epochs", "2"), 0, "trained 2 epochs",
         needs_run=True, check=_checkpoint_epoch(2)),
    Case("resume-with-a-lower-lr-and-more-epochs",
         RESUME + ("--epochs", "3", "--set", "train.optimizer.lr=0.0001", "--set",
                   "train.tol=0.5", "--set", "train.patience=5"), 0,
         "trained 3 epochs", needs_run=True),
    Case("resume-with-another-model", RESUME + ("--set", "model.dim=4"), 1,
         ("different model, data or seed", "resolved_spec.yaml"), needs_run=True,
         check=_checkpoint_epoch(1)),
    # ------------------------------------------------------------------ checkpoints
    Case("resume-empty-checkpoint", RESUME, 1, ("/run/checkpoint.pt", "empty", *CORRUPT),
         _checkpoint_bytes(b""), needs_run=True),
    Case("resume-truncated-checkpoint", RESUME, 1,
         ("/run/checkpoint.pt cannot be read", "truncated", *CORRUPT), _truncate,
         needs_run=True),
    Case("resume-random-checkpoint", RESUME, 1, ("/run/checkpoint.pt cannot be read",),
         _checkpoint_bytes(np.random.default_rng(0).bytes(5000)), needs_run=True),
    Case("resume-text-checkpoint", RESUME, 1, "cannot be read", _checkpoint_bytes(b"hello\n"),
         needs_run=True),
    Case("resume-refused-checkpoint", RESUME, 1,
         ("/run/checkpoint.pt holds Python objects", "not a checkpoint mmfuse wrote"),
         _torch_file(_pickled_object), needs_run=True),
    Case("resume-foreign-tensor", RESUME, 1, ("/run/checkpoint.pt is not an mmfuse checkpoint",
                                              "Tensor"),
         _torch_file(lambda state: torch.zeros(3)), needs_run=True),
    Case("resume-foreign-mapping", RESUME, 1, ("is not an mmfuse checkpoint", "without model"),
         _torch_file(lambda state: {"weights": torch.zeros(3)}), needs_run=True),
    Case("resume-wrong-shaped-checkpoint", RESUME, 1,
         ("/run/checkpoint.pt holds another model's weights", "size mismatch"),
         _torch_file(_reshaped), needs_run=True),
    Case("resume-another-runs-checkpoint", RESUME, 1, "different model, data or seed",
         _torch_file(_other_identity), needs_run=True),
    Case("resume-compiled-names", RESUME + ("--epochs", "2"), 0, "trained 2 epochs",
         _torch_file(_compiled_names), needs_run=True),
    Case("embed-empty-checkpoint", EMBED, 1, ("/run/checkpoint.pt", "empty"),
         _checkpoint_bytes(b""), needs_run=True),
    Case("embed-refused-checkpoint", EMBED, 1, "holds Python objects",
         _torch_file(_pickled_object), needs_run=True),
    Case("embed-wrong-shaped-checkpoint", EMBED, 1, "holds another model's weights",
         _torch_file(_reshaped), needs_run=True),
    Case("embed-another-runs-checkpoint", EMBED, 1, ("different model, data or seed",
                                                     "copied from another run"),
         _torch_file(_other_identity), needs_run=True),
    Case("embed-compiled-names", EMBED[:6] + ("--data", "text={root}/text.npy",
                                              "--data", "cover={root}/covers.npy",
                                              "--data", "ratings={root}/ratings_t.npy"), 0,
         "embeddings of 'book'",
         both(_torch_file(_compiled_names),
              lambda root: np.save(root / "ratings_t.npy", np.zeros((48, 32), np.float32))),
         needs_run=True),
    Case("predict-truncated-checkpoint", PREDICT, 1, "cannot be read", _truncate,
         needs_run=True),
    Case("predict-foreign-checkpoint", PREDICT, 1, "not an mmfuse checkpoint",
         _torch_file(lambda state: [1, 2, 3]), needs_run=True),
    Case("predict-no-checkpoint", PREDICT, 1, "no checkpoint in /",
         lambda root: (_run(root) / "checkpoint.pt").unlink(), needs_run=True),
    # ------------------------------------------------------------------ divergence
    Case("diverges-in-the-first-epoch", TRAIN + ("--set", "train.optimizer.lr=10"), 1,
         ("training diverged at epoch 1", "learning rate 10", "no checkpoint was written",
          "--set train.optimizer.lr=1"),
         check=_absent("run/embeddings", "run/checkpoint.pt")),
    Case("diverges-after-a-good-epoch",
         RESUME + ("--epochs", "3", "--set", "train.optimizer.lr=10"), 1,
         ("training diverged at epoch 2", "the checkpoint of epoch 1 is kept",
          "continue from the last good checkpoint with: mmfuse train",
          "--resume --set train.optimizer.lr=1 --epochs 3"),
         needs_run=True, check=_checkpoint_epoch(1)),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, template, request, tmp_path):
    trained = request.getfixturevalue("trained_run") if case.needs_run else None
    run_case(case, template, trained, tmp_path)


def test_a_refused_checkpoint_never_advises_loading_it_unsafely(template, trained_run,
                                                                tmp_path):
    case = next(c for c in CASES if c.id == "resume-refused-checkpoint")
    out = run_case(case, template, trained_run, tmp_path)
    assert "weights_only" not in out and "trust" not in out, out


# ---------------------------------------------------------------------- faults while writing


def _fail_on(monkeypatch, name: str, code: int, after: int = 0) -> None:
    """Writing the run file ``name`` raises OSError(code) (after ``after`` good writes),
    once part of it is written, as a full disk does."""
    real = mmfuse.run.atomic_write
    seen = [0]

    def atomic_write(path, write):
        if path.name == name:
            seen[0] += 1
            if seen[0] > after:
                def failing(fh):
                    fh.write(b"part")
                    raise OSError(code, os.strerror(code))
                return real(path, failing)
        return real(path, write)

    monkeypatch.setattr(mmfuse.run, "atomic_write", atomic_write)


@pytest.mark.parametrize(("code", "says"), [(errno.ENOSPC, "the disk is full"),
                                            (errno.EACCES, "permission denied")])
def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_last_one(
        code, says, template, trained_run, tmp_path, monkeypatch):
    _fail_on(monkeypatch, "checkpoint.pt", code)
    case = Case("write-fails", RESUME + ("--epochs", "3", "--set", "train.tol=0"), 1,
                ("cannot write", f"/run/checkpoint.pt: {says}", "previous version",
                 "continue from the last checkpoint with: mmfuse train",
                 "--resume --set train.tol=0 --epochs 3"),
                needs_run=True, check=_checkpoint_epoch(1))
    run_case(case, template, trained_run, tmp_path)


def test_a_failed_metrics_write_keeps_the_checkpoint(template, trained_run, tmp_path,
                                                     monkeypatch):
    _fail_on(monkeypatch, "metrics.csv", errno.ENOSPC, after=1)  # epoch 3's write
    case = Case("metrics-write-fails", RESUME + ("--epochs", "4"), 1,
                ("cannot write", "/run/metrics.csv: the disk is full", "--resume --epochs 4"),
                needs_run=True, check=_checkpoint_epoch(2))
    run_case(case, template, trained_run, tmp_path)


def test_a_read_only_out_is_named(template, tmp_path, monkeypatch):
    real = os.open

    def read_only(path, flags, *args):
        if Path(path).name == ".lock":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real(path, flags, *args)

    monkeypatch.setattr(mmfuse.run.os, "open", read_only)
    run_case(Case("out-read-only", TRAIN, 1, ("cannot write", "project/run/.lock",
                                              "read-only", "choose another --out")),
             template, None, tmp_path)


def test_run_files_respect_the_umask(template, tmp_path):
    old = os.umask(0o002)
    try:
        run_case(Case("umask", TRAIN, 0, "trained"), template, None, tmp_path)
    finally:
        os.umask(old)
    run = tmp_path / "project" / "run"
    for file in ("checkpoint.pt", "manifest.json", "metrics.csv", "resolved_spec.yaml",
                 "embeddings/book.npy", "embeddings/book.ids.txt"):
        assert (run / file).stat().st_mode & 0o777 == 0o664, file
    assert json.loads((run / "manifest.json").read_text())["format"] == "mmfuse-run"


# ---------------------------------------------------------------------- signals


def _mmfuse(*argv: str, cwd: Path) -> subprocess.Popen:
    """The real command, in a process of its own."""
    return subprocess.Popen([sys.executable, "-m", "mmfuse", *argv], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    end = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"no {path} after {seconds} s"
        time.sleep(0.05)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_training_after_its_step_with_the_resume_command(
        signum, code, template, tmp_path):
    """The real command, signalled mid-training: it stops after the current step with the
    code a shell expects, the last checkpoint intact, and prints the full resume command;
    a second training into the folder is refused meanwhile (the lock)."""
    run = tmp_path / "run"
    sets = ("--set", "train.tol=0", "--set", "train.batch_size=8")
    proc = _mmfuse("train", str(template / "spec.yaml"), "--out", str(run), "-q",
                   "--no-report", "--epochs", "100000", *sets, cwd=tmp_path)
    try:
        _wait_for(run / "checkpoint.pt", proc)
        second = CliRunner().invoke(app, ["train", str(template / "spec.yaml"), "--out",
                                          str(run), "--resume", "-q", "--epochs", "2"])
        assert second.exit_code == 1, second.output
        assert "is in use by another training" in second.output
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    flat = " ".join(err.split())
    assert (f"mmfuse train {template / 'spec.yaml'} --out {run} --resume --set train.tol=0 "
            "--set train.batch_size=8 --epochs 100000") in flat, err
    state = mmfuse.run.RunDir(run).load_checkpoint()
    assert state["epoch"] >= 1 and not list(run.glob(".*.tmp"))
    again = CliRunner().invoke(app, ["train", str(template / "spec.yaml"), "--out", str(run),
                                     "--resume", "-q", "--no-report", *sets, "--epochs",
                                     str(state["epoch"] + 1)])
    assert again.exit_code == 0, again.output

"""The bad-input corpus: run folders, checkpoints and signals.  Every case must end in a
clear project message and its documented exit code (README, "Errors"), never an internal
error or a traceback (harness: ``badcase.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from badcase import Case, both, run_case, write_text

TRAIN = ("train", "{spec}", "--out", "{root}/run", "-q", "--no-report", "--epochs", "1")


def _unchanged(*names: str):
    """A check that the named files still hold what the edit wrote (no lost data)."""
    def check(root: Path) -> None:
        for name in names:
            assert (root / name).read_bytes() == b"mine\n", name
    return check


CASES = [
    # ------------------------------------------------------------------ run folders
    Case("out-is-a-file", TRAIN[:3] + ("{root}/spec.yaml", "-q", "--epochs", "1"), 1,
         ("--out", "not a folder")),
    Case("out-under-a-file", TRAIN[:3] + ("{root}/spec.yaml/run", "-q", "--epochs", "1"), 1,
         "--out"),
    Case("out-holds-user-files", TRAIN[:3] + ("{root}/mine", "-q", "--epochs", "1"), 1,
         ("{root}/mine", "not an mmfuse run folder"),
         both(write_text("mine/manifest.json", "mine\n"), write_text("mine/metrics.csv", "mine\n")),
         check=_unchanged("mine/manifest.json", "mine/metrics.csv")),
    Case("out-already-a-run", TRAIN, 1, "add --resume", needs_run=False,
         edit=lambda root: (root / "run").mkdir() or (root / "run" / "checkpoint.pt").write_bytes(
             b"x") or (root / "run" / "manifest.json").write_text("{}")),
    Case("resume-nothing", TRAIN + ("--resume",), 1, "nothing to resume"),
    Case("resume-empty-checkpoint", ("train", "{spec}", "--out", "{run}", "--resume", "-q"), 1,
         ("checkpoint.pt", "empty"), needs_run=True,
         edit=lambda root: None),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(case, template, request, tmp_path):
    trained = request.getfixturevalue("trained_run") if case.needs_run else None
    run_case(case, template, trained, tmp_path)

"""The bad-input corpus's harness: a case is a broken project folder, a command and the answer
a user must get (exit code and what the message says), never an internal error or a traceback.

Each case runs in a fresh copy of a small project: the multiview spec of ``conftest`` and its
files (``{root}``, the spec ``{spec}``), and for commands on a run, a trained run folder
(``{run}``).  ``edit`` breaks the copy before the command runs; ``check`` looks at the folder
afterwards (no lost data, no half-written files).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from mmfuse.cli import app

Edit = Callable[[Path], None]


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    code: int
    says: str | tuple[str, ...]  # every one of these is in the (whitespace-flattened) output
    edit: Edit | None = None
    check: Callable[[Path], None] | None = None
    needs_run: bool = field(default=False)

    def __str__(self) -> str:
        return self.id


_BOX = str.maketrans("", "", "│╭╮╰╯─")


def flat(text: str) -> str:
    """``text`` with rich's box lines dropped and runs of whitespace as one space."""
    return " ".join(text.translate(_BOX).split())


def run_case(case: Case, template: Path, trained: Path | None, tmp: Path) -> str:
    """Run ``case`` in a copy of ``template`` (and of the ``trained`` run); return its output."""
    root = tmp / "project"
    shutil.copytree(template, root)
    run = tmp / "run"
    if case.needs_run:
        assert trained is not None
        shutil.copytree(trained, run)
    if case.edit is not None:
        case.edit(root)
    argv = [a.format(root=root, spec=root / "spec.yaml", run=run) for a in case.argv]
    result = CliRunner().invoke(app, argv)
    out = flat(result.output)
    assert "internal error" not in out, out
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}: {out}")
    wanted = (case.says,) if isinstance(case.says, str) else case.says
    for needle in wanted:
        assert flat(needle) in out, f"{needle!r} not in: {out}"
    assert result.exit_code == case.code, f"exit {result.exit_code}, want {case.code}: {out}"
    if case.check is not None:
        case.check(root)
    return out


# --------------------------------------------------------------------------- edits


def spec_replace(old: str, new: str, count: int = 1) -> Edit:
    """Replace ``old`` (which must be there) by ``new`` in the spec text."""
    def edit(root: Path) -> None:
        path = root / "spec.yaml"
        text = path.read_text()
        assert old in text, old
        path.write_text(text.replace(old, new, count))
    return edit


def spec_append(extra: str) -> Edit:
    def edit(root: Path) -> None:
        path = root / "spec.yaml"
        path.write_text(path.read_text() + extra)
    return edit


def write_bytes(name: str, data: bytes) -> Edit:
    def edit(root: Path) -> None:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return edit


def write_text(name: str, text: str) -> Edit:
    return write_bytes(name, text.encode("utf-8"))


def save_npy(name: str, array) -> Edit:
    def edit(root: Path) -> None:
        np.save(root / name, array, allow_pickle=True)
    return edit


def both(*edits: Edit) -> Edit:
    def edit(root: Path) -> None:
        for e in edits:
            e(root)
    return edit

"""Project errors and the exit codes the CLI maps them to."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class MmfuseError(Exception):
    """Base class of every error mmfuse reports to a user (no traceback unless --debug)."""

    exit_code = 1


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where it is (file, line, dotted field path) and what is wrong."""

    loc: tuple[str | int, ...]
    message: str
    file: str | None = None
    line: int | None = None

    @property
    def field(self) -> str:
        return ".".join(str(p) for p in self.loc) or "<spec>"

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where} {self.field}: {self.message}"


class SpecError(MmfuseError):
    """The spec or the data it points at is wrong; carries every issue found at once."""

    exit_code = 3

    def __init__(self, issues: list[SpecIssue]):
        self.issues = issues
        #: for a spec that fails its schema: the spec without the fields in error, to check
        #: its references and data too (:func:`mmfuse.checks.complete`); None if none can be
        self.attempt: Callable[[], Any] | None = None
        super().__init__("\n".join(str(i) for i in issues))


class PluginError(MmfuseError):
    """A plugin is broken, or a plugin name is unknown or registered twice."""

    exit_code = 4


class Interrupted(BaseException):
    """SIGTERM (or another signal turned into an exception): exits 128 + the signal number,
    like a shell reports a process killed by it.  A BaseException, as KeyboardInterrupt is,
    so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"signal {signum}")


class DataError(MmfuseError):
    """Data could not be read or prepared (outside a spec: e.g. `mmfuse embed --data`)."""

    exit_code = 1


def describe(exc: BaseException) -> str:
    """What a user needs from an exception raised by plugin or third-party code (a reader,
    numpy, torch.load, a featurizer): one line, naming the file where the exception knows it.
    Raise the project error ``from exc`` so that ``--debug`` still shows the cause."""
    if isinstance(exc, UnicodeDecodeError):
        return (f"not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset "
                f"{exc.start}); save it as UTF-8")
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if isinstance(exc, MemoryError):
        return "out of memory"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, (ValueError, TypeError, KeyError)) and first:
        return first.strip("'\"") if isinstance(exc, KeyError) else first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__

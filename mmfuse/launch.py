"""``mmfuse train --nproc N``: N processes on this machine through torch's elastic launcher,
as ``torchrun --standalone --nproc-per-node N`` starts them; each runs the same function.

One process failing stops the others (the launcher's agent ends them) and raises
:class:`LaunchError`, which names the failed ranks and why.  SIGINT (Ctrl-C) or SIGTERM to
this process ends the job the same way, raising KeyboardInterrupt or
:class:`~mmfuse.errors.Interrupted` here (exit 130 / 143): the processes themselves leave
signals to the launcher, which ends them (the checkpoint is written atomically, so the last
one stays intact).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, get_error_handler
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from mmfuse.errors import Interrupted, MmfuseError
from mmfuse.strategy import process_device


class LaunchError(MmfuseError):
    """A process of the job failed; the launcher stopped the others."""

    def __init__(self, message: str, ranks: list[int]):
        super().__init__(message)
        self.ranks = ranks


def launch(nproc: int, device: str, fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in ``nproc`` processes of one job on this machine (each reads its
    rank from the launcher's environment); ``device`` is checked first (a GPU each)."""
    if nproc < 1:
        raise MmfuseError(f"--nproc must be at least 1, not {nproc}")
    process_device(device, 0, nproc)  # enough GPUs for a GPU each? (raises if not)
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0",  # torchrun --standalone
        max_restarts=0, start_method="spawn")
    # as torchrun does: processes sharing the CPU split its cores instead of each taking all
    threads = str(max(1, (os.cpu_count() or 1) // nproc))
    with _environ("OMP_NUM_THREADS", threads), _quiet_launcher():
        try:
            elastic_launch(config, _process)(fn, *args)
        except ChildFailedError as exc:
            raise _failure(exc) from None
        except SignalException as exc:  # Ctrl-C or a signal to this launcher
            if exc.sigval == signal.SIGINT:
                raise KeyboardInterrupt(str(exc)) from None
            raise Interrupted(int(exc.sigval)) from None


def _process(fn: Callable[..., Any], *args: Any) -> None:
    """One process of the job: a project error ends it with its exit code and a message for
    the launcher (no traceback); anything else is recorded with its traceback.  Ctrl-C
    reaches every process of the terminal's group: the launcher alone answers it (it ends
    the processes with SIGTERM, which ends a process at once)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        fn(*args)
    except MmfuseError as exc:
        get_error_handler().record_exception(exc)
        raise SystemExit(exc.exit_code) from None


def _failure(exc: ChildFailedError) -> LaunchError:
    """Which ranks failed and why (a signal, or the error the process recorded)."""
    lines = []
    for rank, f in sorted(exc.failures.items()):
        why = (f"was killed by {f.signal_name()}" if f.exitcode < 0
               else f"exited with code {f.exitcode}")
        message = f.message.get("message") if isinstance(f.message, dict) else f.message
        recorded = os.path.isfile(f.error_file)  # written by _process or torch's @record
        lines.append(f"rank {rank} (pid {f.pid}) {why}" + (f": {message}" if recorded else ""))
    error = LaunchError("the job stopped: " + "; ".join(lines), sorted(exc.failures))
    codes = {f.exitcode for f in exc.failures.values()}
    if len(codes) == 1 and min(codes) > 0:  # every rank failed alike (a spec error: 3)
        error.exit_code = min(codes)
    return error


@contextlib.contextmanager
def _quiet_launcher() -> Iterator[None]:
    """The launcher's own failure logs (a traceback of its monitor for a killed process) are
    left out, unless debugging: :class:`LaunchError` says which rank failed and why."""
    if logging.getLogger("mmfuse").isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(n) for n in ("torch.distributed.elastic", "torch.multiprocessing")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


@contextlib.contextmanager
def _environ(key: str, value: str) -> Iterator[None]:
    """``os.environ[key] = value`` for the block (unless already set), for child processes."""
    if key in os.environ:
        yield
        return
    os.environ[key] = value
    try:
        yield
    finally:
        os.environ.pop(key, None)

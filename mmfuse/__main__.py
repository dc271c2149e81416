"""The ``mmfuse`` command (also ``python -m mmfuse …``, ``torchrun -m mmfuse …``).

Ctrl-C or SIGTERM while the command line imports torch and the plugins (seconds) ends the
command with one line and exit 130 / 143, not a traceback; :mod:`mmfuse.cli` answers them
from there on.
"""

from __future__ import annotations

import signal
import sys

from mmfuse.errors import Interrupted  # stdlib only: cheap


def _terminate(signum, frame) -> None:
    raise Interrupted(signum)


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    if sys.argv[1:2] == ["train"]:  # before torch starts its threads (mmfuse.allocator)
        from mmfuse.allocator import keep_freed_memory
        keep_freed_memory()
    try:
        from mmfuse.cli import main as cli
    except (KeyboardInterrupt, Interrupted) as exc:
        what = "terminated" if isinstance(exc, Interrupted) else "interrupted"
        sys.stderr.write(f"{what} while starting\n")
        raise SystemExit(getattr(exc, "exit_code", 130)) from None
    cli()


if __name__ == "__main__":
    main()

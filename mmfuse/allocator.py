"""The C allocator's behaviour during training (glibc).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it to the system on ``free``: each step's activations (≈160 MB at the
paper's 224×224 covers) are then mapped, faulted in page by page and unmapped again, every
step.  Measured with the published loop, that was half of its CPU time
(``benchmarks/paper_loop.py``; ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0`` made it 2.7×
faster).  :func:`keep_freed_memory` makes the same setting from inside the process, so users
need not know the tunable: large blocks come from the heap, and freed memory is kept for the
next step instead of being returned (the process's resident memory stays at its peak, which
a training reaches at every step anyway).  Only a training of one process asks for it: with
mmap off, a thread's own malloc arena cannot grow past 64 MiB, and a job of several
processes has gloo's threads allocating beside the step (a rank aborted, now and then, in
the two-process test).  Elsewhere (musl, macOS, Windows) it does nothing;
``MMFUSE_MALLOC=system`` (or any ``glibc.malloc`` setting in ``GLIBC_TUNABLES``) leaves the
allocator as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
_done = False


def keep_freed_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and keep freed memory (once per
    process); True if it took the settings.  ``MMFUSE_MALLOC=system`` or ``GLIBC_TUNABLES``
    set by the user wins."""
    global _done
    if _done:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if (os.environ.get("MMFUSE_MALLOC") == "system"
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "")):
        return False  # the user chose
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        # one arena, the main one, which grows without mmap (threads made from here on
        # share it; a thread's own arena could not serve a block over 64 MiB)
        ok = bool(libc.mallopt(M_ARENA_MAX, 1)) and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1)))
    except (OSError, AttributeError):
        return False
    _done = ok
    log.debug("glibc malloc: arena_max 1, mmap_max 0, trim_threshold 2 GiB (%s)",
              "set" if ok else "refused")
    return ok

"""mmfuse keeps glibc from mapping and unmapping every step's large blocks."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")

CHURN = """
import resource, sys
import numpy as np
from mmfuse.allocator import keep_freed_memory
took = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
np.ones(8 << 20)  # 64 MB, once: the heap grows to hold it where the setting took
before = faults()
for _ in range(10):  # what a training step does with its activations
    a = np.ones(8 << 20)
    del a
print(took, faults() - before)
"""


def _churn(**env) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", CHURN], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    return out[0] == "True", int(out[1])


def test_freed_blocks_are_kept_for_the_next_step():
    took, kept = _churn()
    assert took
    left, system = _churn(MMFUSE_MALLOC="system")
    assert not left
    # 10 × 64 MB mapped afresh: thousands of page faults (fewer with huge pages); kept: none
    assert system > 1_000 and kept < system / 20


def test_a_users_glibc_tunables_win():
    took, _ = _churn(GLIBC_TUNABLES="glibc.malloc.mmap_max=0")
    assert not took

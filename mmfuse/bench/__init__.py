"""``mmfuse bench``: the paper's comparison (Tables 1 and 2) on a chosen data set.

Every row is a spec variant of the data set's own spec wherever the framework can express
it (:mod:`.methods`); :mod:`.runner` trains and evaluates each row over seeds, timing it and
watching its memory; :mod:`.report` writes ``report.md``, ``results.json`` and plots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmfuse.bench.runner import BenchResult, run_bench

__all__ = ["BenchResult", "run_bench"]


def __getattr__(name: str) -> Any:  # the runner (and torch) only when asked for
    if name in __all__:
        from mmfuse.bench import runner
        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""``mmfuse bench``: the paper's comparison (Tables 1 and 2) on a chosen data set.

Every row is a spec variant of the data set's own spec wherever the framework can express
it (:mod:`.methods`); :mod:`.runner` trains and evaluates each row over seeds, timing it and
watching its memory; :mod:`.report` writes ``report.md``, ``results.json`` and plots.
"""

from __future__ import annotations

from mmfuse.bench.runner import BenchResult, run_bench

__all__ = ["BenchResult", "run_bench"]

"""The bench's specs and the paper's published numbers, shipped inside the package.

``mmfuse/bench/specs/NAME.yaml`` are links to the repository's ``specs/NAME.yaml`` (the one
copy that ``make train`` and the README use); a wheel holds them as files.  Light: the
command line lists the data sets from here without importing torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfuse.errors import MmfuseError

if TYPE_CHECKING:
    from mmfuse.spec import Spec

PUBLISHED = "published_goodreads.json"


def _folder():
    return resources.files("mmfuse.bench").joinpath("specs")


def datasets() -> list[str]:
    """The data sets that ``mmfuse bench --dataset`` knows without ``--spec``."""
    try:
        return sorted(p.name[:-5] for p in _folder().iterdir() if p.name.endswith(".yaml"))
    except OSError:  # pragma: no cover - a broken install
        return []


@dataclass
class BenchSpec:
    spec: Spec
    shown: str  # where it came from, for the report and the console


def load_bench_spec(dataset: str, spec_path: Path | None, overrides: list[str],
                    cwd: Path | None = None) -> BenchSpec:
    """``--spec`` when given; else ``specs/DATASET.yaml`` of the working directory (a
    checkout's, or the user's own); else mmfuse's packaged spec, its relative paths taken
    as if it lay in ``./specs/`` — so its data go to ``./data/DATASET``, as in a checkout."""
    from mmfuse.spec import apply_override, load_spec, parse_yaml, validate

    cwd = (cwd or Path.cwd()).resolve()
    if spec_path is not None:
        return BenchSpec(load_spec(spec_path, overrides), str(spec_path))
    local = cwd / "specs" / f"{dataset}.yaml"
    if local.is_file():
        return BenchSpec(load_spec(local, overrides), f"specs/{dataset}.yaml")
    resource = _folder().joinpath(f"{dataset}.yaml")
    if not resource.is_file():
        known = ", ".join(datasets()) or "none"
        raise MmfuseError(f"no spec for data set {dataset!r}: mmfuse ships {known}; give your "
                          f"own with --spec FILE (or put it at specs/{dataset}.yaml)")
    shown = f"mmfuse's packaged {dataset}.yaml (its data under ./data/)"
    data, src = parse_yaml(resource.read_text(encoding="utf-8"), f"<packaged {dataset}.yaml>")
    if isinstance(data, dict):
        for assignment in overrides:
            apply_override(data, assignment, src)
    return BenchSpec(validate(data, src, cwd / "specs"), shown)


def published_numbers(dataset: str) -> dict[str, dict[str, float]]:
    """The paper's published rows (Goodreads only): not measured here, shown beside."""
    if dataset != "goodreads":
        return {}
    resource = resources.files("mmfuse.bench").joinpath(PUBLISHED)
    if not resource.is_file():
        return {}
    data: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return data["rows"]

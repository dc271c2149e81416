"""What each view's code holds: a run's probe on its target, from the fused representation,
from it with each view left out (the ablation), and from each view's own code (the
encoder's output, before the fusion), on the same repeated splits.

    .venv/bin/python benchmarks/view_codes.py RUN [--target NAME] [--repeats 5]

Where the representation without a view falls short of the other views' raw data, this
says whether the remaining view's code already lacks it (the encoder) or the fusion loses
it.  Needs the run's training data (the codes are computed from it).
"""

from __future__ import annotations

import argparse

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from mmfuse.baselines import raw_features
from mmfuse.build import build
from mmfuse.evaluate import evaluate_target
from mmfuse.plugins import get_plugins
from mmfuse.run import RunDir
from mmfuse.training import embed_all

CHUNK = 256


def view_codes(built, entity: str) -> dict[tuple[str, str], np.ndarray]:
    """Every code of ``entity``'s instances, by (view, role), in instance order."""
    n = built.data.sizes[entity]
    parts: dict[tuple[str, str], list[np.ndarray]] = {}
    with torch.no_grad():
        for start in range(0, n, CHUNK):
            batch = built.batcher.make({entity: np.arange(start, min(n, start + CHUNK))})
            for key, h in built.model.codes(batch, entity).items():
                parts.setdefault(key, []).append(h.float().numpy())
    return {key: np.concatenate(p) for key, p in parts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--target", help="an evaluate target of the run's spec (default: first)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    run = RunDir(a.run)
    spec = run.read_spec()
    built = build(spec, get_plugins(), device="cpu")
    run.load_checkpoint("cpu", spec=spec, model=built.model)
    built.model.eval()
    name = a.target or next(iter(spec.evaluate.targets))
    target = spec.evaluate.targets[name]
    split = spec.evaluate.split.model_copy(update={"repeats": a.repeats})
    views = list(dict.fromkeys(v for v, _ in built.plan.codes[target.entity]))

    def score(x: np.ndarray) -> tuple[str, float, float]:
        result = evaluate_target(name, target, x, split, spec)
        metric = next(m for m in ("auprc_macro", "accuracy", "r2") if m in result["metrics"])
        return metric, result["metrics"][metric], result.get("metrics_std", {}).get(metric, 0.0)

    rows = [("fused representation", embed_all(built, target.entity))]
    rows += [(f"fused, without {v}", embed_all(built, target.entity, without=frozenset({v})))
             for v in views]
    rows += [(f"code of {v}.{role}", h) for (v, role), h in view_codes(built, target.entity)
             .items()]
    for v in views:  # the references: each view's raw data as evaluate's baselines take it
        raw = raw_features(spec, built.data, v, target.entity)
        if sp.issparse(raw) or spec.views[v].is_tensor:
            continue
        rows.append((f"raw {v}", raw))
        k = min(spec.model.dim, *raw.shape)
        rows.append((f"PCA-{k} of raw {v} (standardised)",
                     PCA(k, random_state=0).fit_transform(StandardScaler().fit_transform(raw))))
    print(f"{a.run}: target {name} ({target.probe}), {a.repeats} splits\n")
    print("| features | dims | metric | mean ± std |\n| --- | --- | --- | --- |")
    for label, x in rows:
        metric, mean, std = score(x)
        print(f"| {label} | {x.shape[1]} | {metric} | {mean:.3f} ± {std:.3f} |", flush=True)


if __name__ == "__main__":
    main()

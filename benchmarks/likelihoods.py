"""Likelihoods with parameters on planted data: held-out metrics and the learnt parameters
against the planted ones, over seeds (figures only; nothing is asserted).

    .venv/bin/python benchmarks/likelihoods.py [--seeds 3]

Two sparse 300 × 200 users × items matrices from planted rank-3 factors (a fifth of the
cells held out, the same split for every likelihood), each factorised by the ``cmf`` preset:
- ``values``: u·v + gaussian noise σ = 0.5 — ``gaussian`` with a fixed noise against
  ``noise: learn`` (which should find σ);
- ``counts``: negative binomial counts of mean exp(u·v + 0.5) and dispersion r = 3 (a
  third of the cells stored) —
  ``poisson``, ``negbinomial`` (which should find r) and ``gaussian``.
(40 and 100 epochs).  Prints a markdown table: each likelihood's held-out metrics (mean ±
std over seeds) beside the row + column biases baseline fit on the same cells, and what was
learnt.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mmfuse.api import train
from mmfuse.spec import load_spec

CASES = {
    "values": ["gaussian", "{type: gaussian, params: {noise: learn}}"],
    "counts": ["poisson", "negbinomial", "gaussian"],
}
PLANTED = {"values": "σ = 0.5", "counts": "r = 3"}
EPOCHS = {"values": 40, "counts": 100}


def write(root: Path, kind: str, likelihood: str, seed: int, epochs: int) -> Path:
    rng = np.random.default_rng(seed)
    n_u, n_i = 300, 200
    scale, density = (0.6, 0.2) if kind == "values" else (0.8, 0.3)
    u, v = rng.standard_normal((n_u, 3)) * scale, rng.standard_normal((n_i, 3)) * scale
    rows, cols = np.nonzero(rng.random((n_u, n_i)) < density)
    eta = (u[rows] * v[cols]).sum(1)
    if kind == "values":
        values = eta + 0.5 * rng.standard_normal(len(rows))
    else:
        mu = np.exp(eta + 0.5)
        values = rng.negative_binomial(3.0, 3.0 / (3.0 + mu)).astype(float)
    root.mkdir(parents=True, exist_ok=True)
    sp.save_npz(root / "m.npz", sp.csr_array((values.astype(np.float32), (rows, cols)),
                                             shape=(n_u, n_i)))
    spec = root / "spec.yaml"
    spec.write_text(
        f"name: lk\nseed: {seed}\n"
        f"entities: {{user: {{size: {n_u}}}, item: {{size: {n_i}}}}}\n"
        f"views:\n  m: {{rows: user, cols: item, likelihood: {likelihood}, "
        "source: {reader: npz, path: m.npz}}\n"
        "model: {preset: cmf, dim: 3}\n"
        f"evaluate: {{holdout: {{views: [m], fraction: 0.2, seed: {seed}}}}}\n"
        f"train: {{epochs: {epochs}, batch_size: 256, device: cpu, tol: 0.0, threads: 1, "
        "optimizer: {lr: 0.05}}\n")
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    print(f"| data (planted) | likelihood | held-out metric: mmfuse | biases | learnt "
          f"(mean over {args.seeds} seeds) |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, likelihoods in CASES.items():
            for likelihood in likelihoods:
                held: dict[str, list[float]] = {}
                base: dict[str, list[float]] = {}
                learnt: dict[str, list[float]] = {}
                for seed in range(args.seeds):
                    root = Path(tmp) / f"{kind}-{len(held)}-{seed}-{abs(hash(likelihood))}"
                    spec = write(root, kind, likelihood, seed, EPOCHS[kind])
                    result = train(load_spec(spec), root / "run")
                    ev = result.evaluation["holdout"]["m"]
                    for metric, value in ev["mmfuse"].items():
                        held.setdefault(metric, []).append(value)
                        base.setdefault(metric, []).append(ev["biases"][metric])
                    lk = result.built.model.likelihoods["m"]
                    for k, v in getattr(lk, "learnt", dict)().items():
                        learnt.setdefault(k, []).append(v)
                    print(f"{kind} {likelihood} seed {seed} done", file=sys.stderr)
                shown = [m for m in ("rmse", "poisson_deviance") if m in held]
                cell = "; ".join(f"{m} {np.mean(held[m]):.3f} ± {np.std(held[m]):.3f}"
                                 for m in shown)
                ref = "; ".join(f"{m} {np.mean(base[m]):.3f}" for m in shown)
                got = ", ".join(f"{k} {np.mean(v):.3f} ± {np.std(v):.3f}"
                                for k, v in learnt.items()) or "–"
                print(f"| {kind} ({PLANTED[kind]}) | `{likelihood}` | {cell} | {ref} | {got} |")


if __name__ == "__main__":
    main()

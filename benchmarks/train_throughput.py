"""Training throughput and memory of each preset on a spec (default: the Goodreads default).

    .venv/bin/python benchmarks/train_throughput.py [SPEC] [--epochs 2] [--presets mmeda2,mmeda1]

Prints, per preset: parameters, seconds per epoch, instances per second (primary entity),
and the peak resident memory of a fresh process.  Each preset runs in its own subprocess
so peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from mmfuse.api import train
from mmfuse.spec import load_spec
spec = load_spec(sys.argv[1], sys.argv[3:])
start = time.perf_counter()
result = train(spec, sys.argv[2], evaluate=False)
t = result.trainer
n = result.built.batcher.epoch_size()  # primary instances, or a sparse primary's cells
epochs = [h["seconds"] for h in t.history]
print(json.dumps({
    "parameters": sum(p.numel() for p in result.built.model.parameters()),
    "seconds_per_epoch": sum(epochs) / len(epochs),
    "instances_per_second": n * len(epochs) / sum(epochs),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "wall_seconds": time.perf_counter() - start,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", default="specs/goodreads.yaml")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--presets", default="mmeda2,mmeda1")
    args = parser.parse_args()
    print(f"{'preset':<8} {'params':>10} {'s/epoch':>8} {'inst/s':>8} {'peak MiB':>9}")
    for preset in args.presets.split(","):
        with tempfile.TemporaryDirectory() as out:
            overrides = [f"model.preset={preset}", f"train.epochs={args.epochs}",
                         "train.tol=0", "train.device=cpu"]
            proc = subprocess.run([sys.executable, "-c", CHILD, args.spec, str(Path(out) / "r"),
                                   *overrides], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{preset:<8} failed: {proc.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{preset:<8} {r['parameters']:>10,} {r['seconds_per_epoch']:>8.2f} "
                  f"{r['instances_per_second']:>8.0f} {r['peak_rss_mib']:>9.0f}")


if __name__ == "__main__":
    main()

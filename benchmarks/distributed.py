"""Distributed throughput: one planted sparse collection trained by 1, 2 and 4 processes.

    .venv/bin/python benchmarks/distributed.py [--procs 1,2,4] [--shape 10000,5000,100000]
        [--batch 64] [--epochs 1] [--device cpu] [--workdir DIR] [--set KEY=VALUE ...]

Each row is one fresh `mmfuse train SPEC --nproc N` (torch's elastic launcher; DDP, gloo on
the CPU, nccl and a GPU each on CUDA), after two rows without a launcher (strategy single):
with torch's threads, and with one (what each of N processes sharing 2 cores gets).  The
data is benchmarks/scale.py's planted users × items ratings (rank 8).  From each run's
manifest.json: the job's rate (the primary's instances per second, summed over the
processes: each trains its shard of an epoch), each process's rate, seconds per epoch, and
the wall time of the whole command (start-up of every process included).  Every row takes
``--batch`` instances per optimiser step in all (N processes: ``batch_size`` = batch / N
each, so an epoch has the same steps, the same optimisation, at any N): a higher rate is
then work done faster, not work done in bigger steps.  Nothing is asserted; it prints a
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import make_sparse, sparse_spec  # noqa: E402  (the same planted data)

MMFUSE = [sys.executable, "-m", "mmfuse"]


def run(spec: Path, out: Path, nproc: int | None, args: argparse.Namespace,
        extra: tuple[str, ...] = ()) -> dict:
    batch = args.batch // (nproc or 1)  # per process: the same instances per optimiser step
    command = [*MMFUSE, "train", str(spec), "--out", str(out), "-q", "--no-report",
               "--device", args.device, f"--set=train.batch_size={batch}",
               *(f"--set={s}" for s in (*args.set, *extra))]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, "batch_size": batch, **manifest}


def row(label: str, m: dict) -> str:
    d, t = m["distributed"], m["training"]
    ranks = " / ".join(f"{r['per_second']:,.0f}" for r in d["ranks"])
    per_epoch = sum(t["seconds_per_epoch"]) / len(t["seconds_per_epoch"])
    steps = d["ranks"][0]["steps_per_epoch"]
    batch = m["batch_size"]
    return (f"| {label} | {d['world_size']} | {d['backend'] or '—'} | {batch} | {steps:,} | "
            f"{per_epoch:.2f} | **{d['per_second']:,.0f}** | {ranks} | {m['wall']:.1f} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2,4", help="process counts (--nproc)")
    parser.add_argument("--shape", default="10000,5000,100000", help="users,items,cells")
    parser.add_argument("--batch", type=int, default=64,
                        help="instances per optimiser step, over all processes")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--set", action="append", default=[], help="spec override KEY=VALUE")
    args = parser.parse_args(argv)
    n_u, n_i, nnz = (int(x) for x in args.shape.split(","))
    root = Path(args.workdir or tempfile.mkdtemp(prefix="mmfuse-dist-"))
    try:
        data = root / "data"
        make_sparse(data, n_u, n_i, nnz)
        spec = data / "spec.yaml"
        spec.write_text(sparse_spec(n_u, n_i, args.epochs))
        cores = os.cpu_count() or 1
        print(f"{n_u:,} × {n_i:,} planted ratings, {nnz:,} cells, {args.epochs} epoch(s), "
              f"{args.batch} instances per optimiser step in all, device {args.device}, "
              f"{cores} CPU cores\n")
        print("| run | processes | backend | batch each | steps/epoch (each) | s/epoch "
              "| job instances/s | per process | wall s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        plan = [("no launcher (single)", None, ()),
                ("no launcher, 1 thread", None, ("train.threads=1",)),
                *((f"`--nproc {n}`", n, ()) for n in map(int, args.procs.split(",")))]
        rows = []
        for i, (label, nproc, extra) in enumerate(plan):
            rows.append((label, run(spec, root / f"run{i}", nproc, args, extra)))
            print(row(*rows[-1]), flush=True)
        rate = {label: m["distributed"]["per_second"] for label, m in rows}
        one = max((k for k, m in rows if m["distributed"]["world_size"] == 1), key=rate.get)
        many = [k for k, m in rows if m["distributed"]["world_size"] > 1]
        line = f"\nfastest with one process: {one}, {rate[one]:,.0f} instances/s"
        if many:
            best = max(many, key=rate.get)
            line += f"; with several: {best}, {rate[best]:,.0f} ({rate[best] / rate[one]:.2f}×)"
        print(line)
        if args.device == "cpu":
            print(f"Every process here shares this machine's {cores} CPU cores (each takes "
                  f"max(1, {cores} // N) threads): more processes add no compute on it, and no "
                  "speed-up is expected. Data parallelism pays with a GPU, or a machine, per "
                  "process.")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

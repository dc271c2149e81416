"""Distributed throughput: one planted sparse collection trained by 1, 2 and 4 processes.

    .venv/bin/python benchmarks/distributed.py [--procs 1,2,4] [--shape 20000,10000,200000]
        [--epochs 2] [--device cpu] [--workdir DIR] [--set KEY=VALUE ...]

Each row is one fresh `mmfuse train SPEC --nproc N` (torch's elastic launcher; DDP, gloo on
the CPU, nccl and a GPU each on CUDA), plus a first row without a launcher (strategy
single).  The data is benchmarks/scale.py's planted users × items ratings (rank 8).  From
each run's manifest.json: the job's rate (the primary's instances per second, summed over
the processes: each trains its shard of an epoch), each process's rate, seconds per epoch,
and the wall time of the whole command (start-up of every process included).  Each process
takes `batch_size` instances a step, so N processes take N × `batch_size` per optimiser step
and an epoch has 1/N of the steps.  Nothing is asserted; the script prints a markdown table.
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


def run(spec: Path, out: Path, nproc: int | None, args: argparse.Namespace) -> dict:
    command = [*MMFUSE, "train", str(spec), "--out", str(out), "-q", "--no-report",
               "--device", args.device, *(f"--set={s}" for s in args.set)]
    if nproc is not None:
        command += ["--nproc", str(nproc)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall": wall, **manifest}


def row(label: str, m: dict) -> str:
    d, t = m["distributed"], m["training"]
    ranks = " / ".join(f"{r['per_second']:,.0f}" for r in d["ranks"])
    per_epoch = sum(t["seconds_per_epoch"]) / len(t["seconds_per_epoch"])
    steps = d["ranks"][0]["steps_per_epoch"]
    return (f"| {label} | {d['world_size']} | {d['backend'] or '—'} | {steps:,} | "
            f"{per_epoch:.2f} | **{d['per_second']:,.0f}** | {ranks} | {m['wall']:.1f} |")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2,4", help="process counts (--nproc)")
    parser.add_argument("--shape", default="20000,10000,200000", help="users,items,cells")
    parser.add_argument("--epochs", type=int, default=2)
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
        print(f"{n_u:,} × {n_i:,} planted ratings, {nnz:,} cells, {args.epochs} epochs, "
              f"device {args.device}, {cores} CPU cores\n")
        print("| run | processes | backend | steps/epoch (each) | s/epoch | job instances/s "
              "| per process | wall s |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(row("no launcher (single)", run(spec, root / "single", None, args)), flush=True)
        for n in (int(x) for x in args.procs.split(",")):
            print(row(f"`--nproc {n}`", run(spec, root / f"nproc{n}", n, args)), flush=True)
        if args.device == "cpu":
            print(f"\nThese processes share this machine's {cores} CPU cores (each gets "
                  f"{cores} // N threads): no speed-up is expected from more processes here. "
                  "Data parallelism pays with a GPU (or machine) per process.")
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])

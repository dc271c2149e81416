"""Scale benchmark: time and memory of mmfuse on large sparse and dense views (figures only).

    .venv/bin/python benchmarks/scale.py [--cases sparse-small,sparse-large,dense]
        [--dense-sizes 5000,50000,500000] [--epochs 5] [--steps 200] [--warmup 20] [--repeats R]
        [--sparse-shape NU,NI,NNZ] [--timeout S] [--workdir DIR] [--keep] [--set KEY=VALUE ...]

A quick end-to-end check (about 5 minutes on 2 cores; the per-user and per-item cell counts of
sparse-small, at a small size):

    .venv/bin/python benchmarks/scale.py --cases sparse-small,dense \
        --sparse-shape 4000,2000,200000 --dense-sizes 2000,4000 --steps 30 --warmup 5

Sparse cases: a users × items gaussian ratings matrix with a planted rank-8 structure
(``sparse-small`` 100k × 50k with 5 M observed cells, ``sparse-large`` 500k × 200k with 20 M),
trained by mmfuse and, as the reference, by cmfrec's exact ALS; each reports wall seconds,
peak resident memory, seconds per epoch, µs per observed cell per epoch and how well the
embeddings recover the planted factors (R² of a linear map, fit on 80 % of the instances).

Dense case: for each n, an n × 100 float32 matrix (memory-mapped) and n × 3 × 16 × 16 uint8
images, trained for a fixed number of steps under each ``columns`` setting; reports µs per
instance and memory.

Every training runs in its own subprocess (this file, re-run as ``_child KIND ARGS``), so its
peak memory is its own.  Data is generated under a temporary folder, deleted unless --keep.
Nothing is asserted: the script prints markdown tables (stdout) and progress (stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RANK = 8  # planted latent dimension
DIM = 16  # embedding dimension of mmfuse and cmfrec
CMFREC_ITERS = 10
SPARSE_CASES = {"sparse-small": (100_000, 50_000, 5_000_000),
                "sparse-large": (500_000, 200_000, 20_000_000)}
COLUMNS = ("autoencoder", "sketch", "embedding", "none")
MARK = "SCALE-RESULT "  # prefix of the child's one result line on stdout
CHUNK = 1_000_000  # cells (sparse) generated per chunk
ROW_CHUNK = 20_000  # rows (dense) generated per chunk


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ====================================================================== data generation


def sample_cells(rng: np.random.Generator, n_u: int, n_i: int, nnz: int) -> np.ndarray:
    """``nnz`` distinct cells drawn uniformly, as sorted linear indices ``row * n_i + col``."""
    total = n_u * n_i
    if nnz > total:
        raise SystemExit(f"cannot observe {nnz:,} cells of a {n_u:,} × {n_i:,} matrix")
    if 4 * nnz > total:  # dense enough that rejection would be slow
        return np.sort(rng.choice(total, size=nnz, replace=False))
    cells = np.empty(0, dtype=np.int64)
    while cells.size < nnz:  # draw what is missing, drop duplicates, repeat
        need = nnz - cells.size
        draws = [rng.integers(0, total, size=min(CHUNK, need - s)) for s in range(0, need, CHUNK)]
        cells = np.union1d(cells, np.concatenate(draws))
    return cells


def planted_values(rng: np.random.Generator, cells: np.ndarray, u: np.ndarray, v: np.ndarray,
                   n_i: int) -> np.ndarray:
    """``U_i · V_j / sqrt(RANK) + 0.1 · noise`` for each cell, computed in chunks."""
    out = np.empty(cells.size, dtype=np.float32)
    for start in range(0, cells.size, CHUNK):
        c = cells[start:start + CHUNK]
        rows, cols = c // n_i, c % n_i
        dot = np.einsum("ij,ij->i", u[rows], v[cols]) / np.sqrt(RANK)
        out[start:start + CHUNK] = dot + 0.1 * rng.standard_normal(c.size, dtype=np.float32)
    return out


def make_sparse(folder: Path, n_u: int, n_i: int, nnz: int, seed: int = 0) -> None:
    """Write ratings.npz (CSR float32), U.npy, V.npy and spec.yaml into ``folder``."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    u = rng.standard_normal((n_u, RANK), dtype=np.float32)
    v = rng.standard_normal((n_i, RANK), dtype=np.float32)
    cells = sample_cells(rng, n_u, n_i, nnz)
    values = planted_values(rng, cells, u, v, n_i)
    # Sorted linear indices are already in CSR order: count rows for indptr.
    index = np.int32 if max(n_u, n_i, nnz) < 2**31 else np.int64
    indptr = np.zeros(n_u + 1, dtype=index)
    np.cumsum(np.bincount(cells // n_i, minlength=n_u), out=indptr[1:])
    indices = (cells % n_i).astype(index)
    del cells
    matrix = sp.csr_matrix((values, indices, indptr), shape=(n_u, n_i))
    folder.mkdir(parents=True, exist_ok=True)
    sp.save_npz(folder / "ratings.npz", matrix, compressed=False)
    np.save(folder / "U.npy", u)
    np.save(folder / "V.npy", v)


def sparse_spec(n_u: int, n_i: int, epochs: int) -> str:
    return (f"name: scale\nseed: 0\n"
            f"entities: {{user: {{size: {n_u}}}, item: {{size: {n_i}}}}}\n"
            f"views:\n"
            f"  ratings: {{rows: user, cols: item, source: {{reader: npz, path: ratings.npz}}, "
            f"likelihood: gaussian}}\n"
            f"model: {{dim: {DIM}}}\n"
            f"train: {{epochs: {epochs}, device: cpu, tol: 0.0}}\n")


def make_dense(folder: Path, n: int, seed: int = 0) -> None:
    """Write features.npy (n × 100 float32), image.npy (n × 3 × 16 × 16 uint8) and spec.yaml,
    both generated from one planted RANK-d latent per instance, in row chunks."""
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    w_feat = rng.standard_normal((RANK, 100)) / np.sqrt(RANK)
    w_img = rng.standard_normal((RANK, 3 * 16 * 16)) / np.sqrt(RANK)
    folder.mkdir(parents=True, exist_ok=True)
    feats = open_memmap(folder / "features.npy", mode="w+", dtype=np.float32, shape=(n, 100))
    image = open_memmap(folder / "image.npy", mode="w+", dtype=np.uint8, shape=(n, 3, 16, 16))
    for start in range(0, n, ROW_CHUNK):
        z = rng.standard_normal((min(ROW_CHUNK, n - start), RANK))
        feats[start:start + len(z)] = z @ w_feat + 0.1 * rng.standard_normal((len(z), 100))
        logits = z @ w_img + 0.1 * rng.standard_normal((len(z), w_img.shape[1]))
        pixels = np.rint(255 / (1 + np.exp(-logits))).astype(np.uint8)
        image[start:start + len(z)] = pixels.reshape(len(z), 3, 16, 16)
    feats.flush()
    image.flush()
    del feats, image
    (folder / "spec.yaml").write_text(
        f"name: scale-dense\nseed: 0\n"
        f"entities: {{item: {{size: {n}}}, feat: {{size: 100}}}}\n"
        f"views:\n"
        f"  features: {{rows: item, cols: feat, source: {{reader: npy, path: features.npy}}}}\n"
        f"  image:\n"
        f"    rows: item\n"
        f"    tensor: {{shape: [3, 16, 16]}}\n"
        f"    source: {{reader: npy, path: image.npy}}\n"
        f"    encoder: {{type: conv, params: {{channels: [4, 2], hidden: 32}}}}\n"
        f"model: {{dim: {DIM}}}\n"
        f"train: {{device: cpu, tol: 0.0}}\n", encoding="utf-8")


# ====================================================================== children


def memory() -> dict[str, float]:
    """This process's anonymous resident memory now and its peak resident memory, in MiB."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    mib = {k: int(fields[k][0]) / 1024 for k in ("RssAnon", "VmHWM") if k in fields}
    return {"rss_anon_mib": mib.get("RssAnon", float("nan")),
            "hwm_mib": mib.get("VmHWM", float("nan")),
            "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_train(a: dict[str, Any]) -> dict[str, Any]:
    """mmfuse training of a whole spec; embeddings land in the run folder."""
    from mmfuse.api import train
    from mmfuse.spec import load_spec

    spec = load_spec(a["spec"], a["overrides"])
    start = time.perf_counter()
    result = train(spec, a["out"], evaluate=False)
    return {"fit_s": time.perf_counter() - start, "epochs": result.trainer.epoch}


def child_cmfrec(a: dict[str, Any]) -> dict[str, Any]:
    """cmfrec's exact ALS on the same matrix; A_ and B_ saved as user.npy and item.npy."""
    import cmfrec
    import scipy.sparse as sp

    x = sp.load_npz(a["npz"]).tocoo()
    start = time.perf_counter()
    model = cmfrec.CMF(k=DIM, method="als", niter=CMFREC_ITERS, use_cg=False,
                       random_state=0, verbose=False)
    model.fit(X=x)
    fit_s = time.perf_counter() - start
    out = Path(a["out"])
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "user.npy", np.asarray(model.A_, dtype=np.float32))
    np.save(out / "item.npy", np.asarray(model.B_, dtype=np.float32))
    return {"fit_s": fit_s, "epochs": CMFREC_ITERS}


class _Enough(Exception):
    """Raised by the step timer to end training once it has timed enough steps."""


def child_steps(a: dict[str, Any]) -> dict[str, Any]:
    """mmfuse training stopped after ``warmup + steps`` timed steps.  A step is timed from the
    end of the previous step in the same epoch, so epoch ends (checkpoints) are not counted."""
    from mmfuse.api import train
    from mmfuse.plugin_api import Callback
    from mmfuse.spec import load_spec

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.seen, self.timed, self.total = 0, 0, 0.0
            self.last: float | None = None
            self.started: float | None = None
            self.batch = 0

        def on_train_start(self, trainer: Any) -> None:
            self.started = time.perf_counter()
            batcher = trainer.built.batcher
            self.batch = batcher.batch_sizes[batcher.primary]

        def on_epoch_start(self, trainer: Any, epoch: int, steps: int) -> None:
            self.last = None

        def on_step_end(self, trainer: Any, step: int, terms: Any) -> None:
            now = time.perf_counter()
            if self.last is not None:
                self.seen += 1
                if self.seen > a["warmup"]:
                    self.timed, self.total = self.timed + 1, self.total + now - self.last
            self.last = now
            if self.timed >= a["steps"]:
                raise _Enough

    spec = load_spec(a["spec"], a["overrides"])
    timer = StepTimer()
    start = time.perf_counter()
    with contextlib.suppress(_Enough):
        train(spec, a["out"], callbacks=[timer], evaluate=False)
    if not timer.timed:
        return {"failed": "training ended before any step was timed"}
    per_step = timer.total / timer.timed
    batch = timer.batch
    manifest = json.loads((Path(a["out"]) / "manifest.json").read_text())
    return {"setup_s": (timer.started or start) - start, "us_per_instance": 1e6 * per_step / batch,
            "steps": timer.timed, "batch": batch, "notes": manifest["model"].get("notes", [])}


CHILDREN = {"train": child_train, "cmfrec": child_cmfrec, "steps": child_steps}


def child_main(kind: str, args_json: str) -> None:
    """Run one child job; print its result and this process's memory as one marked line."""
    from mmfuse.errors import MmfuseError

    args = json.loads(args_json)
    try:
        result = CHILDREN[kind](args)
    except MmfuseError as exc:  # a spec or data error: mmfuse refuses this setting
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if "spec" in args:  # name the generated spec by its file name only
            first = first.replace(str(Path(args["spec"]).parent) + os.sep, "")
        result = {"refused": first}
    print(MARK + json.dumps({**result, **memory()}), flush=True)


def run_child(kind: str, args: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """Run a child in a fresh interpreter; its result, with ``wall_s``, or ``failed``."""
    command = [sys.executable, str(Path(__file__).resolve()), "_child", kind, json.dumps(args)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"failed": f"timeout after {timeout:g} s"}
    wall = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {"failed": tail}
    return {**json.loads(lines[-1][len(MARK):]), "wall_s": wall}


# ====================================================================== measures


def seconds_per_epoch(run: Path) -> float:
    """Mean of the ``seconds`` column of a run folder's metrics.csv."""
    with open(run / "metrics.csv", newline="") as fh:
        seconds = [float(row["seconds"]) for row in csv.DictReader(fh)]
    return sum(seconds) / len(seconds)


def recovery(z: np.ndarray, planted: np.ndarray, seed: int = 0) -> float:
    """R² (uniform over the planted dims) on a random 20 % of instances of a linear map from
    the embeddings ``z`` to the planted factors, fit on the other 80 %."""
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    if len(z) != len(planted):
        return float("nan")
    order = np.random.default_rng(seed).permutation(len(z))
    cut = int(0.8 * len(z))
    train, test = order[:cut], order[cut:]
    fit = LinearRegression().fit(z[train], planted[train])
    return float(r2_score(planted[test], fit.predict(z[test]), multioutput="uniform_average"))


# ====================================================================== cases


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None or value != value else f"{value:,.{digits}f}"


def problem(result: dict[str, Any]) -> str | None:
    """Why a child gave no figures (a refused setting or a failure), or None."""
    if "refused" in result:
        return f"refused: {result['refused']}"
    return result.get("failed")


def discard(folder: Path, args: argparse.Namespace) -> None:
    """Delete a case's generated data once measured, unless --keep."""
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)


def sparse_case(name: str, shape: tuple[int, int, int], root: Path, args: argparse.Namespace
                ) -> list[str]:
    """Generate one sparse case, train mmfuse and cmfrec on it; its table rows."""
    n_u, n_i, nnz = shape
    folder = root / name
    log(f"[{name}] generating {n_u:,} × {n_i:,}, {nnz:,} cells")
    make_sparse(folder, n_u, n_i, nnz)
    spec = folder / "spec.yaml"
    spec.write_text(sparse_spec(n_u, n_i, args.epochs), encoding="utf-8")
    log(f"[{name}] mmfuse")
    mm = run_child("train", {"spec": str(spec), "out": str(folder / "run"),
                             "overrides": args.set}, args.timeout)
    if not problem(mm):
        mm["s_epoch"] = seconds_per_epoch(folder / "run")
    log(f"[{name}] cmfrec")
    ref = run_child("cmfrec", {"npz": str(folder / "ratings.npz"), "out": str(folder / "cmf")},
                    args.timeout)
    if "fit_s" in ref:
        ref["s_epoch"] = ref["fit_s"] / CMFREC_ITERS
    planted = {e: np.load(folder / f"{p}.npy") for e, p in (("user", "U"), ("item", "V"))}
    rows = []
    for method, res, emb in (("mmfuse", mm, folder / "run" / "embeddings"),
                             ("cmfrec ALS", ref, folder / "cmf")):
        head = f"| {name} | {n_u:,} | {n_i:,} | {nnz:,} | {method} |"
        if problem(res):
            rows.append(f"{head} {problem(res)} |" + " |" * 7)
            continue
        r2 = [recovery(np.load(emb / f"{e}.npy"), planted[e]) for e in ("user", "item")]
        ratio = None if problem(ref) else res["wall_s"] / ref["wall_s"]
        rows.append(f"{head} {fmt(res['wall_s'], 1)} | {fmt(res['fit_s'], 1)} | "
                    f"{fmt(res['maxrss_mib'], 0)} | {fmt(res['s_epoch'], 3)} | "
                    f"{fmt(1e6 * res['s_epoch'] / nnz, 3)} | {fmt(ratio)} | "
                    f"{fmt(r2[0], 3)} | {fmt(r2[1], 3)} |")
    discard(folder, args)
    return rows


def dense_case(sizes: list[int], root: Path, args: argparse.Namespace) -> list[str]:
    """For each n and each columns setting, time a fixed number of steps; the table rows."""
    results: dict[tuple[int, str], dict[str, Any]] = {}
    runs: dict[tuple[int, str], list[float]] = {}  # µs per instance of each repeat
    for n in sizes:
        log(f"[dense] generating n = {n:,}")
        make_dense(root / f"dense-{n}", n)
    for rep in range(args.repeats):  # interleaved: every setting once, then again
        for n in sizes:
            folder = root / f"dense-{n}"
            for col in args.columns:
                log(f"[dense] n = {n:,}, columns: {col}, run {rep + 1}/{args.repeats}")
                overrides = [f"views.features.columns={col}", "train.epochs=1000000",
                             *args.set]
                out = folder / f"run-{col}-{rep}"
                res = run_child("steps", {
                    "spec": str(folder / "spec.yaml"), "out": str(out),
                    "overrides": overrides, "warmup": args.warmup, "steps": args.steps},
                    args.timeout)
                if (n, col) not in results or problem(results[n, col]):
                    results[n, col] = res  # the first run that did not fail
                if not problem(res):
                    runs.setdefault((n, col), []).append(res["us_per_instance"])
                    log(f"[dense]   {res['us_per_instance']:.1f} µs/instance")
    for n in sizes:
        discard(root / f"dense-{n}", args)
    for key, times in runs.items():  # the fastest run: a shared machine's noise only adds
        results[key]["us_per_instance"] = float(min(times))
        results[key]["us_median"] = float(np.median(times))
    rows = []
    for (n, col), res in results.items():
        base = results[min(sizes), col].get("us_per_instance")
        if problem(res):
            rows.append(f"| {n:,} | {col} | {problem(res)} |" + " |" * 5)
            continue
        ratio = res["us_per_instance"] / base if base else None
        if any("columns: sketch" in note for note in res.get("notes", [])):
            col = f"{col} (→ sketch: over 20,000 rows)"
        rows.append(f"| {n:,} | {col} | {fmt(res['us_per_instance'], 1)} | "
                    f"{fmt(res['us_median'], 1)} | "
                    f"{fmt(res['rss_anon_mib'], 0)} | {fmt(res['hwm_mib'], 0)} | "
                    f"{fmt(ratio)} | {fmt(res['setup_s'], 1)} |")
    return rows


# ====================================================================== main


SPARSE_HEAD = ["| case | users | items | cells | method | wall s | fit s | peak RSS MiB | "
               "s/epoch | µs/cell/epoch | wall ÷ cmfrec | user R² | item R² |",
               "|" + " --- |" * 13]
DENSE_HEAD = ["| n | columns | µs/instance | median | RssAnon MiB | peak RSS MiB | "
              "× smallest n | setup s |", "|" + " --- |" * 8]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="sparse-small,sparse-large,dense",
                   help="comma-separated: sparse-small, sparse-large, dense")
    p.add_argument("--dense-sizes", default="5000,50000,500000")
    p.add_argument("--columns", default=",".join(COLUMNS),
                   help="the dense cases' `columns:` settings, comma-separated")
    p.add_argument("--epochs", type=int, default=5, help="mmfuse epochs (sparse cases)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per dense setting")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps before them")
    p.add_argument("--repeats", type=int, default=1,
                   help="dense: runs of every setting, interleaved; µs/instance is the fastest")
    p.add_argument("--sparse-shape", help="NU,NI,NNZ overriding the sparse-small size")
    p.add_argument("--timeout", type=float, help="seconds before a child is stopped")
    p.add_argument("--workdir", type=Path, help="folder for the generated data (not the repo)")
    p.add_argument("--keep", action="store_true", help="keep the generated data")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="spec override passed to mmfuse (repeatable)")
    args = p.parse_args(argv)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - {*SPARSE_CASES, "dense"}
    if unknown:
        p.error(f"unknown cases {sorted(unknown)}; known: {', '.join([*SPARSE_CASES, 'dense'])}")
    args.dense_sizes = [int(s) for s in args.dense_sizes.split(",") if s]
    args.columns = [c for c in args.columns.split(",") if c]
    if unknown := set(args.columns) - set(COLUMNS):
        p.error(f"unknown --columns {sorted(unknown)}: choose from {', '.join(COLUMNS)}")
    args.shapes = dict(SPARSE_CASES)
    if args.sparse_shape:
        args.shapes["sparse-small"] = tuple(int(s) for s in args.sparse_shape.split(","))
    if args.workdir and args.workdir.resolve().is_relative_to(REPO):
        p.error(f"--workdir must be outside the repository {REPO}")
    return args


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="mmfuse-scale-", dir=args.workdir))
    print(f"# mmfuse scale benchmark\n\n`{shlex.join([Path(sys.executable).name, *sys.argv])}`"
          f"  \n{datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
          f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, device cpu\n")
    try:
        sparse = [c for c in args.cases if c in SPARSE_CASES]
        if sparse:
            rows = [r for c in sparse for r in sparse_case(c, args.shapes[c], root, args)]
            print("## Sparse ratings (planted rank 8)\n\n" + "\n".join(SPARSE_HEAD + rows))
            print(f"\nmmfuse: {args.epochs} epochs; cmfrec: exact ALS, k = {DIM}, "
                  f"{CMFREC_ITERS} iterations (its s/epoch is one ALS sweep). Wall: the whole "
                  "subprocess (imports, reading, training, embeddings); peak RSS: its "
                  "ru_maxrss. R²: linear map from embeddings to the planted factors, "
                  "80/20 split of instances.\n", flush=True)
        if "dense" in args.cases:
            rows = dense_case(args.dense_sizes, root, args)
            print("## Dense features (n × 100) + images (n × 3 × 16 × 16)\n\n"
                  + "\n".join(DENSE_HEAD + rows))
            print(f"\n{args.steps} timed steps after {args.warmup} warm-up steps, "
                  f"{args.repeats} interleaved run(s) of each setting, each in its own "
                  "process; µs/instance = seconds per step / batch size, of the fastest run "
                  "(on a shared machine noise only adds time: identical processes differ by "
                  "up to 1.5× in CPU time a step), median: over the runs; RssAnon (anonymous "
                  "memory) and VmHWM "
                  "(peak RSS, counting touched memory-mapped pages) at the end; × smallest "
                  "n: µs/instance over that of the smallest n (same columns); setup: "
                  "seconds from the train call to the first step.\n", flush=True)
    finally:
        if args.keep:
            log(f"data kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1:])

"""The paper's published training loop beside ``mmfuse train`` at the paper's architecture.

    .venv/bin/python benchmarks/paper_loop.py [--books 5000] [--size 224] [--steps 10]
        [--warmup 3] [--blocks 2] [--arms paper,mmfuse[,mmfuse-bf16][,mmfuse-compile]]
        [--allocators default,tuned]

The published loop is re-created from the facts in ``../shared/paper/REFERENCE-NOTES.md``:
MMEDA-II (conv autoencoder of 3×224×224 covers, text row autoencoder 100→50→50→50→100,
text column autoencoder 5000→2500→50→2500→5000, fusion Linear(100→50), 38.2 M parameters),
SGD lr 0.01, batch 50, one optimiser step per (row batch, column batch) pair — two column
batches of the 100 word2vec dimensions per row batch, so the image branch runs twice per row
batch and an epoch of 5,000 books is 200 steps — with plain ``float32`` batches cut from the
arrays at every step, as the notebooks did.  ``mmfuse`` trains the same architecture from a
spec (preset ``mmeda2``, SGD lr 0.01, batch 50, the whole column entity every step: 100
steps an epoch; the arm ``mmfuse-bf16`` the same with ``train.precision: bf16``, bf16
autocast on the CPU, its embedding in float32; ``-compile`` adds ``train.compile: true``,
whose compilation falls in the warm-up steps).  The data are random tensors of the
paper's shapes (uint8 covers, float32 descriptions), written once to a temporary folder.

Each (arm, allocator) runs in its own process, interleaved in blocks (A, B, A, B, …) so that
the machine's load falls on both alike.  Allocators: ``default`` (as the process starts;
mmfuse tunes glibc itself, :mod:`mmfuse.allocator`), ``tuned``
(``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=…``: glibc keeps
freed activations instead of returning them to the OS after every step) and ``system``
(``MMFUSE_MALLOC=system``: mmfuse leaves glibc as it is; the paper's loop is then the
``default`` one).  Printed (markdown,
stdout): seconds per step and per epoch (the median over blocks), the ratio of the epochs,
minor page faults per step (memory mapped afresh: the allocator's churn, which the load of a
shared machine does not move),
peak RSS, the time to embed every book (mmfuse's batched ``embed_all`` against the published
per-sample loop, timed on 200 books and scaled), and the model's FLOP rate per training step
(``torch.utils.flop_counter``) as a fraction of ``torch.mm``'s rate measured in the same
process.  Nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TUNED = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"
BATCH, TEXT_DIM, CODE = 50, 100, 50


# ============================================================================ the data


def write_data(root: Path, books: int, size: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    covers = np.lib.format.open_memmap(root / "covers.npy", "w+", np.uint8,
                                       (books, 3, size, size))
    for start in range(0, books, 500):
        stop = min(start + 500, books)
        covers[start:stop] = rng.integers(0, 256, (stop - start, 3, size, size), np.uint8)
    covers.flush()
    np.save(root / "description.npy", rng.standard_normal((books, TEXT_DIM), np.float32))


def write_spec(root: Path, books: int, size: int) -> Path:
    spec = root / "paper.yaml"
    spec.write_text(f"""\
name: paper
seed: 0
entities:
  book: {{size: {books}}}
  w2v_dim: {{size: {TEXT_DIM}}}
views:
  cover:
    rows: book
    tensor: {{shape: [3, {size}, {size}]}}
    source: {{reader: npy, path: covers.npy}}
    encoder: {{type: conv, params: {{channels: [16, 4], hidden: 512}}}}
  description:
    rows: book
    cols: w2v_dim
    source: {{reader: npy, path: description.npy}}
    encoder: {{type: dense, params: {{hidden: [50]}}}}
    col_encoder: {{type: dense, params: {{hidden: [2500]}}}}
model: {{preset: mmeda2, dim: {CODE}}}
train:
  epochs: 1
  batch_size: {BATCH}
  entity_batch: {{w2v_dim: {TEXT_DIM}}}
  optimizer: {{type: sgd, lr: 0.01}}
  device: cpu
  tol: 0.0
""")
    return spec


# ============================================================================ the paper's loop


def paper_model(size: int):
    """MMEDA-II as the notebooks built it (REFERENCE-NOTES.md)."""
    import torch
    from torch import nn

    flat = 4 * (size // 4) * (size // 4)

    class PaperMMEDA2(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_enc = nn.Sequential(
                nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, CODE))
            self.conv_dec = nn.Sequential(
                nn.Linear(CODE, 512), nn.ReLU(), nn.Linear(512, flat), nn.ReLU(),
                nn.Unflatten(1, (4, size // 4, size // 4)),
                nn.ConvTranspose2d(4, 16, 2, stride=2), nn.ReLU(),
                nn.ConvTranspose2d(16, 3, 2, stride=2))
            self.row_enc = nn.Sequential(nn.Linear(TEXT_DIM, 50), nn.ReLU(), nn.Linear(50, CODE))
            self.row_dec = nn.Sequential(nn.Linear(CODE, 50), nn.ReLU(), nn.Linear(50, TEXT_DIM))
            self.col_enc = None  # made once the number of books is known
            self.fusion = nn.Linear(2 * CODE, CODE)

        def columns(self, books: int) -> None:
            self.col_enc = nn.Sequential(nn.Linear(books, 2500), nn.ReLU(),
                                         nn.Linear(2500, CODE))
            self.col_dec = nn.Sequential(nn.Linear(CODE, 2500), nn.ReLU(),
                                         nn.Linear(2500, books))

        def forward(self, image, text_rows, text_cols, block):
            code_i = self.conv_enc(image)
            code_t = self.row_enc(text_rows)
            z_c = self.col_enc(text_cols)
            z_r = self.fusion(torch.cat([code_i, code_t], 1))
            mse = nn.functional.mse_loss
            return (mse(self.conv_dec(code_i), image) + mse(self.row_dec(code_t), text_rows)
                    + mse(self.col_dec(z_c), text_cols) + mse(z_r @ z_c.T, block))

    model = PaperMMEDA2()
    return model


def run_paper(root: Path, steps: int, warmup: int) -> dict:
    import numpy as np
    import torch

    torch.manual_seed(0)
    covers = np.load(root / "covers.npy", mmap_mode="r")
    text = np.load(root / "description.npy")
    books, size = covers.shape[0], covers.shape[-1]
    model = paper_model(size)
    model.columns(books)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    times = []
    for step in range(warmup + steps):
        if step == warmup:
            faults = _faults()
        started = time.perf_counter()
        if step % 2 == 0:  # a new row batch every other step: two column batches each
            rows = rng.choice(books, BATCH, replace=False)
            image = torch.from_numpy(covers[np.sort(rows)].astype(np.float32) / 255.0)
            text_rows = torch.from_numpy(text[np.sort(rows)])
        cols = np.arange(BATCH) + BATCH * (step % 2)
        text_cols = torch.from_numpy(np.ascontiguousarray(text[:, cols].T))
        block = text_rows[:, cols]
        opt.zero_grad()
        loss = model(image, text_rows, text_cols, block)
        loss.backward()
        opt.step()
        float(loss)
        times.append(time.perf_counter() - started)
    per_step = statistics.median(times[warmup:])
    faults_per_step = (_faults() - faults) / steps
    n_embed = min(200, books)
    model.eval()
    started = time.perf_counter()
    with torch.no_grad():  # the notebooks' embedding: one book at a time
        for i in range(n_embed):
            image = torch.from_numpy(covers[i:i + 1].astype(np.float32) / 255.0)
            model.fusion(torch.cat([model.conv_enc(image),
                                    model.row_enc(torch.from_numpy(text[i:i + 1]))], 1))
    embed = (time.perf_counter() - started) * books / n_embed
    return {"s_per_step": per_step, "steps_per_epoch": 2 * books // BATCH,
            "faults_per_step": faults_per_step,
            "parameters": sum(p.numel() for p in model.parameters()),
            "embed_s": embed, "embed_measured_on": n_embed}


# ============================================================================ mmfuse


class _Enough(Exception):
    pass


def arm_overrides(arm: str) -> list[str]:
    """The spec overrides of an mmfuse arm: ``mmfuse[-bf16][-compile]``."""
    parts = arm.split("-")
    if parts[0] != "mmfuse" or not set(parts[1:]) <= {"bf16", "compile"}:
        raise SystemExit(f"unknown arm {arm!r}: paper, or mmfuse[-bf16][-compile]")
    return [f"train.precision={'bf16' if 'bf16' in parts else 'fp32'}",
            f"train.compile={'true' if 'compile' in parts else 'false'}"]


def run_mmfuse(root: Path, steps: int, warmup: int, overrides: list[str]) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mmfuse.api import train
    from mmfuse.build import build
    from mmfuse.plugin_api import Callback
    from mmfuse.plugins import get_plugins
    from mmfuse.spec import load_spec
    from mmfuse.training import embed_all

    spec = load_spec(root / "paper.yaml", overrides)
    times: list[float] = []
    faults: list[int] = []

    class Timer(Callback):
        def on_epoch_start(self, trainer, epoch, n_steps):
            self.last = time.perf_counter()

        def on_step_end(self, trainer, step, terms):
            now = time.perf_counter()
            times.append(now - self.last)
            self.last = now
            if len(times) == warmup:
                faults.append(_faults())
            if len(times) >= warmup + steps:
                faults.append(_faults())
                raise _Enough

    out = Path(tempfile.mkdtemp(dir=root))
    with contextlib.suppress(_Enough):  # enough steps timed
        train(spec, out / "run", callbacks=[Timer()], evaluate=False, ignore_memory=True)
    per_step = statistics.median(times[warmup:])
    built = build(spec, get_plugins(), device="cpu")
    started = time.perf_counter()
    embed_all(built, "book")
    embed = time.perf_counter() - started
    # the FLOPs of one training step (forward and backward), and torch.mm's rate here
    batch = next(iter(built.batcher.epoch(0)))
    built.model.train()
    with FlopCounterMode(display=False) as counter:
        terms = built.model(batch)
        torch.stack(list(terms.values())).sum().backward()
    flops = counter.get_total_flops()
    return {"s_per_step": per_step, "steps_per_epoch": built.batcher.steps_per_epoch(),
            "faults_per_step": (faults[1] - faults[0]) / steps,
            "parameters": sum(p.numel() for p in built.model.parameters()),
            "embed_s": embed, "step_flops": flops, "mm_flops_per_s": mm_rate()}


def _faults() -> int:
    """Minor page faults of this process so far (memory mapped afresh and touched)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def mm_rate(n: int = 2048, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - started)


# ============================================================================ driver


def child(arm: str, root: Path, steps: int, warmup: int) -> None:
    if arm == "paper":
        result = run_paper(root, steps, warmup)
    else:  # mmfuse[-bf16][-compile]: bf16 autocast, torch.compile in training
        result = run_mmfuse(root, steps, warmup, arm_overrides(arm))
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--arms", default="paper,mmfuse")
    parser.add_argument("--allocators", default="default,tuned,system")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in each child (default: torch's own)")
    args = parser.parse_args()
    arms, allocators = args.arms.split(","), args.allocators.split(",")
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print(f"writing {args.books} random covers 3×{args.size}×{args.size} …", file=sys.stderr)
        write_data(root, args.books, args.size)
        write_spec(root, args.books, args.size)
        for block in range(args.blocks):
            for allocator in allocators:
                for arm in arms:
                    env = dict(os.environ)
                    env.pop("GLIBC_TUNABLES", None)
                    env.pop("MMFUSE_MALLOC", None)
                    if allocator == "tuned":
                        env["GLIBC_TUNABLES"] = TUNED
                    elif allocator == "system":
                        env["MMFUSE_MALLOC"] = "system"
                    if args.threads:
                        env["OMP_NUM_THREADS"] = str(args.threads)
                    started = time.perf_counter()
                    proc = subprocess.run(
                        [sys.executable, __file__, "_child", arm, str(root), str(args.steps),
                         str(args.warmup)], env=env, capture_output=True, text=True)
                    if proc.returncode:
                        sys.stderr.write(proc.stderr)
                        raise SystemExit(f"{arm} ({allocator}) failed")
                    result = json.loads(proc.stdout.strip().splitlines()[-1])
                    results.setdefault((arm, allocator), []).append(result)
                    print(f"block {block + 1}: {arm} ({allocator}) {result['s_per_step']:.3f} "
                          f"s/step ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    report(results, args)


def report(results: dict[tuple[str, str], list[dict]], args) -> None:
    def median(key, runs):
        return statistics.median(r[key] for r in runs)

    print(f"{args.books} books, covers 3×{args.size}×{args.size}; median over {args.blocks} "
          f"interleaved blocks of {args.steps} steps (after {args.warmup} warm-up steps)\n")
    print("| loop | allocator | parameters | s/step | steps/epoch | s/epoch | page faults/step "
          "| peak RSS MiB | embed all books (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    epochs: dict[tuple[str, str], float] = {}
    for (arm, allocator), runs in results.items():
        step = median("s_per_step", runs)
        epoch = step * runs[0]["steps_per_epoch"]
        epochs[(arm, allocator)] = epoch
        embed = median("embed_s", runs)
        note = " (per sample, scaled)" if arm == "paper" else ""
        print(f"| {arm} | {allocator} | {runs[0]['parameters'] / 1e6:.1f} M | {step:.3f} | "
              f"{runs[0]['steps_per_epoch']} | {epoch:.1f} | "
              f"{median('faults_per_step', runs):,.0f} | "
              f"{median('peak_rss_mib', runs):.0f} | {embed:.1f}{note} |")
    print()
    for allocator in dict.fromkeys(a for _, a in results):
        paper = results.get(("paper", allocator))
        for arm in dict.fromkeys(a for a, _ in results if a != "paper"):
            ours = results.get((arm, allocator))
            if paper and ours:
                print(f"- {allocator} allocator: the paper's epoch / {arm}'s = "
                      f"{epochs[('paper', allocator)] / epochs[(arm, allocator)]:.2f}×; "
                      f"embedding: {median('embed_s', paper) / median('embed_s', ours):.1f}× "
                      f"faster in {arm}")
            if ours:
                rate = median("step_flops", ours) / median("s_per_step", ours)
                mm = median("mm_flops_per_s", ours)
                print(f"- {arm} ({allocator}): {median('step_flops', ours) / 1e9:.1f} GFLOP a "
                      f"step, {rate / 1e9:.1f} GFLOP/s = {rate / mm:.0%} of torch.mm's "
                      f"(float32) {mm / 1e9:.1f} GFLOP/s here")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        child(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()

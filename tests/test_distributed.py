"""Distributed training on the CPU: two gloo processes, started by `mmfuse train --nproc 2`
(torch's elastic launcher) or by torchrun; shards, rank-0 writes, a killed rank, resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.linear_model import LinearRegression
from test_cli import flat, invoke
from test_readme import SHOP, write_shop

from mmfuse.api import train
from mmfuse.build import build
from mmfuse.errors import MmfuseError
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec
from mmfuse.strategy import make_strategy

EPOCHS = 100


def write_planted(folder: Path, n_user=300, n_item=200, rank=3, density=0.1) -> Path:
    """A sparse users × items matrix of gaussian ratings u·v + noise from planted factors
    (U.npy, V.npy), factorised by free tables (cmf: sparse gradients, which DDP all-reduces
    with gloo); 50 instances a step, so either primary splits into even steps."""
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal((n_user, rank)), rng.standard_normal((n_item, rank))
    rows, cols = np.nonzero(rng.random((n_user, n_item)) < density)
    values = (u[rows] * v[cols]).sum(1) + 0.1 * rng.standard_normal(len(rows))
    folder.mkdir(parents=True, exist_ok=True)
    sp.save_npz(folder / "ratings.npz", sp.csr_array(
        (values.astype(np.float32), (rows, cols)), shape=(n_user, n_item)))
    np.save(folder / "U.npy", u)
    np.save(folder / "V.npy", v)
    spec = folder / "planted.yaml"
    spec.write_text(
        "name: planted\nseed: 0\n"
        f"entities: {{user: {{size: {n_user}}}, item: {{size: {n_item}}}}}\n"
        "views:\n  ratings: {rows: user, cols: item, likelihood: gaussian, "
        "source: {reader: npz, path: ratings.npz}}\n"
        "model: {preset: cmf, dim: 8}\n"
        f"train: {{epochs: {EPOCHS}, batch_size: 50, device: cpu, tol: 0.0, threads: 1, "
        "optimizer: {lr: 0.05}}\n")
    return spec


def recovery(run: Path, data: Path) -> dict[str, float]:
    """R² of a linear probe from each entity's embeddings to its planted factors (fit on the
    first 80 % of the instances, scored on the rest)."""
    out = {}
    for entity, planted in (("user", "U"), ("item", "V")):
        z, y = np.load(run / "embeddings" / f"{entity}.npy"), np.load(data / f"{planted}.npy")
        cut = int(0.8 * len(z))
        out[entity] = LinearRegression().fit(z[:cut], y[:cut]).score(z[cut:], y[cut:])
    return out


def manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def epochs_done(run: Path) -> int:
    metrics = run / "metrics.csv"
    return len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0


def process_of_rank(parent: int, rank: int) -> int:
    """The pid of the worker of local ``rank`` among the launcher's children: they are
    spawned in rank order (the test then checks that the failure names this pid)."""
    workers = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        if int(stat[1]) == parent and b"spawn_main" in cmdline:
            workers.append((int(stat[19]), int(proc.name)))  # (start time, pid)
    assert len(workers) == 2, workers
    return sorted(workers)[rank][1]


# ---------------------------------------------------------------------- shards (one process)


@pytest.mark.parametrize("sets", [[], ["train.primary=ratings", "train.cell_batch=500"]])
def test_two_shards_split_an_epoch_into_disjoint_halves_of_the_steps(tmp_path, sets):
    spec = load_spec(write_planted(tmp_path), sets)
    alone = build(spec, get_plugins(), "cpu")
    shards = [build(spec, get_plugins(), "cpu", (rank, 2)) for rank in (0, 1)]
    view = alone.batcher.primary_is_view
    key = "ratings" if view else alone.batcher.primary

    def visited(built):  # the primary's instances (or cells) each step trains
        for batch in built.batcher.epoch(3):
            if view:
                cells = batch.cells["ratings"]
                yield {(int(batch.idx["user"][r]), int(batch.idx["item"][c]))
                       for r, c in zip(cells.rows, cells.cols, strict=True)}
            else:
                yield set(batch.idx[key].tolist())

    steps = [list(visited(b)) for b in shards]
    assert len(steps[0]) == len(steps[1]) == math.ceil(alone.batcher.steps_per_epoch() / 2)
    halves = [set().union(*s) for s in steps]
    assert halves[0] | halves[1] == set().union(*visited(alone))
    # disjoint but for DistributedSampler's padding (6,099 cells: one cell twice)
    padding = 2 * shards[0].batcher.shard_size() - alone.batcher.epoch_size()
    assert len(halves[0] & halves[1]) == padding == (1 if view else 0)


def test_two_shards_visit_every_cell_of_the_other_sparse_views_once(multiview):
    """A process's step s is the job's step 2s + rank: a sparse view that is not the primary's
    walks its cells along the job's steps, so the two processes share them out."""
    from test_cells import drawn_cells, stored

    spec = load_spec(multiview, ["train.primary=word", "train.batch_size=4"])
    shards = [build(spec, get_plugins(), "cpu", (rank, 2)) for rank in (0, 1)]
    cells = [{tuple(map(int, c)) for c in drawn_cells(b, "ratings")} for b in shards]
    assert not cells[0] & cells[1]
    assert cells[0] | cells[1] == stored(multiview.parent / "ratings.npz")


# ---------------------------------------------------------------------- errors (no processes)


def test_bad_process_counts_and_launchers_are_clear_errors(tmp_path, monkeypatch):
    spec = write_planted(tmp_path)
    result = invoke("train", spec, "--nproc", 0, "--out", tmp_path / "r0")
    assert result.exit_code == 2 and "--nproc" in flat(result.output)
    result = invoke("train", spec, "--set", "train.strategy=ddp", "--out", tmp_path / "r1")
    assert result.exit_code == 1
    assert "needs a launcher" in flat(result.output) and "--nproc N" in flat(result.output)
    if torch.cuda.device_count() < 2:
        result = invoke("train", spec, "--nproc", 2, "--device", "cuda", "--out",
                        tmp_path / "r2")
        assert result.exit_code == 1 and "need a GPU each" in flat(result.output)
    for key, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(MmfuseError, match="started 2 processes, but train.strategy is single"):
        make_strategy(load_spec(spec, ["train.strategy=single"]))
    assert not any((tmp_path / f"r{i}").exists() for i in range(3))


# ---------------------------------------------------------------------- two gloo processes


def test_two_processes_train_halves_survive_a_killed_rank_and_match_one_process(tmp_path):
    """`--nproc 2` on a planted sparse set: rank 1 killed mid-run stops the job with a message
    naming it; `--resume` finishes it; every rank did half the steps of one process, and a
    linear probe of the result is within 0.02 of the single-process run's."""
    spec = write_planted(tmp_path / "data")
    run = tmp_path / "run"
    killed: list[int] = []

    def kill_rank_1_after_two_epochs():
        deadline = time.monotonic() + 120
        while epochs_done(run) < 2 and time.monotonic() < deadline:  # two checkpoints
            time.sleep(0.02)
        killed.append(process_of_rank(os.getpid(), 1))
        os.kill(killed[0], signal.SIGKILL)

    killer = threading.Thread(target=kill_rank_1_after_two_epochs, daemon=True)
    killer.start()
    result = invoke("train", spec, "--nproc", 2, "--out", run, "-q")
    killer.join()
    assert result.exit_code == 1, result.output
    assert f"rank 1 (pid {killed[0]}) was killed by SIGKILL" in flat(result.output)
    assert f"mmfuse train {spec} --out {run} --resume --nproc 2" in flat(result.output)
    killed_at = epochs_done(run)
    assert 2 <= killed_at < EPOCHS and not (run / "embeddings").exists()

    result = invoke("train", spec, "--nproc", 2, "--out", run, "--resume", "-q")
    assert result.exit_code == 0, result.output
    assert epochs_done(run) == EPOCHS
    alone = train(load_spec(spec), tmp_path / "alone")
    assert alone.built.model.sparse_parameters()  # the free tables: sparse gradients
    for entity, n in {"user": 300, "item": 200}.items():
        assert np.load(run / "embeddings" / f"{entity}.npy").shape == (n, 8)
    job_info = manifest(run)
    assert job_info["status"] == "done"
    dist = job_info["distributed"]
    assert (dist["world_size"], dist["backend"]) == (2, "gloo")
    per_epoch = alone.built.batcher.steps_per_epoch()
    assert [r["rank"] for r in dist["ranks"]] == [0, 1]
    for r in dist["ranks"]:  # this session: the epochs after the kill
        assert r["steps_per_epoch"] * 2 == per_epoch
        assert r["steps"] == r["steps_per_epoch"] * (EPOCHS - killed_at)
        assert r["per_second"] > 0
    both, one = recovery(run, spec.parent), recovery(tmp_path / "alone", spec.parent)
    for entity in ("user", "item"):
        assert one[entity] > 0.9
        assert abs(both[entity] - one[entity]) < 0.02, (both, one)

    with pytest.raises(MmfuseError, match="written by a job of 2 process"):
        train(load_spec(spec), run, resume=True)  # one process cannot continue it


@pytest.mark.slow  # ≈30 s: the README's conv + word2vec spec in two processes
def test_readme_spec_trains_in_two_processes(tmp_path, capfd):
    spec = write_shop(tmp_path)
    sets = ["train.batch_size=8"]  # 4 steps over its 30 books (the primary) in one process
    result = invoke("train", spec, "--nproc", 2, "--epochs", 1, "--set", sets[0],
                    "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    out = capfd.readouterr().out  # the processes print, not this one: rank 0 alone
    assert flat(out).count("trained 1 epochs in 2 processes (gloo)") == 1, out
    assert flat(out).count(f"run: {tmp_path / 'run'}") == 1
    for entity, n in SHOP.items():
        z = np.load(tmp_path / "run" / "embeddings" / f"{entity}.npy")
        assert z.shape == (n, 50) and np.isfinite(z).all()
    assert "genre" in json.loads((tmp_path / "run" / "evaluation.json").read_text())["targets"]
    alone = build(load_spec(spec, sets), get_plugins(), "cpu").batcher
    assert (alone.primary, alone.steps_per_epoch()) == ("book", 4)
    ranks = manifest(tmp_path / "run")["distributed"]["ranks"]
    assert [r["steps"] for r in ranks] == [2, 2]


@pytest.mark.slow
def test_a_resumed_job_ends_with_the_same_embeddings_to_the_bit(tmp_path):
    spec = write_planted(tmp_path / "data")
    for run, epochs in (("full", 6), ("cut", 3)):
        result = invoke("train", spec, "--nproc", 2, "--epochs", epochs, "--out",
                        tmp_path / run, "-q")
        assert result.exit_code == 0, result.output
    result = invoke("train", spec, "--nproc", 2, "--epochs", 6, "--out", tmp_path / "cut",
                    "--resume", "-q")
    assert result.exit_code == 0, result.output
    for entity in ("user", "item"):
        full, cut = (np.load(tmp_path / run / "embeddings" / f"{entity}.npy")
                     for run in ("full", "cut"))
        assert np.array_equal(full, cut)


@pytest.mark.slow
def test_torchrun_runs_the_same_command(tmp_path):
    spec = write_planted(tmp_path / "data")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "mmfuse"]
    done = subprocess.run([*torchrun, "train", str(spec), "--out", str(tmp_path / "run"),
                           "--epochs", "2", "-q"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    dist = manifest(tmp_path / "run")["distributed"]
    assert (dist["strategy"], dist["world_size"]) == ("ddp", 2)
    assert epochs_done(tmp_path / "run") == 2

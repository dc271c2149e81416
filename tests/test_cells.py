"""Observed cells as the unit of a matrix view: epochs, negatives, free factors, guards, cost."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from test_model import matrix_only

from mmfuse.api import train
from mmfuse.build import build
from mmfuse.cost import check_memory, estimate
from mmfuse.errors import MmfuseError, SpecError
from mmfuse.model import WIDE
from mmfuse.optim import RowAdam
from mmfuse.plugins import get_plugins
from mmfuse.spec import load_spec
from mmfuse.training import Optimizers


def drawn_cells(built, view, epoch=0):
    """Global (row, col) of every cell of ``view`` the epoch's steps score, in order."""
    vspec = built.spec.views[view]
    out = []
    for batch in built.batcher.epoch(epoch):
        cells = batch.cells[view]
        rows = batch.idx[vspec.rows][cells.rows].numpy()
        cols = batch.idx[vspec.cols][cells.cols].numpy()
        out.append(np.stack([rows, cols], axis=1))
    return np.concatenate(out)


def stored(path):
    coo = sp.load_npz(path).tocoo()
    return {(int(r), int(c)) for r, c in zip(coo.row, coo.col, strict=True)}


@pytest.mark.parametrize("primary", ["ratings", "book", "user", "word"])
def test_an_epoch_visits_every_stored_cell_once(multiview, primary):
    """Primary view (cell batches), one of its entities (the cells of the step's instances)
    or another entity (its cells spread over the primary's steps)."""
    built = build(load_spec(multiview, [f"train.primary={primary}", "train.cell_batch=50",
                                        "train.batch_size=10"]), get_plugins())
    cells = drawn_cells(built, "ratings")
    assert len(cells) == len({tuple(c) for c in cells})  # no cell twice
    assert {tuple(map(int, c)) for c in cells} == stored(multiview.parent / "ratings.npz")
    if primary == "ratings":
        assert built.batcher.steps_per_epoch() == -(-len(cells) // 50)
        assert built.batcher.epoch_size() == len(cells)
    else:
        assert built.batcher.epoch_size() == {"book": 48, "user": 32, "word": 24}[primary]
    if primary in ("book", "user"):  # a step holds every cell of its own instances
        matrix = sp.load_npz(multiview.parent / "ratings.npz")
        matrix = matrix.tocsr() if primary == "user" else matrix.tocsc()
        for batch in built.batcher.epoch(0):
            mine = batch.idx[primary].numpy()
            assert len(batch.cells["ratings"]) == sum(matrix.indptr[i + 1] - matrix.indptr[i]
                                                      for i in mine)
    # the next epoch draws them in another order
    assert not np.array_equal(cells, drawn_cells(built, "ratings", epoch=1))


def test_the_default_primary_is_the_entity_of_the_largest_sparse_view_with_costlier_rows(
        multiview, tmp_path):
    """Taking every cell of an instance encodes its row once; the other side's rows are
    encoded once per cell: the side whose rows are longest is the one taken whole."""
    built = build(load_spec(multiview), get_plugins())  # 32 users × 48 books, 30 % stored
    assert built.batcher.primary == "user"  # a user has ≈14 ratings, a book ≈10
    tall = sp.random(300, 20, density=0.3, random_state=0, format="csr")  # 6 per row, 90 a col
    sp.save_npz(tmp_path / "tall.npz", tall)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nentities: {a: {}, b: {}}\nviews:\n"
                    "  m: {rows: a, cols: b, source: {reader: npz, path: tall.npz}}\n")
    assert build(load_spec(spec), get_plugins()).batcher.primary == "b"
    spec.write_text(spec.read_text().replace("rows: a, cols: b", "rows: b, cols: a").replace(
        "tall.npz", "wide.npz"))
    sp.save_npz(tmp_path / "wide.npz", sp.csr_array(tall.T))
    assert build(load_spec(spec), get_plugins()).batcher.primary == "b"


def long_rows(tmp_path, n_rows=5000, n_cols=10000, per_row=40):
    """A spec on a sparse matrix whose ``n_rows`` rows hold ``per_row`` cells each (the
    rows are the longer side, so the primary)."""
    rng = np.random.default_rng(0)
    stride = n_cols // per_row  # a row's k-th cell lies in the k-th block of columns
    cols = rng.integers(0, stride, (n_rows, per_row)) + stride * np.arange(per_row)
    m = sp.csr_array((rng.standard_normal(n_rows * per_row).astype(np.float32),
                      cols.ravel(), np.arange(0, n_rows * per_row + 1, per_row)),
                     shape=(n_rows, n_cols))
    sp.save_npz(tmp_path / "long.npz", m)
    spec = tmp_path / "long.yaml"
    spec.write_text("name: s\nentities: {a: {}, b: {}}\nviews:\n"
                    "  m: {rows: a, cols: b, source: {reader: npz, path: long.npz}}\n"
                    "train: {device: cpu}\n")
    return spec


def test_a_sparse_primary_s_default_step_is_sized_in_cells(tmp_path):
    """Steps of a sparse primary entity hold about cell_batch cells (a step's fixed costs,
    the dense tables' optimiser, are paid per step); on data too small for that many cells
    a step an epoch still takes 50 steps, of no fewer than 50 instances; batch_size set
    wins, and a primary view's steps take cell_batch cells (the default 20,000 cut alike)."""
    spec = long_rows(tmp_path, n_rows=5000, per_row=40)  # 200k cells
    plugins = get_plugins()

    def step(*sets):
        batcher = build(load_spec(spec, list(sets)), plugins).batcher
        assert batcher.primary in ("a", "m")
        first = next(iter(batcher.epoch(0)))
        return batcher, len(first.cells["m"])

    batcher, cells = step("train.cell_batch=2000")
    assert batcher.batch_sizes["a"] == 50 and cells == 2000 == batcher.step_cells()
    batcher, cells = step()  # 20,000 cells would be 10 steps an epoch: cut to 50 steps
    assert batcher.steps_per_epoch() == 50 and cells == 4000 == batcher.step_cells()
    batcher, cells = step("train.batch_size=7")
    assert batcher.batch_sizes["a"] == 7 and cells == 280
    batcher, _ = step("train.primary=m")
    assert batcher.cell_batch == 4096 and batcher.steps_per_epoch() == 49  # not under 4,096
    batcher, _ = step("train.primary=m", "train.cell_batch=1000")
    assert batcher.steps_per_epoch() == 200
    small = long_rows(tmp_path, n_rows=600, n_cols=300, per_row=10)  # 50 rows a step
    assert build(load_spec(small), plugins).batcher.batch_sizes["a"] == 50


def test_the_default_learning_rate_grows_with_the_root_of_a_sparse_step(tmp_path, multiview):
    """lr left out: 1e-3 up to 5,000 cells a step, then × √(cells / 5,000); set: as set."""
    spec = long_rows(tmp_path, n_rows=5000, per_row=40)
    plugins = get_plugins()
    for sets, lr in ((["train.batch_size=100"], 1e-3),  # 4,000 cells
                     (["train.batch_size=500"], 2e-3),  # 20,000 cells
                     (["train.batch_size=500", "train.optimizer.lr=0.01"], 0.01),
                     (["train.primary=m", "train.cell_batch=45000"], 3e-3)):
        built = build(load_spec(spec, sets), plugins)
        assert built.lr == pytest.approx(lr)
        rates = [g["lr"] for opt in Optimizers(built).parts for g in opt.param_groups]
        assert rates == pytest.approx([lr] * len(rates))
    job = build(load_spec(spec, ["train.batch_size=250"]), plugins, shard=(0, 2))
    assert job.lr == pytest.approx(2e-3)  # 10,000 cells a process, two processes a step
    dense = build(load_spec(multiview, ["train.batch_size=500"]), plugins)
    assert dense.lr == 1e-3  # its sparse view's steps hold under 5,000 cells


def test_bernoulli_sparse_views_add_sampled_negatives(tmp_path):
    rng = np.random.default_rng(0)
    net = sp.random(60, 40, density=0.05, random_state=0, data_rvs=np.ones, format="csr")
    sp.save_npz(tmp_path / "net.npz", net)
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nentities: {a: {size: 60}, b: {size: 40}}\nviews:\n"
                    "  net: {rows: a, cols: b, likelihood: bernoulli, "
                    "source: {reader: npz, path: net.npz}}\n"
                    "train: {cell_batch: 30, device: cpu}\n")
    for rate, share in ((None, 0.5), (3, 0.75), (0, 0.0)):
        sets = [] if rate is None else [f"views.net.negatives={rate}"]
        built = build(load_spec(spec, sets), get_plugins())
        batch = next(iter(built.batcher.epoch(0)))
        values = batch.cells["net"].values.numpy()
        assert (values == 0).mean() == pytest.approx(share, abs=0.02)
        assert set(np.unique(values)) <= {0.0, 1.0}
    del rng


def test_free_factors_take_sparse_gradients_and_update_only_the_rows_used(multiview):
    built = build(load_spec(matrix_only(multiview), ["model.preset=cmf", "train.primary=ratings",
                                   "train.cell_batch=20"]), get_plugins())
    model = built.model
    assert {id(p) for p in model.sparse_parameters()} == {
        id(t.weight) for t in model.free.values()}
    opt = Optimizers(built)
    assert any(isinstance(o, RowAdam) for o in opt.parts)
    batch = next(iter(built.batcher.epoch(0)))
    before = model.free["user"].weight.detach().clone()
    loss = sum(model(batch).values())
    opt.zero_grad()
    loss.backward()
    assert model.free["user"].weight.grad.is_sparse
    opt.step()
    moved = (model.free["user"].weight.detach() != before).any(dim=1)
    used = torch.zeros(len(before), dtype=torch.bool)
    used[batch.idx["user"]] = True
    assert moved.any() and not (moved & ~used).any()


@pytest.mark.parametrize("sets", [["train.primary=ratings", "train.cell_batch=64"],
                                  ["model.preset=cmf", "train.primary=ratings"]])
def test_resume_is_bit_exact_with_cell_batches(multiview, tmp_path, sets):
    from test_training import KillAfter, embeddings

    if "model.preset=cmf" in sets:
        multiview = matrix_only(multiview)
    sets = [*sets, "train.epochs=3"]
    train(load_spec(multiview, sets), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(load_spec(multiview, sets), tmp_path / "cut", callbacks=[KillAfter(1)])
    train(load_spec(multiview, sets), tmp_path / "cut", resume=True)
    for entity in ("book", "user"):
        assert np.array_equal(embeddings(tmp_path / "full", entity),
                              embeddings(tmp_path / "cut", entity))


def wide_spec(tmp_path, extra=""):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal(
        (WIDE + 1, 3)).astype(np.float32))
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nentities: {a: {}, f: {}}\nviews:\n"
                    f"  x: {{rows: a, cols: f, source: {{reader: npy, path: x.npy}}{extra}}}\n"
                    "train: {device: cpu}\n")
    return spec


def test_a_dense_column_autoencoder_over_too_many_rows_becomes_a_sketch(tmp_path, caplog):
    built = build(load_spec(wide_spec(tmp_path)), get_plugins())
    assert built.plan.column_mode["x"] == "sketch"
    assert built.plan.in_shapes[("x", "col")] == (256,)
    assert "columns: sketch" in built.plan.notes[0] and "20,000" in built.plan.notes[0]
    assert "columns: sketch" in caplog.text
    built = build(load_spec(wide_spec(tmp_path), ["views.x.columns=embedding"]), get_plugins())
    assert built.plan.column_mode["x"] == "embedding" and not built.plan.notes


def test_a_dense_encoder_on_a_wide_sparse_view_is_a_spec_error(tmp_path):
    sp.save_npz(tmp_path / "r.npz", sp.random(WIDE + 1, 5, density=0.001, format="csr",
                                              random_state=0))
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nentities: {u: {}, i: {}}\nviews:\n"
                    "  r: {rows: u, cols: i, col_encoder: {type: dense}, "
                    "source: {reader: npz, path: r.npz}}\n")
    with pytest.raises(SpecError, match="views.r.col_encoder: encoder 'dense' takes dense"):
        build(load_spec(spec), get_plugins())
    built = build(load_spec(spec, ["views.r.col_encoder.type=auto"]), get_plugins())
    assert ("r", "col") in built.plan.sparse


def test_the_sketch_does_not_grow_with_the_number_of_rows(tmp_path):
    from mmfuse.data import MatrixData

    rng = np.random.default_rng(0)
    norms = []
    for n in (500, 20_000):
        x = sp.random(n, 30, density=0.05, random_state=1, data_rvs=rng.standard_normal)
        norms.append(np.linalg.norm(MatrixData(x, None).sketch(64, 0), axis=1).mean())
    assert norms[1] == pytest.approx(norms[0], rel=0.2)


def test_dense_columns_are_read_from_a_column_major_copy(multiview):
    built = build(load_spec(multiview), get_plugins())
    text = built.data.views["text"]
    raw = np.load(multiview.parent / "text.npy")
    cols, mask = text.cols(np.array([5, 0, 7]))
    assert mask is None and np.array_equal(cols, raw[:, [5, 0, 7]].T)
    cache = list((multiview.parent / ".mmfuse-cache").glob("text.npy.T-*.npy"))
    assert len(cache) == 1 and np.array_equal(np.load(cache[0]), raw.T)


def test_cost_counts_cells_and_refuses_a_run_bigger_than_the_machine(multiview, monkeypatch):
    built = build(load_spec(multiview, ["train.primary=ratings", "train.cell_batch=40"]),
                  get_plugins())
    cost = estimate(built)
    by_view = {v.view: v for v in cost.views}
    assert by_view["ratings"].stored == sp.load_npz(multiview.parent / "ratings.npz").nnz
    assert by_view["ratings"].per_step == 40
    assert by_view["ratings"].per_epoch == by_view["ratings"].stored  # each once an epoch
    blocked = estimate(build(load_spec(multiview, ["train.primary=user"]), get_plugins()))
    assert {v.view: v for v in blocked.views}["ratings"].per_epoch == by_view["ratings"].stored
    assert by_view["text"].stored == 48 * 24
    assert cost.peak_bytes > cost.resident_bytes > 0
    check_memory(cost)  # fits
    monkeypatch.setattr("mmfuse.cost.machine_bytes", lambda: 1 << 20)
    with pytest.raises(MmfuseError, match=r"estimated peak memory [\d,]+ MiB exceeds"):
        check_memory(estimate(built))


def test_sampled_rows_hold_at_most_k_cells_and_keep_sums_unbiased():
    from mmfuse.data import stored_rows

    rng = np.random.default_rng(0)
    counts = np.array([3, 40, 0, 100, 5])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    values = rng.random(indptr[-1]).astype(np.float32)
    matrix = sp.csr_array((values, rng.integers(0, 500, indptr[-1]), indptr), shape=(5, 500))
    idx = np.array([3, 0, 1, 2])  # rows in any order; row 4 is not read
    sums = []
    for seed in range(400):
        s = stored_rows(matrix, idx, 500, 8, np.random.default_rng(seed))
        assert list(np.diff(s.indptr)) == [8, 3, 8, 0] and list(s.totals) == [100, 3, 40, 0]
        sums.append([s.values[s.indptr[k]:s.indptr[k + 1]].sum() for k in range(3)])
    exact = np.add.reduceat(values, indptr[:-1])[[3, 0, 1]]
    assert np.allclose(np.mean(sums, axis=0), exact, rtol=0.05)
    assert np.array_equal(sums[0][1], exact[1])  # a short row is held whole
    whole = stored_rows(matrix, idx, 500)  # no cap: every stored cell, as scipy reads them
    assert (whole.values == matrix[idx].data).all() and whole.totals is None


def test_encoder_cells_bounds_what_a_training_step_reads(multiview):
    built = build(load_spec(multiview, ["views.ratings.encoder_cells=2"]), get_plugins())
    batch = next(iter(built.batcher.epoch(0)))
    side = batch.sides[("ratings", "col")]
    assert side.counts().max() <= 2 < side.totals.max()
    full = next(iter(built.batcher.chunks("book")))  # embedding reads every cell
    assert torch.equal(full.sides[("ratings", "col")].counts(),
                       full.sides[("ratings", "col")].totals)

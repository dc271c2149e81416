"""Batches: which instances and which observed cells a step takes, and the inputs they need.

The epoch runs over the primary: an entity (a permutation of its instances, ``batch_size``
a step) or a sparse matrix view (a permutation of its stored cells, ``cell_batch`` a step);
by default an entity (:func:`default_primary`).  A sparse primary's steps are sized in
cells unless the spec sizes them: a primary entity's batch holds about ``cell_batch`` of its
stored cells (20,000 by default, cut to a 50th of the epoch on small data but not under 50
instances, or 4,096 cells for a primary view: :func:`grown`), and the default learning rate
follows the step's cells (:func:`mmfuse.optim.default_lr`).
Every other entity walks through its own permutation (entities no larger than their batch
are taken whole).  A sparse view whose rows (or columns) are the primary entity gives a step
every stored cell of the step's instances (a row block: each row is encoded once an epoch,
not once per cell); every other sparse view walks through a permutation of its own cells.
Either way each sparse view's cells are all visited once per epoch.  An entity's instances
in a step are its own batch plus every instance that the step's cells touch.

A sparse side's encoder reads, in training, at most ``encoder_cells`` of each row's stored
cells (a uniform sample, rescaled so sums stay unbiased; all of them when embedding), so a
step's cost is bounded by its cells, not by the rows' lengths.

Cells per matrix view: a dense view scores the block of the step's rows × columns (its
observed cells); a sparse view scores its drawn cells, plus, where the view says so
(bernoulli views by default), sampled negatives: unobserved cells taken as 0, one column of
the step's column instances per negative.  Permutations and negatives derive from (seed,
epoch, step), so a resumed run draws exactly the batches the uninterrupted one would have.

In a job of N processes (``shard=(rank, N)``), each takes a disjoint shard of every epoch's
primary permutation, split as torch's ``DistributedSampler`` splits a data set (padded by
wrapping to a multiple of N, then every N-th from ``rank``: at most N − 1 instances or cells
appear twice in an epoch), in its own steps of ``batch_size``; its step ``s`` is the job's
step ``s·N + rank``, which sets what the other entities and sparse views walk through and
the negatives drawn, so the processes' steps are disjoint there too.  One process
(``(0, 1)``) is the plain epoch.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from mmfuse.data import Data, MatrixData, SparseRows, TensorData
from mmfuse.model import Batch, Cells, Plan
from mmfuse.plugin_api import SparseBatch
from mmfuse.spec import Spec


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Move a batch to the device, then make it float (uint8 images are scaled to [0, 1])."""
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t if t.dtype == torch.bool else t.float()


def sparse_to_device(rows: SparseRows, device: torch.device) -> SparseBatch:
    """CSR parts → a :class:`SparseBatch` on the device."""

    def t(a, dtype):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype))

    totals = np.diff(rows.indptr) if rows.totals is None else rows.totals
    batch = SparseBatch(t(rows.indptr, np.int64), t(rows.indices, np.int64),
                        t(rows.values, np.float32), (len(rows), rows.width),
                        t(totals, np.int64))
    return batch.to(device)


def union(ids: np.ndarray, n: int) -> np.ndarray:
    """The distinct values of ``ids`` (in ``range(n)``), sorted: a mark per instance where
    that is cheaper than sorting the ids."""
    if n > 64 * len(ids):
        return np.unique(ids)
    mark = np.zeros(n, dtype=bool)
    mark[ids] = True
    return np.flatnonzero(mark)


def negative_rate(spec: Spec, view: str) -> float:
    """Unobserved cells a sparse view's step scores per observed cell (``negatives``;
    default 1 for bernoulli views, else 0)."""
    rate = spec.views[view].negatives
    if rate is None:
        rate = 1.0 if spec.views[view].likelihood.type == "bernoulli" else 0.0
    return float(rate)


def default_primary(spec: Spec, data: Data, batch_sizes: dict[str, int]) -> str:
    """What an epoch runs over by default.

    With sparse views, an entity of the largest one (most stored cells): a step takes every
    cell of its instances, so each of their rows is encoded once an epoch and each row of
    the other side once per cell it holds; of the two entities, the one whose rows cost the
    most that way (Σ stored cells² of a row) is taken whole.  Without, whatever takes the
    most steps to visit once: an entity (its instances, its batch a step).
    """
    sparse = {v: d for v, d in data.views.items() if isinstance(d, MatrixData) and d.sparse}
    if sparse:
        view = max(sparse, key=lambda v: sparse[v].nnz)
        vspec, matrix = spec.views[view], sparse[view]
        by_rows = np.square(np.diff(matrix.csr.indptr), dtype=np.float64).sum()
        by_cols = np.square(matrix.column_counts()).sum()
        return vspec.rows if by_rows >= by_cols else vspec.cols
    steps = {e: math.ceil(n / batch_sizes[e]) for e, n in data.sizes.items()}
    return max(steps, key=lambda k: steps[k])


BATCH = 50  # instances a step, by default
STEP_CELLS = 20_000  # cells a step of a sparse primary aims at, by default (train.cell_batch)
MIN_CELLS = 4_096  # ... and takes at least (where the epoch holds them)
MIN_STEPS = 50  # a default sparse step is cut so that an epoch takes at least this many


def grown(floor: int, epoch: int, aim: float) -> int:
    """A default step: ``aim``, but no more than ``1/MIN_STEPS`` of the ``epoch`` (so small
    data still takes many steps an epoch), and no less than ``floor``."""
    return max(1, min(math.ceil(aim), max(floor, math.ceil(epoch / MIN_STEPS))))


class Batcher:
    def __init__(self, spec: Spec, data: Data, plan: Plan, device: torch.device,
                 shard: tuple[int, int] = (0, 1)):
        self.spec, self.data, self.plan, self.device = spec, data, plan, device
        self.rank, self.world = shard  # this process's shard of each epoch, of how many
        sizes = data.sizes
        train = spec.train
        self.batch_sizes = {
            e: min(n, train.entity_batch.get(e, train.batch_size or BATCH))
            for e, n in sizes.items()
        }
        self.primary = train.primary or default_primary(spec, data, self.batch_sizes)
        self.inputs = plan.inputs()
        self.sketches = {
            v: data.views[v].sketch(spec.views[v].sketch_dim, spec.seed)  # (n_c, s)
            for v, mode in plan.column_mode.items()
            if mode == "sketch" and (v, "col") in self.inputs
        }
        self.sparse_views = [v for v in plan.column_mode if v in plan.sparse_views]
        self.nnz = {v: data.views[v].nnz for v in self.sparse_views}
        self.negatives = {v: self._negative_rate(v) for v in self.sparse_views}
        # sparse views drawn by the primary entity's instances: view → axis (0 rows, 1 cols)
        self.blocked = {}
        if not self.primary_is_view:
            for v in self.sparse_views:
                vspec = spec.views[v]
                if self.primary in (vspec.rows, vspec.cols):
                    self.blocked[v] = 0 if vspec.rows == self.primary else 1
        self.cell_batch = self._cell_batch()
        if self.blocked and train.batch_size is None and self.primary not in train.entity_batch:
            self.batch_sizes[self.primary] = self._cells_to_instances()

    def _cell_batch(self) -> int:
        """Cells a step of a sparse primary takes (a view) or aims at (an entity's rows)."""
        if self.spec.train.cell_batch is not None:
            return self.spec.train.cell_batch
        if not self.primary_is_view:
            return STEP_CELLS
        return grown(MIN_CELLS, self.nnz[self.primary], STEP_CELLS)

    def _cells_per_instance(self) -> float:
        """Stored cells an instance of the primary entity holds in its sparse views, on
        average (the cells a step takes per instance)."""
        n = self.data.sizes[self.primary]
        return sum(self.nnz[v] for v in self.blocked) / max(n, 1)

    def _cells_to_instances(self) -> int:
        """The primary entity's default batch: instances holding about ``cell_batch``."""
        n = self.data.sizes[self.primary]
        aim = self.cell_batch / max(self._cells_per_instance(), 1e-9)
        if self.spec.train.cell_batch is not None:
            return max(1, min(n, math.ceil(aim)))
        return min(n, grown(BATCH, n, aim))

    def step_cells(self) -> float | None:
        """Stored cells a step of a sparse primary takes, on average; None for a primary
        entity without sparse views."""
        if self.primary_is_view:
            return float(self.cells_per_step(self.primary))
        if not self.blocked:
            return None
        return self.batch_sizes[self.primary] * self._cells_per_instance()

    def _negative_rate(self, view: str) -> float:
        return negative_rate(self.spec, view)

    # ------------------------------------------------------------------ sizes

    @property
    def primary_is_view(self) -> bool:
        return self.primary in self.spec.views

    def epoch_size(self) -> int:
        """What an epoch visits once: the primary's stored cells, or its instances."""
        if self.primary_is_view:
            return self.nnz[self.primary]
        return self.data.sizes[self.primary]

    def shard_size(self) -> int:
        """What this process visits of an epoch: its share of the primary (all of it alone)."""
        return math.ceil(self.epoch_size() / self.world)

    def steps_per_epoch(self) -> int:
        """This process's steps in an epoch (the same in every process of a job)."""
        per_step = (self.cell_batch if self.primary_is_view
                    else self.batch_sizes[self.primary])
        return max(1, math.ceil(self.shard_size() / per_step))

    def cells_per_step(self, view: str) -> int:
        """Cells a step draws from a sparse view (all of them once per epoch, over every
        process's steps; a row block's on average)."""
        if view == self.primary:
            return min(self.cell_batch, self.nnz[view])
        steps = self.steps_per_epoch() * self.world
        return min(math.ceil(self.nnz[view] / steps), self.nnz[view])

    def _shard(self, perm: np.ndarray) -> np.ndarray:
        """This process's part of an epoch's permutation (``DistributedSampler``'s split)."""
        if self.world == 1:
            return perm
        return np.resize(perm, self.shard_size() * self.world)[self.rank :: self.world]

    # ------------------------------------------------------------------ epochs

    def epoch(self, epoch: int) -> Iterator[Batch]:
        sizes = self.data.sizes
        seed = self.spec.seed
        perms = {
            e: np.random.default_rng([seed, epoch, i]).permutation(n)
            for i, (e, n) in enumerate(sizes.items())
        }
        cell_perms = {
            v: np.random.default_rng([seed, epoch, 1000 + i]).permutation(
                np.arange(self.nnz[v], dtype=np.int64 if self.nnz[v] >= 2**31 else np.int32))
            for i, v in enumerate(self.sparse_views) if v not in self.blocked
        }
        entity_primary = not self.primary_is_view
        if entity_primary:
            perms[self.primary] = self._shard(perms[self.primary])
        else:
            cell_perms[self.primary] = self._shard(cell_perms[self.primary])
        for step in range(self.steps_per_epoch()):
            job_step = step * self.world + self.rank  # this step's place in the whole job
            idx = {}
            for e, n in sizes.items():
                b = self.batch_sizes[e]
                if entity_primary and e == self.primary:
                    idx[e] = perms[e][step * b : (step + 1) * b]
                elif b >= n:
                    idx[e] = np.arange(n)
                else:
                    idx[e] = perms[e][(job_step * b + np.arange(b)) % n]
            draws = {}
            for v in self.sparse_views:
                m, n = self.cells_per_step(v), self.nnz[v]
                if v in self.blocked:
                    draws[v] = self.data.views[v].cells_of(self.blocked[v], idx[self.primary])
                    continue
                if v == self.primary:
                    positions = cell_perms[v][step * m : (step + 1) * m]
                else:
                    positions = cell_perms[v][(job_step * m + np.arange(m)) % n]
                draws[v] = self.data.views[v].cells(np.sort(positions))
            rng = np.random.default_rng([seed, epoch, job_step, 7])
            yield self.make(self.touched(idx, draws), draws, rng)

    def touched(self, idx: dict[str, np.ndarray], draws) -> dict[str, np.ndarray]:
        """Each entity's batch plus the instances its views' drawn cells touch (sorted)."""
        extra: dict[str, list[np.ndarray]] = {}
        for v, (rows, cols, _) in draws.items():
            vspec = self.spec.views[v]
            extra.setdefault(vspec.rows, []).append(rows)
            extra.setdefault(vspec.cols, []).append(cols)
        out = dict(idx)
        for e, parts in extra.items():
            out[e] = union(np.concatenate([np.asarray(idx[e]), *parts]), self.data.sizes[e])
        return out

    # ------------------------------------------------------------------ one batch

    def make(self, idx: dict[str, np.ndarray], draws=None,
             rng: np.random.Generator | None = None) -> Batch:
        """The batch for these instances (and these drawn cells of sparse views); only views
        touching an entity in ``idx`` are read.  Without ``draws`` (embedding), no cells."""
        dev = self.device
        batch = Batch(idx={e: torch.from_numpy(np.asarray(i)).to(dev) for e, i in idx.items()})
        rows_cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for view, role in sorted(self.inputs):
            vspec = self.spec.views[view]
            entity = vspec.cols if role == "col" else vspec.rows
            if entity not in idx:
                continue
            store = self.data.views[view]
            key = (view, role)
            present = None  # which instances have this side (None: all)
            if role == "tensor":
                assert isinstance(store, TensorData)
                values, mask = store.take(idx[entity]), None
                present = store.present(idx[entity])
            elif role == "col" and view in self.sketches:
                values, mask = self.sketches[view][idx[entity]], None
            elif key in self.plan.sparse:
                assert isinstance(store, MatrixData)
                read = store.sparse_rows if role == "row" else store.sparse_cols
                # training reads at most encoder_cells a row; embedding reads every cell
                cap = vspec.encoder_cells if rng is not None else None
                part = read(idx[entity], cap, rng)
                batch.sides[key] = sparse_to_device(part, dev)
                stored = np.diff(part.indptr) if part.totals is None else part.totals
                self._mark_present(batch, key, stored > 0)
                continue
            else:
                assert isinstance(store, MatrixData)
                values, mask = store.rows(idx[entity]) if role == "row" else store.cols(idx[entity])
                if role == "row":
                    rows_cache[view] = (values, mask)
                if mask is not None:
                    present = mask.any(axis=1)
            batch.sides[key] = to_device(values, dev)
            batch.masks[key] = None if mask is None else to_device(mask, dev)
            self._mark_present(batch, key, present)
        if draws is None:
            return batch
        for view, vspec in self.spec.views.items():
            if vspec.is_tensor or vspec.rows not in idx or vspec.cols not in idx:
                continue
            if view in draws:
                cells = self._drawn_cells(view, idx, draws[view], rng)
            elif view in self.plan.factors:
                cells = self._block_cells(view, idx, rows_cache.get(view))
            else:
                continue
            batch.cells[view] = Cells(*(torch.from_numpy(a).to(dev) for a in cells))
        return batch

    def _mark_present(self, batch: Batch, key, present: np.ndarray | None) -> None:
        """Record which instances have side ``key`` where some do not."""
        if present is not None and not present.all():
            batch.present[key] = torch.from_numpy(np.ascontiguousarray(present)).to(self.device)

    def _block_cells(self, view, idx, rows=None):
        """The observed cells of a dense view's block ``I_r × I_c``."""
        vspec = self.spec.views[view]
        values, mask = rows or self.data.views[view].rows(idx[vspec.rows])
        ci = idx[vspec.cols]
        block = values[:, ci]
        if mask is None:
            r, c = np.divmod(np.arange(block.size, dtype=np.int64), len(ci))
            return r, c, block.reshape(-1).astype(np.float32)
        r, c = np.nonzero(mask[:, ci])
        return r.astype(np.int64), c.astype(np.int64), block[r, c].astype(np.float32)

    def _drawn_cells(self, view, idx, drawn, rng):
        """A sparse view's drawn cells as positions in the step's instances, plus negatives."""
        vspec = self.spec.views[view]
        rows, cols, values = drawn
        r = np.searchsorted(idx[vspec.rows], rows)
        c = np.searchsorted(idx[vspec.cols], cols)
        values = np.asarray(values, dtype=np.float32)
        k = int(round(self.negatives[view] * len(values)))
        if k and rng is not None:
            r_neg = r[rng.integers(0, len(r), k)]
            c_neg = rng.integers(0, len(idx[vspec.cols]), k)
            r, c = np.concatenate([r, r_neg]), np.concatenate([c, c_neg])
            values = np.concatenate([values, np.zeros(k, dtype=np.float32)])
        return r.astype(np.int64), c.astype(np.int64), values

    def chunks(self, entity: str, size: int = 256) -> Iterator[Batch]:
        """Batches of one entity, in order, for embedding every instance."""
        n = self.data.sizes[entity]
        for start in range(0, n, size):
            yield self.make({entity: np.arange(start, min(start + size, n))})


def prefetch(batches: Iterable[Batch], depth: int = 2) -> Iterator[Batch]:
    """Make the next ``depth`` batches in a background thread while the current one trains
    (reading cells and slicing sparse rows overlaps the step); same batches, same order."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for batch in batches:
                if stop.is_set():
                    return
                q.put(batch)
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="mmfuse-batches")
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)

"""Batches: which instances of each entity a step takes, and the view slices they select.

One step takes one batch of instances per entity.  The epoch runs over a permutation of the
primary entity; every other entity walks through its own permutation (entities no larger
than their batch are taken whole).  A matrix view then gives ``X[I_r, :]``, ``X[:, I_c]ᵀ``
and the block ``X[I_r, I_c]``.  Permutations derive from (seed, epoch), so a resumed run
draws exactly the batches the uninterrupted one would have.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from mmfuse.data import Data, MatrixData, TensorData
from mmfuse.model import Batch, Plan
from mmfuse.spec import Spec


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Move a batch to the device, then make it float (uint8 images are scaled to [0, 1])."""
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    return t if t.dtype == torch.bool else t.float()


class Batcher:
    def __init__(self, spec: Spec, data: Data, plan: Plan, device: torch.device):
        self.spec, self.data, self.plan, self.device = spec, data, plan, device
        sizes = data.sizes
        self.primary = spec.train.primary or max(sizes, key=lambda e: sizes[e])
        self.batch_sizes = {
            e: min(n, spec.train.entity_batch.get(e, spec.train.batch_size))
            for e, n in sizes.items()
        }
        self.inputs = plan.inputs()
        self.sketches = {
            v: data.views[v].sketch(spec.views[v].sketch_dim, spec.seed)  # (n_c, s)
            for v, mode in plan.column_mode.items()
            if mode == "sketch" and (v, "col") in self.inputs
        }

    def steps_per_epoch(self) -> int:
        return math.ceil(self.data.sizes[self.primary] / self.batch_sizes[self.primary])

    def epoch(self, epoch: int) -> Iterator[Batch]:
        sizes = self.data.sizes
        perms = {
            e: np.random.default_rng([self.spec.seed, epoch, i]).permutation(n)
            for i, (e, n) in enumerate(sizes.items())
        }
        bp = self.batch_sizes[self.primary]
        for step in range(self.steps_per_epoch()):
            idx = {}
            for e, n in sizes.items():
                b = self.batch_sizes[e]
                if e == self.primary:
                    idx[e] = perms[e][step * bp : (step + 1) * bp]
                elif b >= n:
                    idx[e] = np.arange(n)
                else:
                    idx[e] = perms[e][(step * b + np.arange(b)) % n]
            yield self.make(idx)

    def make(self, idx: dict[str, np.ndarray]) -> Batch:
        """The batch for these instances; only views touching an entity in ``idx`` are read."""
        dev = self.device
        batch = Batch(idx={e: torch.from_numpy(np.asarray(i)).to(dev) for e, i in idx.items()})
        rows_cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for view, role in sorted(self.inputs):
            vspec = self.spec.views[view]
            entity = vspec.cols if role == "col" else vspec.rows
            if entity not in idx:
                continue
            store = self.data.views[view]
            if role == "tensor":
                assert isinstance(store, TensorData)
                values, mask = store.take(idx[entity]), None
            elif role == "col" and view in self.sketches:
                values, mask = self.sketches[view][idx[entity]], None
            else:
                assert isinstance(store, MatrixData)
                values, mask = store.rows(idx[entity]) if role == "row" else store.cols(idx[entity])
                if role == "row":
                    rows_cache[view] = (values, mask)
            batch.sides[(view, role)] = to_device(values, dev)
            batch.masks[(view, role)] = None if mask is None else to_device(mask, dev)
        for view in self.plan.factors:
            vspec = self.spec.views[view]
            if vspec.rows not in idx or vspec.cols not in idx:
                continue
            values, mask = rows_cache.get(view) or self.data.views[view].rows(idx[vspec.rows])
            ci = idx[vspec.cols]
            batch.blocks[view] = (
                to_device(values[:, ci], dev),
                None if mask is None else to_device(mask[:, ci], dev),
            )
        return batch

    def chunks(self, entity: str, size: int = 256) -> Iterator[Batch]:
        """Batches of one entity, in order, for embedding every instance."""
        n = self.data.sizes[entity]
        for start in range(0, n, size):
            yield self.make({entity: np.arange(start, min(start + size, n))})

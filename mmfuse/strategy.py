"""How the one training loop runs: alone in this process (``single``), or as one process of
a torch.distributed job (``ddp``: DistributedDataParallel).

A strategy holds what differs between the two: the device, the module a step calls
(compiled, wrapped in DDP), autocast, and the few collectives the loop needs (the epoch's
metrics and each process's state, gathered from every process; a barrier).  It never starts
processes: a launcher does (``mmfuse train --nproc N``, ``torchrun``) and sets what it reads
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``PORT``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mmfuse.build import resolve_device
from mmfuse.errors import MmfuseError
from mmfuse.model import FusionModel
from mmfuse.spec import Spec

log = logging.getLogger(__name__)

LAUNCHERS = "`mmfuse train SPEC --nproc N`, or `torchrun --nproc-per-node N -m mmfuse train SPEC`"


class StrategyError(MmfuseError):
    pass


def launched() -> bool:
    """Whether a launcher (torchrun, torch's elastic launch) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def process_device(name: str, local_rank: int, local_processes: int) -> torch.device:
    """The device of process ``local_rank`` of the ``local_processes`` on this machine: the
    CPU (all share it), or a GPU each (``cuda`` → ``cuda:LOCAL_RANK``)."""
    kind = name.split(":")[0]
    if kind == "auto":
        kind = "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise StrategyError(f"train.strategy ddp runs on cpu or cuda, not {name!r}")
    if ":" in name:
        if local_processes > 1:
            raise StrategyError(
                f"device {name!r} names one GPU for {local_processes} processes on this "
                "machine: use device cuda (each process takes cuda:LOCAL_RANK)")
        return resolve_device(name)
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count < local_processes:
        raise StrategyError(
            f"{local_processes} processes on cuda need a GPU each; this machine has {count} "
            "(use fewer processes, or --device cpu)")
    return torch.device("cuda", local_rank)


class Single:
    """Training in this process alone."""

    name = "single"
    backend: str | None = None
    rank, world_size, local_rank, local_world_size = 0, 1, 0, 1

    def __init__(self, device: torch.device, precision: str = "auto", compile: bool = False):
        self.device = device
        self.precision = precision
        self.compile = compile

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder and runs the observers (rank 0)."""
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, processes): which part of each epoch this process trains."""
        return self.rank, self.world_size

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "world_size": self.world_size, "backend": self.backend}

    def prepare(self, model: nn.Module) -> nn.Module:
        """The module a training step calls (the model's state stays the model's own)."""
        return torch.compile(model) if self.compile else model  # type: ignore[return-value]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16" or (self.precision == "auto" and self.device.type == "cuda"):
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, by rank (a collective: every process calls it)."""
        return [obj]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (a collective)."""
        return obj

    def barrier(self) -> None:
        pass

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (it may prepare a data set or fill a featurizer's
        cache), then every other process."""
        yield

    def close(self) -> None:
        pass


class DDP(Single):
    """One process of a job a launcher started: gradients averaged by DistributedDataParallel
    (gloo on the CPU, nccl on CUDA)."""

    name = "ddp"

    def __init__(self, device_name: str, precision: str = "auto", compile: bool = False):
        env = os.environ
        self.rank, self.world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        self.local_world_size = int(env.get("LOCAL_WORLD_SIZE", "1"))
        device = process_device(device_name, self.local_rank, self.local_world_size)
        super().__init__(device, precision, compile)
        self.backend = "nccl" if device.type == "cuda" else "gloo"
        self._owns_group = not dist.is_initialized()
        if self._owns_group:
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(self.backend, device_id=device if device.type == "cuda"
                                    else None)
        elif dist.get_backend() != self.backend:
            raise StrategyError(f"the process group runs {dist.get_backend()}; training on "
                                f"{device} needs {self.backend}")
        log.info("rank %d of %d on %s (%s)", self.rank, self.world_size, device, self.backend)

    def prepare(self, model: FusionModel) -> nn.Module:  # type: ignore[override]
        if self.backend == "nccl":
            # nccl all-reduces dense tensors only: every table declared sparse (free factors,
            # the sparse encoders' tables) takes dense gradients here, updated by fused Adam
            # over the table — cheap on a GPU, where sparse rows would save little
            tables = [m for m in model.modules()
                      if isinstance(m, nn.Embedding | nn.EmbeddingBag) and m.sparse]
            for table in tables:
                table.sparse = False
            if tables:
                log.info("nccl: %d tables take dense gradients", len(tables))
        # a step may leave a module unused (a sparse view with no cells in the step's rows):
        # DDP then marks its parameters ready instead of waiting for their gradients
        net = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        return torch.compile(net) if self.compile else net  # type: ignore[return-value]

    def gather(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        if not self.is_main:
            dist.barrier()
        yield
        if self.is_main:
            dist.barrier()

    def close(self) -> None:
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()


def make_strategy(spec: Spec, device: str | None = None) -> Single:
    """The spec's ``train.strategy`` in this process (``auto``: ddp when a launcher started
    it, else single); ``device`` overrides ``train.device``."""
    train = spec.train
    name = train.strategy
    if name == "auto":
        name = "ddp" if launched() else "single"
    if name == "ddp" and not launched():
        raise StrategyError(f"train.strategy ddp needs a launcher to start its processes: "
                            f"{LAUNCHERS}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if name == "single" and launched() and world > 1:
        raise StrategyError(f"a launcher started {world} processes, but train.strategy is "
                            "single (each would train alone): use ddp or auto")
    if name == "single":
        return Single(resolve_device(device or train.device), train.precision, train.compile)
    return DDP(device or train.device, train.precision, train.compile)

"""Image featurizer ``cnn``: the penultimate features (or ImageNet logits) of a pretrained or
seeded-random network, for a folder of images named by id or an ``n × C × H × W`` uint8 ``.npy``.

Run in eval mode, in batches, into a preallocated array; cached next to the input, keyed by
the input's bytes and every parameter that changes the numbers (not ``batch_size``/``device``).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmfuse_readers.images import image_files, image_ids, load_image

from mmfuse.cache import cached_array, fingerprint
from mmfuse.plugin_api import ReadContext, ViewArray

from .models import MODELS, NetSpec, build, feature_dim, net_spec, random_init

log = logging.getLogger(__name__)

CNN_DEFAULTS: dict[str, Any] = {"model": None, "features": "penultimate",
                                "weights": "pretrained", "batch_size": 32, "device": "cpu",
                                "seed": 0, "ids": None}
FEATURES = ("penultimate", "logits")
WEIGHTS = ("pretrained", "random")
RANDOM_NOTE = "RANDOM (not pretrained)"


@dataclass(frozen=True)
class Images:
    """The input, read batch by batch: ``batch(start, stop)`` → uint8 ``(b, C, H, W)``."""

    n: int
    row_ids: list[str] | None
    files: list[Path]  # what the cache key hashes
    batch: Callable[[int, int], np.ndarray]
    how: str  # how images become the network's uint8 input (for the manifest)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params with defaults filled in; one ValueError naming every problem."""
    unknown = set(params) - set(CNN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown params {sorted(unknown)}; known: {sorted(CNN_DEFAULTS)}")
    p = {**CNN_DEFAULTS, **params}
    problems = []
    if p["model"] not in MODELS:
        problems.append(f"model {p['model']!r}; known: {', '.join(MODELS)}")
    if p["features"] not in FEATURES:
        problems.append(f"features {p['features']!r}; known: {', '.join(FEATURES)}")
    if p["weights"] not in WEIGHTS:
        problems.append(f"weights {p['weights']!r}; known: {', '.join(WEIGHTS)}")
    if not _is_int(p["batch_size"]) or p["batch_size"] < 1:
        problems.append(f"batch_size must be an integer ≥ 1; got {p['batch_size']!r}")
    if not _is_int(p["seed"]):
        problems.append(f"seed must be an integer; got {p['seed']!r}")
    problems += _device_problems(p["device"])
    if problems:
        raise ValueError("; ".join(problems))
    return p


def _device_problems(device: Any) -> list[str]:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        return [f"device {device!r}: not a torch device (cpu, cuda, cuda:1, mps)"]
    if dev.type == "cuda" and not torch.cuda.is_available():
        return [f"device {device!r}: CUDA is not available here"]
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return [f"device {device!r}: MPS is not available here"]
    return []


def folder_images(folder: Path, ids: list[str], size: int) -> Images:
    """Images named by id, each letterboxed (never cut) to ``size × size`` RGB as the
    ``images`` reader does; the weights' transform then resizes and centre-crops."""
    found = image_files(folder, ids)

    def batch(start: int, stop: int) -> np.ndarray:
        return np.stack([load_image(f, (size, size), "RGB") for f in found[start:stop]])

    return Images(len(found), ids, found, batch,
                  f"letterboxed (padded with black, never cut) to {size}×{size} RGB")


def npy_images(path: Path) -> Images:
    """An ``n × C × H × W`` uint8 array (C = 1, 3 or 4), memory-mapped."""
    data = np.load(path, mmap_mode="r", allow_pickle=False)
    if data.ndim != 4 or data.dtype != np.uint8 or data.shape[1] not in (1, 3, 4):
        raise ValueError(f"{path.name}: expected an n × C × H × W uint8 array with C in "
                         f"(1, 3, 4); got shape {list(data.shape)}, dtype {data.dtype}")
    return Images(data.shape[0], None, [path], lambda start, stop: np.array(data[start:stop]),
                  "as stored" + ("; grey repeated to RGB" if data.shape[1] == 1 else "")
                  + ("; alpha dropped" if data.shape[1] == 4 else ""))


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    """(b, C, H, W) uint8 → (b, 3, H, W): grey repeated, alpha dropped."""
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]


def extract(net: torch.nn.Module, spec: NetSpec, images: Images, dim: int,
            batch_size: int, device: torch.device) -> np.ndarray:
    """``n × dim`` float32, filled batch by batch (memory bounded by one batch)."""
    out = np.empty((images.n, dim), dtype=np.float32)
    batches = math.ceil(images.n / batch_size)
    every = max(1, batches // 20)
    with torch.inference_mode():
        for b, start in enumerate(range(0, images.n, batch_size)):
            stop = min(start + batch_size, images.n)
            x = torch.from_numpy(images.batch(start, stop)).to(device)  # (b, C, H, W) uint8
            y = net(spec.preprocess.transform(_as_rgb(x)))  # (b, dim)
            if tuple(y.shape) != (stop - start, dim):
                raise RuntimeError(f"{spec.name} gave {tuple(y.shape)}; expected "
                                   f"({stop - start}, {dim})")
            out[start:stop] = y.float().cpu().numpy()
            if (b + 1) % every == 0 or stop == images.n:
                log.info("cnn %s: %d/%d images", spec.name, stop, images.n)
    return out


def _key(p: Mapping[str, Any], spec: NetSpec, images: Images) -> str:
    key = {"model": p["model"], "features": p["features"], "weights": spec.weights_id,
           "pretrained": spec.pretrained, "seed": None if spec.pretrained else p["seed"],
           "init": None if spec.pretrained else random_init(spec.name),
           "preprocess": spec.preprocess.description,
           "torchvision": metadata.version("torchvision"),
           "ids": hashlib.sha256("\n".join(images.row_ids or []).encode()).hexdigest()}
    return fingerprint(images.files, key)


def read_cnn(path: Path | None, params: Mapping[str, Any], ctx: ReadContext) -> ViewArray:
    """``path``: a folder of images named by id (ids from ``params.ids`` or the row entity)
    or a ``.npy`` uint8 tensor ``n × C × H × W`` → ``n × dim`` float32 (cached).

    params: ``model`` (required: googlenet, inception_v3, resnet18, resnet50, vgg16,
    efficientnet_lite0), ``features`` (penultimate | logits), ``weights`` (pretrained |
    random: a seeded random network, announced as such), ``batch_size`` (32), ``device``
    (cpu), ``seed`` (0: random weights only), ``ids`` (folder input only).
    """
    p = check_params(params)
    spec = net_spec(p["model"], pretrained=p["weights"] == "pretrained")
    if path is not None and path.is_dir():
        images = folder_images(path, image_ids(p["ids"], ctx), spec.preprocess.resize)
    elif path is not None and path.is_file() and path.suffix == ".npy":
        images = npy_images(path)
    else:
        raise ValueError(f"needs `path`: a folder of images or a .npy uint8 tensor; got {path}")
    dim = feature_dim(p["model"], p["features"])
    if not spec.pretrained:
        log.warning("cnn %s: weights are RANDOM (not pretrained, seed %d): the features are "
                    "a fixed random projection, not ImageNet features", spec.name, p["seed"])
    device = torch.device(p["device"])

    def compute() -> np.ndarray:
        net = build(spec, p["features"], p["seed"], device)
        return extract(net, spec, images, dim, p["batch_size"], device)

    data, cache = cached_array(path, f"cnn-{p['model']}", _key(p, spec, images), compute)
    info = {"params": p, "model": spec.name, "features": p["features"], "dim": dim,
            "weights": spec.weights_id if spec.pretrained else RANDOM_NOTE,
            "weights_file": str(spec.weights_file) if spec.weights_file else None,
            "random_init": None if spec.pretrained else random_init(spec.name),
            "preprocess": spec.preprocess.description, "mode": "eval", "images": images.n,
            "input": str(path), "input_images": images.how, "cache": str(cache)}
    return ViewArray(data=data, row_ids=images.row_ids, info=info)

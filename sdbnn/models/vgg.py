"""VGG-Small of SD-BNN (docs/method.md §VGG-Small (CIFAR)) and its full-precision twin."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sdbnn.layers import SDConv2d
from sdbnn.models.common import conv_factory
from sdbnn.models.registry import register_model


class VGGSmall(nn.Module):
    """conv0 (real) → five SD convs 128-256-256-512-512, max-pool after convs 1, 3, 5 (before BN) → linear."""

    feature_shape = (512, 4, 4)

    def __init__(self, num_classes: int, make_conv):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 128, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(128)
        widths = [128, 128, 256, 256, 512, 512]
        for index in range(1, 6):
            self.add_module(f"conv{index}", make_conv(widths[index - 1], widths[index], 3, 1, 1))
            self.add_module(f"bn{index}", nn.BatchNorm2d(widths[index]))
        self.pool = nn.MaxPool2d(2, 2)
        self.fc = nn.Linear(math.prod(self.feature_shape), num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, SDConv2d)):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):  # the classifier and the SE gates, so gates start near 0.5
                nn.init.normal_(module.weight, 0.0, 0.01)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardtanh(self.bn0(self.conv0(x)))
        for index in range(1, 6):
            x = getattr(self, f"conv{index}")(x)
            if index % 2 == 1:
                x = self.pool(x)
            x = F.hardtanh(getattr(self, f"bn{index}")(x))
        if tuple(x.shape[1:]) != self.feature_shape:
            raise ValueError(f"VGG-Small needs 32×32 inputs (features {self.feature_shape}), got features {tuple(x.shape[1:])}")
        return self.fc(x.flatten(1))


@register_model("vgg_small", "SD-BNN VGG-Small for CIFAR (4,715,018 parameters)", binary=True)
@register_model("vgg_small_fp", "full-precision twin of VGG-Small", binary=False, full_precision=True)
def vgg_small(*, num_classes: int = 10, full_precision: bool = False, **sd_options) -> VGGSmall:
    return VGGSmall(num_classes, conv_factory(full_precision, sd_options))

"""Pieces shared by the architectures: the conv factory that makes a model binary or its full-precision twin."""

from __future__ import annotations

from typing import Callable

from torch import nn

from sdbnn.layers import SD_OPTIONS, SDConv2d

ConvFactory = Callable[[int, int, int, int, int], nn.Module]


def conv_factory(full_precision: bool, sd_options: dict) -> ConvFactory:
    """(in, out, kernel, stride, padding) -> the model's inner conv: SDConv2d, or nn.Conv2d for the twin."""
    if full_precision:
        return lambda cin, cout, k, stride, padding: nn.Conv2d(cin, cout, k, stride, padding, bias=False)
    options = {**SD_OPTIONS, **sd_options}
    return lambda cin, cout, k, stride, padding: SDConv2d(cin, cout, k, stride, padding, **options)


def kaiming_normal_init(model: nn.Module) -> None:
    """CIFAR ResNets (docs/method.md §ResNet-20 (CIFAR)): Kaiming-normal on every conv and linear weight (SD convs and
    SE FCs included)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear, SDConv2d)):
            nn.init.kaiming_normal_(module.weight)

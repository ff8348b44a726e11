"""CIFAR ResNets of SD-BNN: ResNet-20 and ResNet-18, with their full-precision twins
(docs/method.md §ResNet-20 (CIFAR), §ResNet-18 (CIFAR))."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sdbnn.models.common import ConvFactory, conv_factory, kaiming_normal_init
from sdbnn.models.registry import register_model


class OptionAShortcut(nn.Module):
    """Parameter-free downsampling shortcut: subsample by 2 and zero-pad planes//4 channels on each side."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad_channels = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_channels, self.pad_channels))


class TwoConvBlock(nn.Module):
    """conv1 (3×3, stride) → bn1 and conv2 (3×3) → bn2; subclasses add the shortcut and the wiring."""

    def __init__(self, in_planes: int, planes: int, stride: int, make_conv: ConvFactory):
        super().__init__()
        self.conv1 = make_conv(in_planes, planes, 3, stride, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = make_conv(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsamples = stride != 1 or in_planes != planes


class ResNet20Block(TwoConvBlock):
    """Two SD convs, each wrapped by its own real-valued shortcut (the IR-Net / SD-BNN CIFAR block)."""

    def __init__(self, in_planes: int, planes: int, stride: int, make_conv: ConvFactory):
        super().__init__(in_planes, planes, stride, make_conv)
        self.shortcut = OptionAShortcut(planes) if self.downsamples else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardtanh(self.bn1(self.conv1(x)) + self.shortcut(x))
        return F.hardtanh(self.bn2(self.conv2(y)) + y)


class ResNet18Block(TwoConvBlock):
    """Standard basic block with hardtanh; the downsampling shortcut is a real-valued 1×1 conv + BN."""

    def __init__(self, in_planes: int, planes: int, stride: int, make_conv: ConvFactory):
        super().__init__(in_planes, planes, stride, make_conv)
        if self.downsamples:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.hardtanh(self.bn1(self.conv1(x)))
        return F.hardtanh(self.bn2(self.conv2(y)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """Real-valued 3×3 stem → stages of blocks → global average pool → BatchNorm1d → real-valued linear.

    The official ResNet-18 pools with a fixed 4×4 window; on 32×32 inputs that is the same global pool.
    """

    def __init__(
        self,
        block: type[nn.Module],
        blocks_per_stage: list[int],
        widths: list[int],
        strides: list[int],
        num_classes: int,
        make_conv: ConvFactory,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for index, (num_blocks, planes, stride) in enumerate(zip(blocks_per_stage, widths, strides), start=1):
            blocks = []
            for block_stride in [stride] + [1] * (num_blocks - 1):
                blocks.append(block(in_planes, planes, block_stride, make_conv))
                in_planes = planes
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.num_stages = len(blocks_per_stage)
        self.head_bn = nn.BatchNorm1d(in_planes)
        self.fc = nn.Linear(in_planes, num_classes)
        kaiming_normal_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardtanh(self.bn1(self.conv1(x)))
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{index}")(x)
        x = x.mean(dim=(2, 3))
        return self.fc(self.head_bn(x))


@register_model("resnet20", "SD-BNN ResNet-20 for CIFAR (274,074 parameters)", binary=True)
@register_model("resnet20_fp", "full-precision twin of ResNet-20", binary=False, full_precision=True)
def resnet20(*, num_classes: int = 10, full_precision: bool = False, **sd_options) -> CifarResNet:
    make_conv = conv_factory(full_precision, sd_options)
    return CifarResNet(ResNet20Block, [3, 3, 3], [16, 32, 64], [1, 2, 2], num_classes, make_conv)


@register_model("resnet18_cifar", "SD-BNN ResNet-18 for CIFAR (11,320,650 parameters)", binary=True)
@register_model("resnet18_cifar_fp", "full-precision twin of ResNet-18 (CIFAR)", binary=False, full_precision=True)
def resnet18_cifar(*, num_classes: int = 10, full_precision: bool = False, **sd_options) -> CifarResNet:
    make_conv = conv_factory(full_precision, sd_options)
    return CifarResNet(ResNet18Block, [2, 2, 2, 2], [64, 128, 256, 512], [1, 2, 2, 2], num_classes, make_conv)

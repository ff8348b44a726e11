"""ImageNet models: the Bi-Real-structured SD-BNN ResNet-18, its twin, and the ResNet-34 teacher
(docs/method.md §ResNet-18 (ImageNet), §ResNet-34 teacher)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sdbnn.layers import SDConv2d
from sdbnn.models.common import ConvFactory, conv_factory
from sdbnn.models.registry import register_model

# The ImageNet recipe: SE reduction 8, ApproxSign for activations, clip-STE for weights.
IMAGENET_SD_DEFAULTS = {"se_reduction": 8, "act_surrogate": "approx", "weight_surrogate": "clip"}


class BiRealBlock(nn.Module):
    """One SD conv per block: out = PReLU(BN(SD(x)) + shortcut(x)); downsampling = avg-pool → 1×1 conv → BN."""

    def __init__(self, in_planes: int, planes: int, stride: int, make_conv: ConvFactory):
        super().__init__()
        self.conv = make_conv(in_planes, planes, 3, stride, 1)
        self.bn = nn.BatchNorm2d(planes)
        self.prelu = nn.PReLU(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.AvgPool2d(kernel_size=2, stride=stride),
                nn.Conv2d(in_planes, planes, 1, bias=False),
                nn.BatchNorm2d(planes),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.bn(self.conv(x)) + self.shortcut(x))


class BiRealResNet18(nn.Module):
    """7×7 stem → BN → max-pool (no activation) → 4 stages of 4 Bi-Real blocks → average pool → linear."""

    def __init__(self, num_classes: int, make_conv: ConvFactory):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_planes = 64
        for index, (planes, stride) in enumerate(zip([64, 128, 256, 512], [1, 2, 2, 2]), start=1):
            blocks = []
            for block_stride in [stride, 1, 1, 1]:
                blocks.append(BiRealBlock(in_planes, planes, block_stride, make_conv))
                in_planes = planes
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, SDConv2d):  # the official flat weights start as rand * 1e-3
                nn.init.uniform_(module.weight, 0.0, 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@register_model("resnet18_imagenet", "SD-BNN ResNet-18, Bi-Real structure, ImageNet (11,980,840 parameters)", binary=True)
@register_model("resnet18_imagenet_fp", "full-precision twin of the Bi-Real ResNet-18", binary=False, full_precision=True)
def resnet18_imagenet(*, num_classes: int = 1000, full_precision: bool = False, **sd_options) -> BiRealResNet18:
    """W1/A1 with WSD by default (stage 2); stage 1 (W32/A1) is ``binary_weights=False, wsd=False``."""
    return BiRealResNet18(num_classes, conv_factory(full_precision, {**IMAGENET_SD_DEFAULTS, **sd_options}))


@register_model("resnet34", "real-valued ResNet-34 teacher (torchvision architecture)", binary=False)
def resnet34_teacher(*, num_classes: int = 1000, weights: str | Path | None = None) -> nn.Module:
    """torchvision's ResNet-34. ``weights``: a state-dict file, "torchvision" for torchvision's ImageNet weights
    (needs network access), or None for random initialisation."""
    from torchvision.models import ResNet34_Weights, resnet34

    if weights == "torchvision":
        return resnet34(weights=ResNet34_Weights.IMAGENET1K_V1)
    model = resnet34(weights=None, num_classes=num_classes)
    if weights is not None:
        from sdbnn.checkpoints import load_state_dict_file

        state_dict = load_state_dict_file(weights)
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as error:
            raise ValueError(f"{weights} does not hold ResNet-34 weights for {num_classes} classes: {error}") from None
    return model

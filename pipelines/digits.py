"""scikit-learn's digits (1,797 real 8×8 handwritten digits, shipped inside the package) at CIFAR shape.

Used by the demo and the "it learns" test: no download is ever needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from sdbnn.pipelines.transforms import IMAGENET_MEAN, IMAGENET_STD

DIGITS_MAX_VALUE = 16.0  # sklearn's digits are integers in 0..16


@dataclass(frozen=True)
class DigitsSplit:
    train_images: torch.Tensor  # float32 [N, 3, size, size], normalised
    train_labels: torch.Tensor  # int64 [N]
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int = 10


def load_digits_split(num_train: int = 1400, size: int = 32, seed: int = 0) -> DigitsSplit:
    """Stratified split of the digits into ``num_train`` training and the rest held-out images, upsampled
    bilinearly to ``size``×``size``, repeated to 3 channels and normalised with the ImageNet mean/std."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    if not 0 < num_train < len(digits.target):
        raise ValueError(f"num_train must be between 1 and {len(digits.target) - 1}, got {num_train}")
    indices = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(indices, train_size=num_train, random_state=seed, stratify=digits.target)
    images = torch.from_numpy(digits.images).float().div(DIGITS_MAX_VALUE).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    images = (images.expand(-1, 3, -1, -1) - mean) / std
    labels = torch.from_numpy(digits.target).long()
    train_idx, val_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    return DigitsSplit(images[train_idx].contiguous(), labels[train_idx], images[val_idx].contiguous(), labels[val_idx])


def load_digits_image_sets(num_train: int = 1400, size: int = 32, seed: int = 0):
    """The same split as `load_digits_split`, as uint8 ImageSets (0–255, 3 channels) for the image loaders."""
    from sdbnn.pipelines.cifar import ImageSet
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(indices, train_size=num_train, random_state=seed, stratify=digits.target)
    images = torch.from_numpy(digits.images).float().div(DIGITS_MAX_VALUE).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    images = images.mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target).long()
    classes = [str(digit) for digit in range(10)]
    make = lambda idx: ImageSet(images[torch.from_numpy(idx)].contiguous(), labels[torch.from_numpy(idx)], classes)  # noqa: E731
    return make(train_idx), make(val_idx)

"""scikit-learn's digits (1,797 real 8×8 handwritten digits, shipped inside the package) at CIFAR shape.

Used by the demo and the "it learns" test: no download is ever needed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sdbnn.pipelines.cifar import ImageSet

DIGITS_MAX_VALUE = 16.0  # sklearn's digits are integers in 0..16


def load_digits(num_train: int = 1400, size: int = 32, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """Stratified split into ``num_train`` training and the rest held-out images, upsampled bilinearly to
    ``size``×``size``, as uint8 (0–255) with 3 channels: ready for the image loaders."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    digits = sklearn_digits()
    if not 0 < num_train < len(digits.target):
        raise ValueError(f"num_train must be between 1 and {len(digits.target) - 1}, got {num_train}")
    indices = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(indices, train_size=num_train, random_state=seed, stratify=digits.target)
    images = torch.from_numpy(digits.images).float().div(DIGITS_MAX_VALUE).unsqueeze(1)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    images = images.mul(255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    labels = torch.from_numpy(digits.target).long()
    classes = [str(digit) for digit in range(10)]

    def subset(idx: np.ndarray) -> ImageSet:
        idx = torch.from_numpy(idx)
        return ImageSet(images[idx].contiguous(), labels[idx], classes)

    return subset(train_idx), subset(val_idx)

"""Random CIFAR-shaped images for throughput runs (benchmarks, GPU sessions): never for "it learns" tests."""

from __future__ import annotations

import torch

from sdbnn.pipelines.cifar import ImageSet

CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000


def load_synthetic(num_train: int = CIFAR_TRAIN_IMAGES, num_val: int = CIFAR_TEST_IMAGES, size: int = 32,
                   classes: int = 10, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """(train, held-out) uint8 noise images [N, 3, size, size] with uniform random labels: CIFAR-10's shape and
    count by default, so a loader or a training step costs what it would on CIFAR-10."""
    generator = torch.Generator().manual_seed(seed)
    names = [str(index) for index in range(classes)]

    def make(count: int) -> ImageSet:
        images = torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)
        return ImageSet(images, torch.randint(0, classes, (count,), generator=generator), names)

    return make(num_train), make(num_val)

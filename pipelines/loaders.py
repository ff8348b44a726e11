"""Choosing a loader: FFCV when it is installed and given a .beton file, else torchvision with a one-line notice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from sdbnn.pipelines import transforms
from sdbnn.pipelines.cifar import DeviceResidentLoader, read_cifar
from sdbnn.pipelines.ffcv_data import FFCVImageLoader, ffcv_available
from sdbnn.pipelines.folders import scan_image_folder


class _DeviceBatches:
    """Moves a DataLoader's (images, labels) to the device, channels_last, with epochs set for its sampler."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True)


def torchvision_loader(dataset, batch_size: int, train: bool, device, workers: int, distributed: bool, seed: int):
    sampler = DistributedSampler(dataset, shuffle=train, seed=seed, drop_last=train) if distributed else None
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler, drop_last=train,
        num_workers=workers, pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0,
        generator=generator,
    )
    return _DeviceBatches(loader, torch.device(device))


def imagenet_loader(
    source: str | Path,
    batch_size: int,
    train: bool,
    *,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    distributed: bool = False,
    seed: int = 0,
    resolution: int = 224,
):
    """ImageNet-style loader for ``source``: a ``.beton`` file (FFCV) or an ImageFolder split directory
    (torchvision ImageFolder + DataLoader, the paper's augmentations either way)."""
    source = Path(source)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if source.suffix == ".beton":
        if not ffcv_available():
            raise ImportError(f"{source} is an FFCV file but ffcv is not installed; point at the ImageFolder instead")
        return FFCVImageLoader(source, batch_size, train, resolution=resolution, device=device, num_workers=workers,
                               distributed=distributed, seed=seed)
    scan_image_folder(source)  # one clear error for a missing or malformed tree
    reason = "ffcv is not installed" if not ffcv_available() else f"{source} is a folder, not a .beton"
    print(f"note: {reason}; using torchvision ImageFolder + DataLoader ({workers} workers)", file=sys.stderr)
    from torchvision.datasets import ImageFolder

    transform = transforms.imagenet_train_transform(resolution) if train else transforms.imagenet_val_transform(resolution)
    return torchvision_loader(ImageFolder(str(source), transform), batch_size, train, device, workers, distributed, seed)


def cifar_loader(
    source: str | Path,
    batch_size: int,
    train: bool,
    *,
    dataset: str = "cifar10",
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    workers: int | None = None,
):
    """CIFAR loader for ``source``: a ``.beton`` file (FFCV; needs ffcv) or torchvision's CIFAR root folder, which
    is loaded whole into the device-resident loader (the fastest option, no FFCV needed)."""
    source = Path(source)
    if source.suffix == ".beton":
        if not ffcv_available():
            raise ImportError(f"{source} is an FFCV file but ffcv is not installed; point at the CIFAR folder instead")
        return FFCVImageLoader(source, batch_size, train, dataset="cifar", device=device,
                               num_workers=-1 if workers is None else workers,
                               distributed=world_size > 1, seed=seed)
    return DeviceResidentLoader(read_cifar(source, train, dataset), batch_size, train, device=device, seed=seed,
                                rank=rank, world_size=world_size)


class CifarDataset(torch.utils.data.Dataset):
    """torchvision's CIFAR10/100 dataset semantics (PIL image per sample, then the transform) over `read_cifar`,
    which reads the same files without torchvision's checksum test (so any file in that layout works)."""

    def __init__(self, root: str | Path, train: bool, dataset: str = "cifar10", transform=None):
        data = read_cifar(root, train, dataset)
        self.images = data.images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image

        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), self.labels[index]


def cifar_torchvision_loader(root: str | Path, batch_size: int, train: bool, *, dataset: str = "cifar10",
                             device: torch.device | str = "cpu", workers: int = 2, distributed: bool = False,
                             seed: int = 0):
    """CIFAR the torchvision way (per-sample PIL transforms in DataLoader workers) with the paper's augmentation:
    the fallback, and the baseline the device-resident loader is measured against."""
    transform = transforms.cifar_train_transform() if train else transforms.cifar_test_transform()
    data = CifarDataset(root, train, dataset, transform)
    return torchvision_loader(data, batch_size, train, device, workers, distributed, seed)

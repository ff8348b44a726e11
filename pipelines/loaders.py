"""Choosing loaders: `build_loaders` (what the Trainer calls) picks, per dataset, FFCV for ``.beton`` files, the
device-resident loader for CIFAR folders and the small bundled datasets, and torchvision for image folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from sdbnn.pipelines import transforms
from sdbnn.pipelines.cifar import DeviceResidentLoader, ImageSet, read_cifar
from sdbnn.pipelines.digits import load_digits
from sdbnn.pipelines.ffcv_data import FFCVImageLoader, ffcv_available
from sdbnn.pipelines.folders import load_image_folder, load_mnist5k, scan_image_folder
from sdbnn.pipelines.synthetic import load_synthetic
from sdbnn.pipelines.transforms import batch_memory_format

# datasets the Trainer knows, by where their images come from
BUNDLED = {"digits": load_digits, "mnist5k": load_mnist5k, "synthetic": load_synthetic}  # no files needed
DATASETS = ("cifar10", "cifar100", "imagefolder", "imagenet", *BUNDLED)
AUGMENTED = ("cifar10", "cifar100", "imagefolder")  # crop + flip suit natural images, not digits or noise


class _DeviceBatches:
    """Moves a DataLoader's (images, labels) to the device, in the device's layout, with epochs set for its sampler."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device
        self.memory_format = batch_memory_format(device)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
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
    resolution_ramp: tuple[int, int, int, int] | None = None,
):
    """ImageNet-style loader for ``source``: a ``.beton`` file (FFCV) or an ImageFolder split directory
    (torchvision ImageFolder + DataLoader, the paper's augmentations either way). ``resolution_ramp`` (FFCV only)
    is progressive resizing: see `FFCVImageLoader`."""
    source = Path(source)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if source.suffix == ".beton":
        if not ffcv_available():
            raise ImportError(f"{source} is an FFCV file but ffcv is not installed; point at the ImageFolder instead")
        return FFCVImageLoader(source, batch_size, train, resolution=resolution, device=device, num_workers=workers,
                               distributed=distributed, seed=seed, resolution_ramp=resolution_ramp if train else None)
    if resolution_ramp is not None:
        raise ValueError("progressive resolution (resolution_ramp) needs FFCV .beton files; the torchvision fallback "
                         "trains at one resolution")
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
    max_images: int | None = None,
):
    """CIFAR loader for ``source``: a ``.beton`` file (FFCV; needs ffcv) or torchvision's CIFAR root folder, which
    is loaded whole into the device-resident loader (the fastest option, no FFCV needed)."""
    source = Path(source)
    if source.suffix == ".beton":
        if not ffcv_available():
            raise ImportError(f"{source} is an FFCV file but ffcv is not installed; point at the CIFAR folder instead")
        if max_images is not None:
            raise ValueError("max_images applies to datasets loaded whole, not to FFCV files")
        return FFCVImageLoader(source, batch_size, train, dataset="cifar", device=device,
                               num_workers=-1 if workers is None else workers,
                               distributed=world_size > 1, seed=seed)
    data = _first(read_cifar(source, train, dataset), max_images)
    return DeviceResidentLoader(data, batch_size, train, device=device, seed=seed, rank=rank, world_size=world_size)


def _first(data: ImageSet, count: int | None) -> ImageSet:
    if count is None or count >= len(data):
        return data
    return ImageSet(data.images[:count], data.labels[:count], data.classes)


def _split_source(root: Path, split: str) -> Path:
    """``root/<split>.beton`` (FFCV) when it exists, else the folder ``root/<split>``."""
    beton = root / f"{split}.beton"
    return beton if beton.is_file() else root / split


def build_loaders(config, rank: int, world_size: int, device: torch.device | str):
    """(train loader, held-out loader) of ``config.dataset`` for this rank, each yielding (normalised images in the
    device's layout, labels) on ``device``. ``config.batch_size`` is global: every rank gets its share.

    Reads ``dataset``, ``data_dir``, ``batch_size``, ``seed``, ``workers``, ``resolution``, ``resolution_ramp`` and
    ``max_images`` from ``config`` (a `sdbnn.engine.config.TrainConfig`).
    """
    if config.dataset not in DATASETS:
        raise ValueError(f"unknown dataset {config.dataset!r}; choose one of {', '.join(DATASETS)}")
    per_rank = config.batch_size // world_size
    workers = config.workers_per_process(world_size)
    device = torch.device(device)
    if config.dataset in BUNDLED:
        train, val = BUNDLED[config.dataset](seed=config.seed)
    else:
        if not config.data_dir or not Path(config.data_dir).expanduser().is_dir():
            raise FileNotFoundError(f"data directory {config.data_dir!r} does not exist (--data-dir)")
        root = Path(config.data_dir).expanduser()
        if config.dataset == "imagenet":
            if config.max_images is not None:
                raise ValueError("max_images applies to datasets loaded whole, not to ImageNet")
            return tuple(
                imagenet_loader(_split_source(root, split), per_rank, train, device=device, workers=workers,
                                distributed=world_size > 1, seed=config.seed, resolution=config.resolution,
                                resolution_ramp=config.resolution_ramp)
                for split, train in (("train", True), ("val", False))
            )
        if config.dataset in ("cifar10", "cifar100"):
            return tuple(
                cifar_loader(root / f"{split}.beton" if (root / f"{split}.beton").is_file() else root, per_rank, train,
                             dataset=config.dataset, device=device, rank=rank, world_size=world_size,
                             seed=config.seed, workers=workers, max_images=config.max_images)
                for split, train in (("train", True), ("val", False))
            )
        train, val = (load_image_folder(root / split) for split in ("train", "val"))
    shard = dict(device=device, seed=config.seed, rank=rank, world_size=world_size,
                 augment=config.dataset in AUGMENTED)
    return (DeviceResidentLoader(_first(train, config.max_images), per_rank, True, **shard),
            DeviceResidentLoader(_first(val, config.max_images), per_rank, False, **shard))


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

"""Choosing loaders: `build_loaders` (what the Trainer calls) picks, per dataset, FFCV for ``.beton`` files, the
device-resident loader for CIFAR folders and the small bundled datasets, and torchvision for image folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from sdbnn.pipelines import transforms
from sdbnn.pipelines.cifar import DeviceResidentLoader, ImageSet, batches_per_epoch, epoch_order, read_cifar
from sdbnn.pipelines.digits import load_digits
from sdbnn.pipelines.ffcv_data import FFCVImageLoader, ffcv_available
from sdbnn.pipelines.folders import load_image_folder, load_mnist5k, scan_image_folder
from sdbnn.pipelines.synthetic import load_synthetic
from sdbnn.pipelines.transforms import batch_memory_format

# datasets the Trainer knows, by where their images come from
BUNDLED = {"digits": load_digits, "mnist5k": load_mnist5k, "synthetic": load_synthetic}  # no files needed
DATASETS = ("cifar10", "cifar100", "imagefolder", "imagenet", *BUNDLED)
AUGMENTED = ("cifar10", "cifar100", "imagefolder")  # crop + flip suit natural images, not digits or noise


class EpochSampler(torch.utils.data.Sampler):
    """The keys (epoch, index) of the samples one rank reads in one epoch, in `epoch_order` (the device-resident
    loader's order: the global batch does not depend on the number of processes), from batch ``first_batch`` on: a
    resumed run skips what it consumed without decoding it. The key carries the epoch into persistent workers."""

    def __init__(self, count: int, batch_size: int, train: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.count, self.batch_size, self.train, self.seed = count, batch_size, train, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.first_batch = 0, 0

    def batches(self) -> int:
        return batches_per_epoch(self.count, self.batch_size, self.train, self.rank, self.world_size)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        if not 0 <= first_batch <= self.batches():
            raise ValueError(f"batch {first_batch} is outside an epoch of {self.batches()} batches")
        self.epoch, self.first_batch = epoch, first_batch

    def _order(self) -> list[int]:
        order = epoch_order(self.count, self.batch_size, self.train, seed=self.seed, epoch=self.epoch, rank=self.rank,
                            world_size=self.world_size)
        return order[self.first_batch * self.batch_size:].tolist()

    def __iter__(self):
        return iter([(self.epoch, index) for index in self._order()])

    def __len__(self) -> int:
        size = self.batches() * self.batch_size if self.train else len(range(self.rank, self.count, self.world_size))
        return max(0, size - self.first_batch * self.batch_size)


class SeededSamples(torch.utils.data.Dataset):
    """``dataset[index]`` under the key (epoch, index), its random augmentation drawn from torch's generator seeded by
    (seed, epoch, index): the same in any worker process, for any number of workers, and after a resume."""

    def __init__(self, dataset, seed: int = 0):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        sample_seed = int(np.random.SeedSequence([self.seed, epoch, index]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):  # the process's own random stream is left as it was
            torch.manual_seed(sample_seed)
            return self.dataset[index]


class _DeviceBatches:
    """Moves a DataLoader's (images, labels) to the device, in the device's layout; epochs set on its sampler."""

    def __init__(self, loader: DataLoader, device: torch.device):
        self.loader, self.device = loader, device
        self.memory_format = batch_memory_format(device)

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        self.loader.sampler.set_epoch(epoch, first_batch)

    def __len__(self) -> int:
        return self.loader.sampler.batches()  # the whole epoch's, whatever batch it starts from

    def __iter__(self):
        for images, labels in self.loader:
            images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
            yield images, labels.to(self.device, non_blocking=True)


def torchvision_loader(dataset, batch_size: int, train: bool, device, workers: int, *, seed: int = 0, rank: int = 0,
                       world_size: int = 1, worker_init_fn=None):
    """A DataLoader over ``dataset`` (per-sample transforms in ``workers`` processes) in `EpochSampler`'s order, with
    `SeededSamples`' augmentation: a function of (seed, epoch, sample) only. ``worker_init_fn`` runs first in every
    worker process."""
    sampler = EpochSampler(len(dataset), batch_size, train, seed, rank, world_size)
    loader = DataLoader(
        SeededSamples(dataset, seed), batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=torch.device(device).type == "cuda", persistent_workers=workers > 0,
        worker_init_fn=worker_init_fn if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # its per-epoch worker seed is not drawn from torch's own
    )
    return _DeviceBatches(loader, torch.device(device))


def imagenet_loader(
    source: str | Path,
    batch_size: int,
    train: bool,
    *,
    device: torch.device | str = "cpu",
    workers: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    resolution: int = 224,
    resolution_ramp: tuple[int, int, int, int] | None = None,
    worker_init_fn=None,
):
    """ImageNet-style loader for ``source``: a ``.beton`` file (FFCV) or an ImageFolder split directory
    (torchvision ImageFolder + DataLoader, the paper's augmentations either way); ``batch_size`` is per rank.
    ``resolution_ramp`` (FFCV only) is progressive resizing: see `FFCVImageLoader`."""
    source = Path(source)
    workers = (os.cpu_count() or 1) if workers is None else workers
    if source.suffix == ".beton":
        if not ffcv_available():
            raise ImportError(f"{source} is an FFCV file but ffcv is not installed; point at the ImageFolder instead")
        return FFCVImageLoader(source, batch_size, train, resolution=resolution, device=device, num_workers=workers,
                               distributed=world_size > 1, seed=seed, resolution_ramp=resolution_ramp if train else None)
    if resolution_ramp is not None:
        raise ValueError("progressive resolution (resolution_ramp) needs FFCV .beton files; the torchvision fallback "
                         "trains at one resolution")
    scan_image_folder(source)  # one clear error for a missing or malformed tree
    reason = "ffcv is not installed" if not ffcv_available() else f"{source} is a folder, not a .beton"
    print(f"note: {reason}; using torchvision ImageFolder + DataLoader ({workers} workers)", file=sys.stderr)
    from torchvision.datasets import ImageFolder

    transform = transforms.imagenet_train_transform(resolution) if train else transforms.imagenet_val_transform(resolution)
    return torchvision_loader(ImageFolder(str(source), transform), batch_size, train, device, workers, seed=seed,
                              rank=rank, world_size=world_size, worker_init_fn=worker_init_fn)


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


def build_loaders(config, rank: int, world_size: int, device: torch.device | str, worker_init_fn=None):
    """(train loader, held-out loader) of ``config.dataset`` for this rank, each yielding (normalised images in the
    device's layout, labels) on ``device``. ``config.batch_size`` is global: every rank gets its share.
    ``worker_init_fn`` runs first in every data-loading worker process (the loaders that have them).

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
                imagenet_loader(_split_source(root, split), per_rank, train, device=device, workers=workers, rank=rank,
                                world_size=world_size, seed=config.seed, resolution=config.resolution,
                                resolution_ramp=config.resolution_ramp, worker_init_fn=worker_init_fn)
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
                             device: torch.device | str = "cpu", workers: int = 2, seed: int = 0):
    """CIFAR the torchvision way (per-sample PIL transforms in DataLoader workers) with the paper's augmentation:
    the fallback, and the baseline the device-resident loader is measured against."""
    transform = transforms.cifar_train_transform() if train else transforms.cifar_test_transform()
    data = CifarDataset(root, train, dataset, transform)
    return torchvision_loader(data, batch_size, train, device, workers, seed=seed)

"""CIFAR-10/100 from torchvision's on-disk layout, and the device-resident loader.

The device-resident loader keeps the whole uint8 set on the device and does the paper's augmentation there
(4-pixel zero-pad random crop + horizontal flip), so a CIFAR epoch never waits on CPU workers.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sdbnn.pipelines.transforms import batch_memory_format, normalize

# torchvision's extracted archives: folder, training files, test files, label key
CIFAR_LAYOUTS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
CIFAR_PADDING = 4


@dataclass(frozen=True)
class ImageSet:
    """A whole image dataset in memory: uint8 images [N, 3, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def read_cifar(root: str | Path, train: bool, dataset: str = "cifar10") -> ImageSet:
    """Read CIFAR-10/100 as torchvision extracts it (``root/cifar-10-batches-py/data_batch_1`` ...)."""
    if dataset not in CIFAR_LAYOUTS:
        raise ValueError(f"unknown CIFAR dataset {dataset!r}; choose one of {', '.join(CIFAR_LAYOUTS)}")
    folder, train_files, test_files, label_key = CIFAR_LAYOUTS[dataset]
    directory = Path(root) / folder
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{dataset} not found: expected torchvision's extracted folder {directory} "
            f"(torchvision.datasets.{dataset.upper()}(root, download=True) makes it)"
        )
    images, labels = [], []
    for name in train_files if train else test_files:
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{dataset} file {path} is missing")
        try:
            with open(path, "rb") as handle:
                batch = pickle.load(handle, encoding="bytes")
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as error:
            raise ValueError(f"{path} is not a CIFAR batch file ({type(error).__name__}: {error})") from None
    classes = _cifar_classes(directory, dataset)
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


def _cifar_classes(directory: Path, dataset: str) -> list[str]:
    meta = directory / ("batches.meta" if dataset == "cifar10" else "meta")
    key = b"label_names" if dataset == "cifar10" else b"fine_label_names"
    if meta.is_file():
        with open(meta, "rb") as handle:
            return [name.decode() for name in pickle.load(handle, encoding="bytes")[key]]
    return [str(index) for index in range(10 if dataset == "cifar10" else 100)]


def random_crop_flip(
    images: torch.Tensor,
    generator: torch.Generator,
    padding: int = CIFAR_PADDING,
    draws: int | None = None,
    first: int = 0,
) -> torch.Tensor:
    """Per-sample random crop of the zero-padded images back to their size, then a random horizontal flip.

    ``draws`` samples' crops and flips are drawn (default: one per image) and images take draws ``first``,
    ``first + 1``, ...: ranks that each hold one slice of a global batch draw the same numbers, so a sample's
    augmentation does not depend on how many processes share the batch.
    """
    batch, channels, height, width = images.shape
    draws = batch if draws is None else draws
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    mine = slice(first, first + batch)
    dy = torch.randint(0, 2 * padding + 1, (draws,), generator=generator, device=device)[mine]
    dx = torch.randint(0, 2 * padding + 1, (draws,), generator=generator, device=device)[mine]
    flip = (torch.rand(draws, generator=generator, device=device) < 0.5)[mine]
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    samples = torch.arange(batch, device=device)[:, None, None, None]
    return padded[samples, torch.arange(channels, device=device)[None, :, None, None], rows, cols]


class DeviceResidentLoader:
    """Batches of a whole uint8 dataset held on ``device``; reshuffled every epoch, sharded across ranks.

    ``batch_size`` is per rank. In training every rank draws the same permutation (seeded by seed + epoch), cuts it
    into global batches of ``batch_size * world_size`` and takes its contiguous slice of each; crops and flips are
    drawn per global batch too. So the global batch at every step, augmentation included, is the same for any number
    of processes (2 ranks × 32 see exactly what 1 process × 64 sees). The samples that do not fill a last global batch
    are dropped (every rank takes the same number of steps). Evaluation takes every ``world_size``-th sample and keeps
    them all. Yields (normalised images, labels); images are in ``memory_format`` (default: the device's, see
    `batch_memory_format`).
    """

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        train: bool,
        device: torch.device | str = "cpu",
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        dtype: torch.dtype = torch.float32,
        augment: bool = True,
        memory_format: torch.memory_format | None = None,
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.device = torch.device(device)
        self.images = data.images.to(self.device)
        self.labels = data.labels.to(self.device)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.rank, self.world_size, self.dtype = rank, world_size, dtype
        self.augment = augment and train  # crop + flip suit natural images, not digits
        self.memory_format = memory_format or batch_memory_format(self.device)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        count = len(self.labels)
        if not self.train:
            return torch.arange(self.rank, count, self.world_size, device=self.device)
        generator = torch.Generator(device=self.device).manual_seed(self.seed + self.epoch)
        order = torch.randperm(count, generator=generator, device=self.device)
        global_batch = self.batch_size * self.world_size
        steps = count // global_batch
        return order[: steps * global_batch].view(steps, self.world_size, self.batch_size)[:, self.rank].reshape(-1)

    def __len__(self) -> int:
        count = len(self.labels)
        if self.train:
            return count // (self.batch_size * self.world_size)
        mine = len(range(self.rank, count, self.world_size))
        return -(-mine // self.batch_size)

    def __iter__(self):
        indices = self._indices()
        generator = torch.Generator(device=self.device).manual_seed(self.seed + self.epoch + 1_000_003)  # same on every rank
        for start in range(0, len(indices), self.batch_size):
            index = indices[start : start + self.batch_size]
            images = self.images[index]
            if self.augment:
                images = random_crop_flip(images, generator, draws=self.batch_size * self.world_size,
                                          first=self.rank * self.batch_size)
            images = normalize(images, self.dtype).contiguous(memory_format=self.memory_format)
            yield images, self.labels[index]

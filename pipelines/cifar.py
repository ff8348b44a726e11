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
# The only callables a CIFAR batch's pickle names: numpy's array constructors (old and new module paths, pickle
# protocols 2 to 5) and the bytes encoder Python 3 pickles bytes with at protocol 2. A file that names anything else
# is not a CIFAR batch, and nothing it names is called.
CIFAR_PICKLE_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, bytes, str, numbers) and numpy arrays, nothing that runs code."""

    def find_class(self, module: str, name: str):
        if (module, name) not in CIFAR_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds (not loaded: "
                                         "unpickling it could run code)")
        if module.startswith("numpy.core.") and hasattr(np, "_core"):  # numpy 2 moved numpy.core to numpy._core
            module = "numpy._core." + module.removeprefix("numpy.core.")
        return super().find_class(module, name)


def load_cifar_pickle(path: str | Path):
    """A CIFAR "python version" file (a pickle) read with `_CifarUnpickler`: ValueError naming the file when it holds
    anything but plain data and numpy arrays, raised before any of it is called."""
    try:
        with open(path, "rb") as handle:
            return _CifarUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise ValueError(f"{path} is not a CIFAR batch file ({type(error).__name__}: {error})") from None


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
        batch = load_cifar_pickle(path)
        try:
            images.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"{path} is not a CIFAR batch file ({type(error).__name__}: {error})") from None
    classes = _cifar_classes(directory, dataset)
    return ImageSet(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)), classes)


def write_cifar(root: str | Path, images: np.ndarray, labels: list[int]) -> Path:
    """Write uint8 images [N, 3, 32, 32] and labels as torchvision's extracted CIFAR-10 (every training file and the
    test file hold the same images): the layout `read_cifar` reads, for tests and benchmarks that cannot download."""
    folder, train_files, test_files, label_key = CIFAR_LAYOUTS["cifar10"]
    directory = Path(root) / folder
    directory.mkdir(parents=True, exist_ok=True)
    batch = {b"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(labels), -1), label_key: list(labels)}
    for name in train_files + test_files:
        (directory / name).write_bytes(pickle.dumps(batch))
    return Path(root)


def _cifar_classes(directory: Path, dataset: str) -> list[str]:
    meta = directory / ("batches.meta" if dataset == "cifar10" else "meta")
    key = b"label_names" if dataset == "cifar10" else b"fine_label_names"
    if meta.is_file():
        try:
            return [name.decode() for name in load_cifar_pickle(meta)[key]]
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{meta} is not a CIFAR meta file ({type(error).__name__}: {error})") from None
    return [str(index) for index in range(10 if dataset == "cifar10" else 100)]


def crop_flip_draws(generator: torch.Generator, draws: int, padding: int = CIFAR_PADDING):
    """The random numbers of `random_crop_flip` for ``draws`` samples: (row offsets, column offsets, flips). Drawing
    them without the images replays a batch's augmentation (a resumed run skips the batches it consumed)."""
    device = generator.device
    dy = torch.randint(0, 2 * padding + 1, (draws,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (draws,), generator=generator, device=device)
    flip = torch.rand(draws, generator=generator, device=device) < 0.5
    return dy, dx, flip


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
    dy, dx, flip = (values[mine] for values in crop_flip_draws(generator, draws, padding))
    rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    samples = torch.arange(batch, device=device)[:, None, None, None]
    return padded[samples, torch.arange(channels, device=device)[None, :, None, None], rows, cols]


def epoch_order(count: int, batch_size: int, train: bool, *, seed: int = 0, epoch: int = 0, rank: int = 0,
                world_size: int = 1, device: torch.device | str = "cpu") -> torch.Tensor:
    """The sample indices one rank reads in one epoch, in order.

    Training: every rank draws the same permutation (seeded by seed + epoch), cuts it into global batches of
    ``batch_size * world_size`` and takes its contiguous slice of each (``batch_size`` is per rank); the samples that
    do not fill a last global batch are dropped. So the global batch at every step is the same for any number of
    processes. Evaluation: every ``world_size``-th sample, all kept.
    """
    device = torch.device(device)
    if not train:
        return torch.arange(rank, count, world_size, device=device)
    generator = torch.Generator(device=device).manual_seed(seed + epoch)
    order = torch.randperm(count, generator=generator, device=device)
    global_batch = batch_size * world_size
    steps = count // global_batch
    return order[: steps * global_batch].view(steps, world_size, batch_size)[:, rank].reshape(-1)


def batches_per_epoch(count: int, batch_size: int, train: bool, rank: int = 0, world_size: int = 1) -> int:
    """How many batches `epoch_order` makes for one rank."""
    if train:
        return count // (batch_size * world_size)
    return -(-len(range(rank, count, world_size)) // batch_size)


class DeviceResidentLoader:
    """Batches of a whole uint8 dataset held on ``device``; reshuffled every epoch, sharded across ranks.

    ``batch_size`` is per rank; the order is `epoch_order`'s, and crops and flips are drawn per global batch too. So
    the global batch at every step, augmentation included, is the same for any number of processes (2 ranks × 32 see
    exactly what 1 process × 64 sees), and every rank takes the same number of steps. Yields (normalised images,
    labels); images are in ``memory_format`` (default: the device's, see `batch_memory_format`).
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
        self.epoch, self.first_batch = 0, 0

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Iterate epoch ``epoch`` (its order and augmentation) from batch ``first_batch`` on: a run resumed in the
        middle of an epoch skips the batches it consumed without touching their images."""
        if not 0 <= first_batch <= len(self):
            raise ValueError(f"batch {first_batch} is outside an epoch of {len(self)} batches")
        self.epoch, self.first_batch = epoch, first_batch

    def __len__(self) -> int:
        return batches_per_epoch(len(self.labels), self.batch_size, self.train, self.rank, self.world_size)

    def _indices(self) -> torch.Tensor:
        """This rank's sample indices of the whole epoch, in order."""
        return epoch_order(len(self.labels), self.batch_size, self.train, seed=self.seed, epoch=self.epoch,
                           rank=self.rank, world_size=self.world_size, device=self.device)

    def __iter__(self):
        indices = self._indices()
        # same on every rank
        generator = torch.Generator(device=self.device).manual_seed(self.seed + self.epoch + 1_000_003)
        global_batch = self.batch_size * self.world_size
        if self.augment:
            for _ in range(self.first_batch):  # replay the skipped batches' draws: the generator continues exactly
                crop_flip_draws(generator, global_batch)
        for start in range(self.first_batch * self.batch_size, len(indices), self.batch_size):
            index = indices[start : start + self.batch_size]
            images = self.images[index]
            if self.augment:
                images = random_crop_flip(images, generator, draws=global_batch, first=self.rank * self.batch_size)
            images = normalize(images, self.dtype).contiguous(memory_format=self.memory_format)
            yield images, self.labels[index]

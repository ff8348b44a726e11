"""A run's configuration: one dataclass, YAML recipes, command-line overrides; the resolved config is saved."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PAPER_KEY = "paper"
DATASETS = ("cifar10", "cifar100", "imagefolder", "digits", "mnist5k", "imagenet")


@dataclass
class TrainConfig:
    model: str = "resnet20"
    dataset: str = "cifar10"
    data_dir: str | None = None
    epochs: int = 500
    batch_size: int = 128  # global: split evenly over the processes
    accumulation_steps: int = 1  # micro-batches per rank per optimizer step (BatchNorm sees one micro-batch)
    lr: float = 0.11
    optimizer: str = "sgd"  # sgd (momentum, no Nesterov) | adam
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_on: str = "all"  # all | conv_weights
    lr_schedule: str = "cosine"  # cosine: to 0, stepped per epoch | linear: to 0, stepped per step
    t_min: float = 1e-3
    t_max: float = 10.0
    ede_per_step: bool = False
    model_options: dict = field(default_factory=dict)  # create_model overrides (asd, wsd, binary_weights, ...)
    teacher: str | None = None
    teacher_weights: str | None = None
    kd_temperature: float = 1.0
    kd_alpha: float = 1.0
    init_from: str | None = None  # weights to start from (ImageNet stage 2 starts from stage 1)
    resolution: int = 224  # ImageNet training crop (FFCV loaders can change it per epoch)
    compile: bool = False
    backend: str = "ops"
    seed: int = 0
    workers: int = 8
    output_dir: str = "runs/default"

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose sgd or adam")
        if self.lr_schedule not in ("cosine", "linear"):
            raise ValueError(f"unknown lr schedule {self.lr_schedule!r}; choose cosine or linear")
        if self.weight_decay_on not in ("all", "conv_weights"):
            raise ValueError(f"weight_decay_on must be all or conv_weights, got {self.weight_decay_on!r}")
        if self.epochs <= 0 or self.batch_size <= 0 or self.accumulation_steps <= 0:
            raise ValueError("epochs, batch_size and accumulation_steps must be positive")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(unknown)}")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        from sdbnn.checkpoints import atomic_write

        atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False)))


def _read_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        raise ValueError(f"recipe {path} is not a mapping of config keys")
    return values


def load_recipe(path: str | Path) -> dict:
    """A recipe's config values (its ``paper`` block, the published result, is not one of them)."""
    values = _read_recipe(path)
    values.pop(PAPER_KEY, None)
    return values


def load_paper_result(path: str | Path) -> dict | None:
    """The published result a recipe reproduces (row, top1, top5, which epoch), or None."""
    return _read_recipe(path).get(PAPER_KEY)

"""A run's configuration: one dataclass whose fields are declared once, with their help text and the launchers that
expose them as flags (`sdbnn.engine.cli` derives every flag from these declarations); YAML recipes; the resolved
config is saved with every run."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sdbnn.ops import BACKENDS
from sdbnn.pipelines.loaders import DATASETS
from sdbnn.reference import T_MAX

PAPER_KEY = "paper"
TRACKERS = ("tensorboard", "wandb", "mlflow")  # --report-to: Accelerate's trackers the launchers offer, by package
CIFAR, IMAGENET = "cifar", "imagenet"  # the two launchers
BOTH = (CIFAR, IMAGENET)


def setting(default, help: str, *, launchers: tuple[str, ...] = BOTH, choices: tuple | None = None,
            metavar: str | None = None, default_factory=None):
    """A config field with what its command-line flag needs: help text, the launchers that offer it, choices."""
    metadata = {"help": help, "launchers": launchers, "choices": choices, "metavar": metavar}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # --- what to train, on what
    model: str = setting("resnet20", "architecture (sdbnn.list_models())", launchers=(CIFAR,))
    dataset: str = setting("cifar10", "dataset; an imagefolder has train/ and val/ below --data-dir",
                           launchers=(CIFAR,), choices=DATASETS)
    data_dir: str | None = setting(None, "dataset folder (torchvision CIFAR layout, ImageFolder train/ val/, or "
                                         "train.beton + val.beton)")
    max_images: int | None = setting(None, "use at most N images of each split (smoke runs, benchmarks)")
    model_options: dict = setting(None, "create_model overrides (asd, wsd, binary_weights, surrogates, ...); "
                                        "flags: --asd, --no-asd, --static-asd, --wsd/--no-wsd",
                                  default_factory=dict, launchers=())
    init_from: str | None = setting(None, "weights to start from (ImageNet stage 2 starts from stage 1's)",
                                    launchers=(CIFAR,))
    # --- optimisation
    epochs: int = setting(500, "epochs")
    batch_size: int = setting(128, "global batch, split evenly over the processes")
    accumulation_steps: int = setting(1, "micro-batches per process per optimizer step (global batch unchanged; "
                                         "BatchNorm sees one micro-batch)")
    lr: float = setting(0.11, "peak learning rate")
    optimizer: str = setting("sgd", "optimizer (SGD: momentum, no Nesterov)", choices=("sgd", "adam"))
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(1e-4, "weight decay")
    weight_decay_on: str = setting("all", "parameters that decay: all, or conv weights only (ImageNet recipe)",
                                   choices=("all", "conv_weights"))
    lr_schedule: str = setting("cosine", "cosine: to 0, stepped per epoch; linear: to 0, stepped per step",
                               choices=("cosine", "linear"))
    # --- EDE (docs/method.md §EDE schedule)
    t_min: float = setting(1e-3, "EDE temperature at epoch 0")
    t_max: float = setting(T_MAX, "EDE temperature the schedule ends at")
    ede_per_step: bool = setting(False, "recompute EDE (k, t) every step instead of every epoch")
    # --- late-training stability (not in the paper; docs/method.md §Late-epoch collapse)
    t_cap: float | None = setting(None, "hold the EDE temperature at this value once the schedule reaches it "
                                        "(bounds EDE's peak slope k·t)")
    grad_clip_norm: float | None = setting(None, "clip the total gradient norm to this value before each step")
    bn_recalibration: bool = setting(False, "after every epoch, re-estimate BatchNorm running statistics over the "
                                            "training set with the epoch's final weights (before evaluation)")
    # --- distillation (ImageNet recipe)
    teacher: str | None = setting(None, "teacher model to distill from (--no-teacher: train with cross-entropy)",
                                  launchers=(IMAGENET,))
    teacher_weights: str | None = setting(None, "teacher state-dict file ('torchvision': download, online only)",
                                          launchers=(IMAGENET,))
    kd_temperature: float = setting(1.0, "distillation temperature", launchers=(IMAGENET,))
    kd_alpha: float = setting(1.0, "weight of the distillation loss (1 - alpha on cross-entropy)",
                              launchers=(IMAGENET,))
    resolution: int = setting(224, "ImageNet training crop", launchers=(IMAGENET,))
    resolution_ramp: list[int] | None = setting(
        None, "progressive resizing (FFCV files only): start_res end_res start_epoch end_epoch",
        launchers=(IMAGENET,), metavar=("START_RES", "END_RES", "START_EPOCH", "END_EPOCH"))
    workers: int | None = setting(None, "data-loading worker processes (default: the machine's cores per process)")
    # --- how it runs
    compile: bool | None = setting(None, "torch.compile the model (default: on for CUDA, off on CPU)")
    compile_mode: str | None = setting(None, "torch.compile mode; reduce-overhead (CUDA graphs) suits the CIFAR "
                                             "models, whose steps are launch-bound",
                                       choices=("default", "reduce-overhead", "max-autotune"))
    backend: str = setting("ops", "sign implementation: the fused ops (Triton on CUDA, CPU math on CPU), the "
                                  "Triton kernels everywhere (CPU: interpreted, TRITON_INTERPRET=1), or the eager "
                                  "reference (debugging)", choices=BACKENDS)
    precision: str = setting("auto", "arithmetic of the forward and backward passes: bf16 autocast or fp32; auto = "
                                     "bf16 on CUDA, fp32 on CPU (docs/method.md §Precision)",
                             choices=("auto", "fp32", "bf16"))
    diagnostics: bool = setting(False, "record per-epoch training diagnostics in the metrics (gradient norms, "
                                       "weight sign flips, EDE band occupancy, BatchNorm drift, train/eval gap)")
    seed: int = setting(0, "random seed")
    report_to: str | None = setting(None, "where the epoch metrics also go (metrics.jsonl is always written), through "
                                          "Accelerate's trackers: TensorBoard (<output-dir>/tensorboard), Weights & "
                                          "Biases, MLflow, all installed ones, or none (default: tensorboard when "
                                          "installed, else none)", choices=("none", *TRACKERS, "all"))
    checkpoint_every_min: float | None = setting(
        None, "also write a checkpoint every M minutes inside an epoch (it is always written at every epoch's end); 0: "
              "at every check (every 10 steps; with one process every step). Off for CIFAR, 30 in the ImageNet recipes")
    output_dir: str = setting("runs/default", "run directory (default: runs/<dataset>_<model>; ImageNet: "
                                              "runs/imagenet, holding stage1/ and stage2/)")

    def __post_init__(self):
        for key in ("dataset", "optimizer", "lr_schedule", "weight_decay_on", "compile_mode", "backend", "precision",
                    "report_to"):
            choices, value = config_field(key).metadata["choices"], getattr(self, key)
            if value is not None and value not in choices:
                raise ValueError(f"unknown {key} {value!r}; choose one of {', '.join(choices)}")
        if self.epochs <= 0 or self.batch_size <= 0 or self.accumulation_steps <= 0:
            raise ValueError("epochs, batch_size and accumulation_steps must be positive")
        if self.checkpoint_every_min is not None and self.checkpoint_every_min < 0:
            raise ValueError(f"checkpoint_every_min must be 0 or more, got {self.checkpoint_every_min}")
        for key in ("t_cap", "grad_clip_norm"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                raise ValueError(f"{key} must be positive, got {getattr(self, key)}")
        if self.max_images is not None and self.max_images <= 0:
            raise ValueError(f"max_images must be positive, got {self.max_images}")
        if self.resolution_ramp is not None:
            self.resolution_ramp = [int(value) for value in self.resolution_ramp]
            if len(self.resolution_ramp) != 4:
                raise ValueError("resolution_ramp is [start_res, end_res, start_epoch, end_epoch]")

    def check_runnable(self) -> None:
        """Problems that make a run pointless, reported before anything starts."""
        if self.teacher is not None and self.teacher_weights is None and self.kd_alpha > 0:
            raise ValueError(
                f"this recipe distills from a {self.teacher} teacher but no teacher weights were given: a randomly "
                "initialised teacher teaches nothing. Pass --teacher-weights FILE, or --no-teacher to train with "
                "cross-entropy alone")
        self.trackers()  # a tracker asked for but not installed

    def trackers(self) -> list[str]:
        """The trackers `report_to` names, resolved: the installed ones for "all", tensorboard (if installed) by
        default. ImportError when one named on its own is not installed."""
        installed = [name for name in TRACKERS if importlib.util.find_spec(name) is not None]
        if self.report_to in (None, "all"):
            return installed if self.report_to == "all" else [name for name in installed if name == "tensorboard"]
        if self.report_to == "none":
            return []
        if self.report_to not in installed:
            raise ImportError(f"--report-to {self.report_to} needs the {self.report_to} package, which is not "
                              f"installed: pip install {self.report_to}")
        return [self.report_to]

    def resolved_precision(self, cuda: bool) -> str:
        """"bf16" (autocast) or "fp32": ``precision`` with auto decided by the device."""
        if self.precision == "auto":
            return "bf16" if cuda else "fp32"
        return self.precision

    def workers_per_process(self, processes: int) -> int:
        """``workers``, or the machine's cores shared by the processes on it."""
        if self.workers is not None:
            return self.workers
        return max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                   // processes)

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
        from sdbnn.io import atomic_write

        atomic_write(path, lambda tmp: tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False)))


def config_field(name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(TrainConfig)}[name]


def config_fields() -> list[dataclasses.Field]:
    return list(dataclasses.fields(TrainConfig))


def field_type(item: dataclasses.Field):
    """The field's value type without ``| None`` (int, float, str, bool, list, dict)."""
    hint = typing.get_type_hints(TrainConfig)[item.name]
    options = [arg for arg in typing.get_args(hint) if arg is not type(None)] or [hint]
    base = typing.get_origin(options[0]) or options[0]
    return base


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

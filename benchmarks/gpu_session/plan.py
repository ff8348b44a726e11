"""What the stages of a GPU session share: the plan (GPU run or tiny CPU run), the session state, the Stage record."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from benchmarks.common import Report, Section

# seconds one torch.compile of a model takes on the GPU (correctness and training both compile models)
COMPILE_S = {"resnet20": 30, "resnet18_imagenet": 75}


@dataclasses.dataclass(frozen=True)
class Plan:
    tiny: bool
    compile_backend: str
    layers: list  # binary layers (channels, height, width) the op checks and op benchmarks use; weights (C, C, 3, 3)
    model_cases: dict  # model -> (batch, resolution, optimizer, recipe) as in benchmarks/training.py

    def pick(self, gpu, tiny):
        return tiny if self.tiny else gpu

    def estimate(self, seconds: float) -> float:  # the tiny run starts everything: its budgets only bound the whole
        return 0.0 if self.tiny else seconds


GPU_PLAN = Plan(  # ResNet-18 ImageNet's binary layers
    tiny=False, compile_backend="inductor", layers=[(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)],
    model_cases={"resnet20": (128, 32, "sgd", "cifar10_resnet20"), "resnet18_imagenet": (256, 224, "adam", None)},
)
TINY_PLAN = Plan(
    tiny=True, compile_backend="aot_eager", layers=[(16, 8, 8), (32, 5, 5)],
    # ResNet-18 at 64 px: at 32 px its last stage is 1×1 and BatchNorm over 2 values makes gradients pure noise
    model_cases={"resnet20": (16, 32, "sgd", "cifar10_resnet20"), "resnet18_imagenet": (4, 64, "adam", None)},
)


class Session:
    """What stages share: the plan, the device, and models compiled in one stage for use in a later one."""

    def __init__(self, plan: Plan, device: torch.device, report: Report):
        self.plan, self.device, self.report = plan, device, report
        self.prepared: dict[tuple[str, str], object] = {}  # (model, variant) -> benchmarks.training.Prepared

    def stage_data(self, name: str) -> dict:
        return self.report.result.get(name, {})


@dataclasses.dataclass(frozen=True)
class Stage:
    """A stage: ``run`` measures, ``table`` renders its data as markdown."""

    name: str
    title: str
    run: Callable[[Section, Session], None]
    table: Callable[[dict], str]
    budgets_s: tuple[float, float]  # (GPU, tiny)

    def budget(self, plan: Plan) -> float:
        return plan.pick(*self.budgets_s)

"""Training-step throughput per model: SD-BNN as this project trains it against the baselines that say what the fused
ops buy, all measured in the same run on synthetic device-resident batches.

    python -m benchmarks --only training            # CUDA: every model at its paper batch size (ImageNet: 256 per GPU)
    python -m benchmarks --only training --quick    # CPU smoke run (ResNet-20, batch 16)

Variants (one optimizer step each: forward, cross-entropy, backward, SGD/Adam as in the recipe):
  sdbnn               fused ops (Triton on CUDA) inside torch.compile(fullgraph=True), bf16 autocast on CUDA
  sdbnn_cudagraphs    the same, compiled with mode="reduce-overhead" (CUDA graphs; CUDA only)
  reference_compiled  the reference math inside torch.compile (Inductor generates sign and its surrogate itself)
  reference_fp32      the eager reference math in fp32, no compile (what the official code does)
  full_precision      the model's real-valued twin, compiled, bf16 autocast on CUDA
For the CIFAR models the SD-BNN rows also project the recipe's whole schedule (train 50,000 + evaluate 10,000 images
per epoch) from the measured rates: the "training" section of `python -m benchmarks`.
"""

from __future__ import annotations

import dataclasses
import time

import torch
import torch.nn.functional as F

import sdbnn
from benchmarks.common import Section, log
from sdbnn.pipelines.synthetic import CIFAR_TEST_IMAGES, CIFAR_TRAIN_IMAGES

K, T = 1.0, 2.5  # mid-schedule EDE; the cost does not depend on them

# model -> (batch per device, resolution, optimizer, recipe whose schedule is projected)
FULL_CASES = {
    "resnet20": (128, 32, "sgd", "cifar10_resnet20"),
    "vgg_small": (128, 32, "sgd", "cifar10_vgg_small"),
    "resnet18_cifar": (128, 32, "sgd", "cifar10_resnet18_cifar"),
    "resnet18_imagenet": (256, 224, "adam", None),
}
QUICK_CASES = {"resnet20": (16, 32, "sgd", "cifar10_resnet20")}


@dataclasses.dataclass(frozen=True)
class Variant:
    binary: bool  # the SD-BNN model, or its full-precision twin
    backend: str  # sdbnn.backend: "ops" (fused) or "reference" (autograd math)
    compiled: bool
    low_precision: bool  # bf16 autocast where the run uses it (CUDA by default)
    mode: str | None = None  # torch.compile mode


VARIANTS = {
    "sdbnn": Variant(True, "ops", True, True),
    "sdbnn_cudagraphs": Variant(True, "ops", True, True, "reduce-overhead"),
    "reference_compiled": Variant(True, "reference", True, True),
    "reference_fp32": Variant(True, "reference", False, False),
    "full_precision": Variant(False, "ops", True, True),
}
DEFAULT_VARIANTS = ("sdbnn", "sdbnn_cudagraphs", "reference_compiled", "reference_fp32", "full_precision")
QUICK_VARIANTS = ("sdbnn", "reference_fp32", "full_precision")
CUDA_ONLY_VARIANTS = ("sdbnn_cudagraphs",)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batches(batch: int, resolution: int, classes: int, device: torch.device, count: int = 4, seed: int = 0):
    """``count`` (images, labels) batches on the device, images channels_last (the loaders' layout)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return [
        (torch.randn(batch, 3, resolution, resolution, device=device, generator=generator)
         .contiguous(memory_format=torch.channels_last),
         torch.randint(0, classes, (batch,), device=device, generator=generator))
        for _ in range(count)
    ]


@dataclasses.dataclass
class Prepared:
    """A model ready to step: the module, what calls it (its compiled wrapper), the optimizer and batches."""

    model_name: str
    variant: str
    case: tuple
    device: torch.device
    model: torch.nn.Module
    forward: torch.nn.Module
    optimizer: torch.optim.Optimizer
    batches: list
    autocast: bool
    compile_backend: str | None
    first_step_s: float | None = None  # the first training step: includes compilation

    @property
    def backend(self) -> str:
        return VARIANTS[self.variant].backend

    @property
    def cudagraphs(self) -> bool:
        return VARIANTS[self.variant].mode == "reduce-overhead" and self.device.type == "cuda"


def build_model(model_name: str, variant: str, device: torch.device) -> torch.nn.Module:
    name = model_name if VARIANTS[variant].binary else f"{model_name}_fp"
    model = sdbnn.create_model(name).to(device).to(memory_format=torch.channels_last)
    sdbnn.set_ede(model, K, T)
    return model


def compile_model(model: torch.nn.Module, variant: str, device: torch.device, backend: str = "inductor"):
    """torch.compile(fullgraph=True) as the variant asks; a mode only applies to Inductor (and CUDA graphs to CUDA)."""
    spec = VARIANTS[variant]
    if not spec.compiled:
        return model
    mode = spec.mode if backend == "inductor" and device.type == "cuda" else None
    return torch.compile(model, fullgraph=True, backend=backend, mode=mode)


def prepare(model_name: str, case: tuple, variant: str, device: torch.device, *, compile_backend: str = "inductor",
            autocast: bool | None = None, model: torch.nn.Module | None = None) -> Prepared:
    """Build (or take) the model, compile it as the variant asks, make its optimizer and batches. Compilation itself
    happens at the first step. ``autocast`` None: bf16 autocast on CUDA for the low-precision variants."""
    batch, resolution, optimizer_name, _recipe = case
    spec = VARIANTS[variant]
    model = model if model is not None else build_model(model_name, variant, device)
    if autocast is None:
        autocast = device.type == "cuda"
    forward = compile_model(model, variant, device, compile_backend)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                 if optimizer_name == "sgd" else torch.optim.Adam(model.parameters(), lr=1e-3))
    classes = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
    return Prepared(model_name, variant, case, device, model, forward, optimizer,
                    synthetic_batches(batch, resolution, classes, device), autocast and spec.low_precision,
                    compile_backend if spec.compiled else None)


def train_step(prepared: Prepared, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if prepared.cudagraphs:  # a new iteration: the previous step's graph outputs may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
    with sdbnn.backend(prepared.backend):
        with torch.autocast(prepared.device.type, dtype=torch.bfloat16, enabled=prepared.autocast):
            loss = F.cross_entropy(prepared.forward(images), labels)
        prepared.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    prepared.optimizer.step()
    return loss.detach()


@torch.no_grad()
def eval_step(prepared: Prepared, images: torch.Tensor, labels: torch.Tensor) -> None:
    if prepared.cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()
    with sdbnn.backend(prepared.backend):
        with torch.autocast(prepared.device.type, dtype=torch.bfloat16, enabled=prepared.autocast):
            prepared.forward(images)


def _rate(step, prepared: Prepared, warmup: int, steps: int) -> tuple[float, float | None]:
    """Images per second over ``steps`` calls after ``warmup`` calls (compilation happens there), and peak MB."""
    batches, device = prepared.batches, prepared.device
    for index in range(warmup):
        started = time.perf_counter()
        step(prepared, *batches[index % len(batches)])
        if index == 0 and step is train_step and prepared.first_step_s is None:
            _synchronize(device)
            prepared.first_step_s = time.perf_counter() - started
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for index in range(steps):
        step(prepared, *batches[index % len(batches)])
    _synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return steps * batches[0][0].shape[0] / seconds, peak


def step_counts(quick: bool, variant: str) -> tuple[int, int]:
    """(warm-up, timed) steps: eager fp32 is slow, so it gets fewer."""
    if quick:
        return 2, 3
    return (3, 10) if variant == "reference_fp32" else (5, 30)


def measure(prepared: Prepared, quick: bool, steps: tuple[int, int] | None = None) -> dict:
    """Train rate (and, with a recipe, eval rate and the recipe's projected schedule) of a prepared model."""
    batch, resolution, _optimizer, recipe = prepared.case
    warmup, timed = steps or step_counts(quick, prepared.variant)
    row = {"model": prepared.model_name, "variant": prepared.variant, "batch": batch, "resolution": resolution,
           "precision": "bf16 autocast" if prepared.autocast else "fp32",
           "compiled": prepared.compile_backend, "cudagraphs": prepared.cudagraphs}
    prepared.model.train()
    row["train_images_per_s"], row["train_peak_mb"] = _rate(train_step, prepared, warmup, timed)
    row["first_step_s"] = prepared.first_step_s
    if recipe and VARIANTS[prepared.variant].binary and VARIANTS[prepared.variant].backend == "ops":
        prepared.model.eval()  # evaluation rate, for the whole-schedule projection (compiles the eval graph)
        row["eval_images_per_s"], _ = _rate(eval_step, prepared, warmup, timed)
        prepared.model.train()
        from sdbnn.engine.cli import recipe_path
        from sdbnn.engine.config import load_recipe

        epochs = load_recipe(recipe_path(recipe))["epochs"]
        epoch_seconds = CIFAR_TRAIN_IMAGES / row["train_images_per_s"] + CIFAR_TEST_IMAGES / row["eval_images_per_s"]
        row.update(recipe=recipe, recipe_epochs=epochs, projected_epoch_s=epoch_seconds,
                   projected_schedule_min=epochs * epoch_seconds / 60)
    return row


def release(prepared: Prepared | None = None) -> None:
    """Drop a prepared model's compiled code and cached memory (other compiled models keep theirs only if alive)."""
    if prepared is not None:
        prepared.optimizer.state.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def add_ratios(rows: list[dict]) -> None:
    """SD-BNN against each baseline of the same model, measured in this run (only where both rows exist)."""
    by_model: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_model.setdefault(row["model"], {})[row["variant"]] = row
    for variants in by_model.values():
        sd = variants.get("sdbnn")
        if sd is None:
            continue
        for baseline, key in (("reference_fp32", "speedup_vs_reference_fp32"),
                              ("reference_compiled", "speedup_vs_reference_compiled")):
            if baseline in variants:
                sd[key] = sd["train_images_per_s"] / variants[baseline]["train_images_per_s"]
        if "full_precision" in variants:
            sd["ratio_to_full_precision"] = sd["train_images_per_s"] / variants["full_precision"]["train_images_per_s"]
        graphs = variants.get("sdbnn_cudagraphs")
        if graphs is not None:
            graphs["speedup_vs_sdbnn"] = graphs["train_images_per_s"] / sd["train_images_per_s"]


def run(quick: bool, device: torch.device, models: list[str] | None = None, *, variants: tuple[str, ...] | None = None,
        compile_backend: str = "inductor", section: Section | None = None) -> dict:
    """Every model × variant, each built, measured and released in turn; saved after every row."""
    section = section or Section("training")
    cases = QUICK_CASES if quick else FULL_CASES
    if models:
        unknown = sorted(set(models) - set(FULL_CASES))
        if unknown:
            raise ValueError(f"no training benchmark for {', '.join(unknown)}; choose from {', '.join(FULL_CASES)}")
        cases = {name: (QUICK_CASES.get(name) if quick else None) or FULL_CASES[name] for name in models}
    variants = variants or (QUICK_VARIANTS if quick else DEFAULT_VARIANTS)
    if device.type != "cuda":
        variants = tuple(name for name in variants if name not in CUDA_ONLY_VARIANTS)
    data = section.data
    data.update(quick=quick, compile_backend=compile_backend, rows=[])
    for model_name, case in cases.items():
        for variant in variants:
            label = f"{model_name} {variant}"
            if not section.allows(label):
                continue
            prepared = prepare(model_name, case, variant, device, compile_backend=compile_backend)
            try:
                row = measure(prepared, quick)
            finally:
                release(prepared)
                del prepared
                torch._dynamo.reset()  # alone in this section: nothing compiled needs to outlive its row
            data["rows"].append(row)
            add_ratios(data["rows"])
            log(f"{model_name:18} {variant:18} {row['train_images_per_s']:10.1f} img/s")
            section.save()
    return data


def _cell(row: dict | None, key: str, fmt: str) -> str:
    if row is None or row.get(key) is None:
        return "—"
    if fmt == "rate":  # thousands on a GPU, single digits in a CPU smoke run
        return format(row[key], ",.0f" if row[key] >= 100 else ".3g")
    return format(row[key], fmt)


def markdown_table(result: dict) -> str:
    lines = [
        "Images/s of one training step (forward, loss, backward, optimizer); ratios against the other variants of the "
        "same model in this run.",
        "",
        "| model | batch × px | SD-BNN img/s | CUDA graphs img/s | compiled reference img/s | eager fp32 reference "
        "img/s | full-precision img/s | × compiled reference | × eager fp32 | ÷ full precision | "
        "graphs × | peak MB (SD / eager ref / FP) | projected schedule (graphs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    by_model: dict[str, dict] = {}
    for row in result["rows"]:
        by_model.setdefault(row["model"], {})[row["variant"]] = row

    def peak(row):
        return "—" if row is None or row.get("train_peak_mb") is None else f"{row['train_peak_mb']:.0f}"

    for model, rows in by_model.items():
        sd, graphs = rows.get("sdbnn"), rows.get("sdbnn_cudagraphs")
        ref, compiled_ref, fp = rows.get("reference_fp32"), rows.get("reference_compiled"), rows.get("full_precision")
        first = next(iter(rows.values()))
        projected = "—"
        if sd is not None and "projected_schedule_min" in sd:
            projected = f"{sd['projected_schedule_min']:.1f} min"
            if graphs is not None and "projected_schedule_min" in graphs:
                projected += f" ({graphs['projected_schedule_min']:.1f} min)"
            projected += f", {sd['recipe_epochs']} epochs"
        lines.append(
            f"| {model} | {first['batch']} × {first['resolution']} | {_cell(sd, 'train_images_per_s', 'rate')} | "
            f"{_cell(graphs, 'train_images_per_s', 'rate')} | {_cell(compiled_ref, 'train_images_per_s', 'rate')} | "
            f"{_cell(ref, 'train_images_per_s', 'rate')} | {_cell(fp, 'train_images_per_s', 'rate')} | "
            f"{_cell(sd, 'speedup_vs_reference_compiled', '.2f')} | {_cell(sd, 'speedup_vs_reference_fp32', '.2f')} | "
            f"{_cell(sd, 'ratio_to_full_precision', '.2f')} | {_cell(graphs, 'speedup_vs_sdbnn', '.2f')} | "
            f"{peak(sd)} / {peak(ref)} / {peak(fp)} | {projected} |"
        )
    return "\n".join(lines) + "\n"

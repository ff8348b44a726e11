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
from collections.abc import Callable

import torch
import torch.nn.functional as F

import sdbnn
from benchmarks.common import Section, log, rate_text, synchronize, table
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
QUICK_VARIANTS = ("sdbnn", "reference_fp32", "full_precision")
CUDA_ONLY_VARIANTS = ("sdbnn_cudagraphs",)


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
    def cudagraphs(self) -> bool:
        return VARIANTS[self.variant].mode == "reduce-overhead" and self.device.type == "cuda"


def build_model(model_name: str, variant: str, device: torch.device) -> torch.nn.Module:
    name = model_name if VARIANTS[variant].binary else f"{model_name}_fp"
    model = sdbnn.create_model(name).to(device).to(memory_format=torch.channels_last)
    sdbnn.set_ede(model, K, T)
    return model


def prepare(model_name: str, case: tuple, variant: str, device: torch.device, *, compile_backend: str = "inductor",
            autocast: bool | None = None, model: torch.nn.Module | None = None) -> Prepared:
    """Build (or take) the model, compile it as the variant asks (torch.compile(fullgraph=True); a mode only applies
    to Inductor, and CUDA graphs to CUDA), make its optimizer and batches. Compilation itself happens at the first
    step. ``autocast`` None: bf16 autocast on CUDA for the low-precision variants."""
    batch, resolution, optimizer_name, _recipe = case
    spec = VARIANTS[variant]
    model = model if model is not None else build_model(model_name, variant, device)
    forward = model
    if spec.compiled:
        mode = spec.mode if compile_backend == "inductor" and device.type == "cuda" else None
        forward = torch.compile(model, fullgraph=True, backend=compile_backend, mode=mode)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                 if optimizer_name == "sgd" else torch.optim.Adam(model.parameters(), lr=1e-3))
    classes = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
    return Prepared(model_name, variant, case, device, model, forward, optimizer,
                    synthetic_batches(batch, resolution, classes, device),
                    (device.type == "cuda" if autocast is None else autocast) and spec.low_precision,
                    compile_backend if spec.compiled else None)


def step(prepared: Prepared, images: torch.Tensor, labels: torch.Tensor, train: bool = True) -> None:
    """One training step (forward, cross-entropy, backward, optimizer), or one evaluation forward."""
    if prepared.cudagraphs:  # a new iteration: the previous step's graph outputs may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
    with sdbnn.backend(VARIANTS[prepared.variant].backend), torch.set_grad_enabled(train):
        with torch.autocast(prepared.device.type, dtype=torch.bfloat16, enabled=prepared.autocast):
            output = prepared.forward(images)
            loss = F.cross_entropy(output, labels) if train else None
        if train:
            prepared.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            prepared.optimizer.step()


def _rate(prepared: Prepared, warmup: int, steps: int, train: bool) -> tuple[float, float | None]:
    """Images per second over ``steps`` calls after ``warmup`` calls (compilation happens there), and peak MB."""
    batches, device = prepared.batches, prepared.device
    for index in range(warmup):
        started = time.perf_counter()
        step(prepared, *batches[index % len(batches)], train)
        if index == 0 and train and prepared.first_step_s is None:
            synchronize(device)
            prepared.first_step_s = time.perf_counter() - started
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for index in range(steps):
        step(prepared, *batches[index % len(batches)], train)
    synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return steps * batches[0][0].shape[0] / seconds, peak


def step_counts(quick: bool, variant: str) -> tuple[int, int]:
    """(warm-up, timed) steps: eager fp32 is slow, so it gets fewer."""
    if quick:
        return 1, 2
    return (3, 10) if variant == "reference_fp32" else (5, 30)


def measure(prepared: Prepared, quick: bool) -> dict:
    """Train rate (and, with a recipe, eval rate and the recipe's projected schedule) of a prepared model."""
    batch, resolution, _optimizer, recipe = prepared.case
    warmup, timed = step_counts(quick, prepared.variant)
    row = {"model": prepared.model_name, "variant": prepared.variant, "batch": batch, "resolution": resolution,
           "precision": "bf16 autocast" if prepared.autocast else "fp32",
           "compiled": prepared.compile_backend, "cudagraphs": prepared.cudagraphs}
    prepared.model.train()
    row["train_images_per_s"], row["train_peak_mb"] = _rate(prepared, warmup, timed, train=True)
    row["first_step_s"] = prepared.first_step_s
    if recipe and VARIANTS[prepared.variant].binary and VARIANTS[prepared.variant].backend == "ops":
        prepared.model.eval()  # evaluation rate, for the whole-schedule projection (compiles the eval graph)
        row["eval_images_per_s"], _ = _rate(prepared, warmup, timed, train=False)
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
        compile_backend: str = "inductor", section: Section | None = None, pairs: list[tuple[str, str]] | None = None,
        cases: dict | None = None, autocast: bool | None = None, kept: dict | None = None,
        estimate: Callable[[str, str, bool], float] = lambda model, variant, reused: 0.0) -> dict:
    """Every (model, variant) of ``pairs`` (default: each model × each variant for this device), each built, measured
    and released in turn, saved after every row; a row that fails is recorded and the next one runs. ``kept``:
    models prepared earlier ({(model, variant): Prepared}, compiled once), measured instead of new ones; a pair
    starts only while the section's budget allows its ``estimate(model, variant, reused)`` seconds."""
    section = section or Section("training")
    cases = cases or {name: (QUICK_CASES.get(name) if quick else None) or FULL_CASES[name]
                      for name in models or (QUICK_CASES if quick else FULL_CASES)}
    if pairs is None:
        variants = variants or (QUICK_VARIANTS if quick else tuple(VARIANTS))
        pairs = [(model, variant) for model in cases for variant in variants
                 if device.type == "cuda" or variant not in CUDA_ONLY_VARIANTS]
    kept = {} if kept is None else kept
    data = section.data
    data.update(quick=quick, compile_backend=compile_backend, rows=[])
    for model_name, variant in pairs:
        label, reused = f"{model_name} {variant}", (model_name, variant) in kept
        if not section.allows(label, estimate(model_name, variant, reused)):
            continue
        prepared = None
        try:
            prepared = kept.pop((model_name, variant), None) or prepare(
                model_name, cases[model_name], variant, device, compile_backend=compile_backend, autocast=autocast)
            row = measure(prepared, quick)
            row["compiled_in"] = "an earlier section" if reused else "this section"
            data["rows"].append(row)
            add_ratios(data["rows"])
            log(f"{model_name:18} {variant:18} {rate_text(row['train_images_per_s']):>10} img/s"
                + (f" (first step {row['first_step_s']:.1f} s)" if row.get("first_step_s") else ""))
        except Exception as error:  # noqa: BLE001 - the next pair still runs
            section.error(label, error)
        finally:
            release(prepared)
            if not kept:  # nothing compiled needs to outlive its row
                torch._dynamo.reset()
        section.save()
    return data


def markdown_table(result: dict) -> str:
    by_model: dict[str, dict] = {}
    for row in result["rows"]:
        by_model.setdefault(row["model"], {})[row["variant"]] = row

    def cell(row, key, fmt=None):
        if row is None or row.get(key) is None:
            return "—"
        return format(row[key], fmt) if fmt else rate_text(row[key])

    rows = []
    for model, variants in by_model.items():
        sd, graphs = variants.get("sdbnn"), variants.get("sdbnn_cudagraphs")
        ref, fp = variants.get("reference_fp32"), variants.get("full_precision")
        first = next(iter(variants.values()))
        projected = "—"
        if sd is not None and "projected_schedule_min" in sd:
            projected = f"{sd['projected_schedule_min']:.1f} min"
            if graphs is not None and "projected_schedule_min" in graphs:
                projected += f" ({graphs['projected_schedule_min']:.1f} min)"
            projected += f", {sd['recipe_epochs']} epochs"
        rows.append([model, f"{first['batch']} × {first['resolution']}",
                     *[cell(variants.get(name), "train_images_per_s") for name in
                       ("sdbnn", "sdbnn_cudagraphs", "reference_compiled", "reference_fp32", "full_precision")],
                     cell(sd, "speedup_vs_reference_compiled", ".2f"), cell(sd, "speedup_vs_reference_fp32", ".2f"),
                     cell(sd, "ratio_to_full_precision", ".2f"), cell(graphs, "speedup_vs_sdbnn", ".2f"),
                     " / ".join(cell(row, "train_peak_mb", ".0f") for row in (sd, ref, fp)), projected])
    firsts = [f"{row['model']} {row['variant']} {row['first_step_s']:.0f} s" for row in result["rows"]
              if row.get("first_step_s") is not None]
    return ("Images/s of one training step (forward, loss, backward, optimizer); ratios against the other variants of "
            "the same model in this run.\n\n"
            + table(["model", "batch × px", "SD-BNN img/s", "CUDA graphs img/s", "compiled reference img/s",
                     "eager fp32 reference img/s", "full-precision img/s", "× compiled reference", "× eager fp32",
                     "÷ full precision", "graphs ×", "peak MB (SD / eager ref / FP)", "projected schedule (graphs)"],
                    rows)
            + ("\nFirst step (compilation included): " + ", ".join(firsts) + ".\n" if firsts else ""))

"""Training-step images/s per model on synthetic device-resident batches, SD-BNN against its baselines in the same run,
and for the CIFAR models the recipe's whole schedule projected from the train and eval rates (docs/benchmarks.md)."""

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
FULL_CASES = {"resnet20": (128, 32, "sgd", "cifar10_resnet20"), "vgg_small": (128, 32, "sgd", "cifar10_vgg_small"),
              "resnet18_cifar": (128, 32, "sgd", "cifar10_resnet18_cifar"),
              "resnet18_imagenet": (256, 224, "adam", None)}
QUICK_CASES = {"resnet20": (16, 32, "sgd", "cifar10_resnet20")}


@dataclasses.dataclass(frozen=True)
class Variant:
    binary: bool  # the SD-BNN model, or its full-precision twin
    backend: str  # sdbnn.backend: "ops" (fused) or "reference" (autograd math)
    compiled: bool  # torch.compile(fullgraph=True)
    low_precision: bool  # bf16 autocast where the run uses it (CUDA by default)
    mode: str | None = None  # torch.compile mode


# one optimizer step each: forward, cross-entropy, backward, SGD/Adam as in the recipe
VARIANTS = {"sdbnn": Variant(True, "ops", True, True),  # as this project trains (Triton on CUDA)
            "sdbnn_cudagraphs": Variant(True, "ops", True, True, "reduce-overhead"),  # the same in CUDA graphs
            "reference_compiled": Variant(True, "reference", True, True),  # Inductor generates sign and surrogate
            "reference_fp32": Variant(True, "reference", False, False),  # eager fp32: what the official code does
            "full_precision": Variant(False, "ops", True, True)}  # the real-valued twin
QUICK_VARIANTS = ("sdbnn", "reference_fp32", "full_precision")
# row key -> (the variant whose row gets it, the baseline of the same model its train rate is divided by)
RATIOS = {"speedup_vs_reference_fp32": ("sdbnn", "reference_fp32"),
          "speedup_vs_reference_compiled": ("sdbnn", "reference_compiled"),
          "ratio_to_full_precision": ("sdbnn", "full_precision"), "speedup_vs_sdbnn": ("sdbnn_cudagraphs", "sdbnn")}


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
    cudagraphs: bool
    first_step_s: float | None = None  # the first training step: includes compilation


def build_model(model_name: str, variant: str, device: torch.device) -> torch.nn.Module:
    name = model_name if VARIANTS[variant].binary else f"{model_name}_fp"
    model = sdbnn.create_model(name).to(device).to(memory_format=torch.channels_last)
    sdbnn.set_ede(model, K, T)
    return model


def prepare(model_name: str, case: tuple, variant: str, device: torch.device, *, compile_backend: str = "inductor",
            autocast: bool | None = None, model: torch.nn.Module | None = None) -> Prepared:
    """Build (or take) the model, wrap it in torch.compile as the variant asks (compiled at the first step), make its
    optimizer and four channels_last batches. ``autocast`` None: bf16 on CUDA for the low-precision variants."""
    batch, resolution, optimizer_name, _recipe = case
    spec = VARIANTS[variant]
    model = model if model is not None else build_model(model_name, variant, device)
    mode = spec.mode if compile_backend == "inductor" and device.type == "cuda" else None  # CUDA graphs: Inductor
    forward = torch.compile(model, fullgraph=True, backend=compile_backend, mode=mode) if spec.compiled else model
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                 if optimizer_name == "sgd" else torch.optim.Adam(model.parameters(), lr=1e-3))
    classes = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
    generator = torch.Generator(device=device).manual_seed(0)
    batches = [(torch.randn(batch, 3, resolution, resolution, device=device, generator=generator)
                .contiguous(memory_format=torch.channels_last),  # the loaders' layout
                torch.randint(0, classes, (batch,), device=device, generator=generator)) for _ in range(4)]
    return Prepared(model_name, variant, case, device, model, forward, optimizer, batches,
                    (device.type == "cuda" if autocast is None else autocast) and spec.low_precision,
                    compile_backend if spec.compiled else None, spec.compiled and mode == "reduce-overhead")


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
    rate = steps * batches[0][0].shape[0] / (time.perf_counter() - started)
    return rate, torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure(prepared: Prepared, quick: bool) -> dict:
    """Train rate (and, with a recipe, eval rate and the recipe's projected schedule) of a prepared model."""
    batch, resolution, _optimizer, recipe = prepared.case
    # (warm-up, timed) steps: eager fp32 is slow, so it gets fewer
    warmup, timed = (1, 2) if quick else (3, 10) if prepared.variant == "reference_fp32" else (5, 30)
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
    if prepared is not None:
        prepared.optimizer.state.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run(quick: bool, device: torch.device, models: list[str] | None = None, *, variants: list[str] | None = None,
        compile_backend: str = "inductor", section: Section | None = None, pairs: list[tuple[str, str]] | None = None,
        cases: dict | None = None, autocast: bool | None = None, kept: dict | None = None,
        estimate: Callable[[str, str, bool], float] = lambda model, variant, reused: 0.0) -> dict:
    """Each (model, variant) of ``pairs`` (default: models × variants) the budget allows, built (or taken from
    ``kept``, compiled earlier), measured, released and saved in turn; a failing pair is recorded."""
    section = section or Section("training")
    cases = cases or {name: (QUICK_CASES.get(name) if quick else None) or FULL_CASES[name]
                      for name in models or (QUICK_CASES if quick else FULL_CASES)}
    pairs = pairs or [(model, variant) for model in cases
                      for variant in variants or (QUICK_VARIANTS if quick else VARIANTS)
                      if device.type == "cuda" or VARIANTS[variant].mode is None]  # CUDA graphs need CUDA
    kept = {} if kept is None else kept
    section.data.update(quick=quick, compile_backend=compile_backend, rows=[])
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
            section.data["rows"].append(row)
            same = {other["variant"]: other for other in section.data["rows"] if other["model"] == model_name}
            for key, (numerator, baseline) in RATIOS.items():  # only where both rows exist
                if numerator in same and baseline in same:
                    same[numerator][key] = same[numerator]["train_images_per_s"] / same[baseline]["train_images_per_s"]
            log(f"{model_name:18} {variant:18} {rate_text(row['train_images_per_s']):>10} img/s")
        except Exception as error:  # noqa: BLE001 - the next pair still runs
            section.error(label, error)
        finally:
            release(prepared)
            if not kept:  # nothing compiled needs to outlive its row
                torch._dynamo.reset()
        section.save()
    return section.data


def markdown_table(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        ratios = ", ".join(f"{row[key]:.2f}× {baseline}" for key, (_, baseline) in RATIOS.items() if key in row)
        projected = row.get("projected_schedule_min")
        rows.append([row["model"], f"{row['batch']} × {row['resolution']}", row["variant"],
                     rate_text(row["train_images_per_s"]), ratios or "—",
                     "—" if row.get("train_peak_mb") is None else f"{row['train_peak_mb']:.0f}",
                     "—" if row.get("first_step_s") is None else f"{row['first_step_s']:.1f}",
                     "—" if projected is None else f"{projected:.1f} min, {row['recipe_epochs']} epochs"])
    return ("Images/s of one training step (forward, loss, backward, optimizer); each ratio is this row's images/s ÷ "
            "that variant's, same model, this run; the first step includes compilation.\n\n"
            + table(["model", "batch × px", "variant", "img/s", "ratios", "peak MB", "first step s",
                     "projected schedule"], rows))

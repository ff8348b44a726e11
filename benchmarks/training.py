"""Training-step throughput per model: SD-BNN as this project trains it vs the official implementation's way vs the
full-precision twin, measured in the same run on synthetic device-resident batches.

    python benchmarks/training.py                 # CUDA: every model at its paper batch size (ImageNet: 256 per GPU)
    python benchmarks/training.py --quick         # CPU smoke run (ResNet-20, batch 16)

Variants (one optimizer step each: forward, cross-entropy, backward, SGD/Adam as in the recipe):
  sdbnn           fused ops (Triton on CUDA) inside torch.compile(fullgraph=True), bf16 autocast on CUDA
  reference_fp32  the eager reference math in fp32, no compile (what the official code does)
  full_precision  the model's real-valued twin, compiled, bf16 autocast on CUDA
For the CIFAR models the SD-BNN row also projects the recipe's whole schedule (train 50,000 + evaluate 10,000 images
per epoch) from the measured rates. Prints a table; ``--out DIR`` writes training-<device>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import sdbnn

K, T = 1.0, 2.5  # mid-schedule EDE; the cost does not depend on them
CIFAR_TRAIN_IMAGES, CIFAR_TEST_IMAGES = 50_000, 10_000
LAUNCH_CONFIGS = Path(__file__).resolve().parent.parent / "launch" / "configs"

# model -> (batch per device, resolution, optimizer, recipe whose schedule is projected)
FULL_CASES = {
    "resnet20": (128, 32, "sgd", "cifar10_resnet20"),
    "vgg_small": (128, 32, "sgd", "cifar10_vgg_small"),
    "resnet18_cifar": (128, 32, "sgd", "cifar10_resnet18_cifar"),
    "resnet18_imagenet": (256, 224, "adam", None),
}
QUICK_CASES = {"resnet20": (16, 32, "sgd", "cifar10_resnet20")}
VARIANTS = ("sdbnn", "reference_fp32", "full_precision")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(batch: int, resolution: int, classes: int, device: torch.device, count: int = 4):
    generator = torch.Generator(device=device).manual_seed(0)
    return [
        (torch.randn(batch, 3, resolution, resolution, device=device, generator=generator)
         .contiguous(memory_format=torch.channels_last),
         torch.randint(0, classes, (batch,), device=device, generator=generator))
        for _ in range(count)
    ]


def _build(model_name: str, variant: str, device: torch.device, optimizer_name: str):
    name = f"{model_name}_fp" if variant == "full_precision" else model_name
    model = sdbnn.create_model(name).to(device).to(memory_format=torch.channels_last)
    sdbnn.set_ede(model, K, T)
    forward = model if variant == "reference_fp32" else torch.compile(model, fullgraph=True)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
                 if optimizer_name == "sgd" else torch.optim.Adam(model.parameters(), lr=1e-3))
    return model, forward, optimizer


def _rate(fn, batches, warmup: int, steps: int, device: torch.device) -> tuple[float, float | None]:
    """Images per second over ``steps`` calls after ``warmup`` calls (compilation happens there), and peak MB."""
    for index in range(warmup):
        fn(*batches[index % len(batches)])
    _synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    for index in range(steps):
        fn(*batches[index % len(batches)])
    _synchronize(device)
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return steps * batches[0][0].shape[0] / seconds, peak


def measure(model_name: str, case, variant: str, device: torch.device, quick: bool) -> dict:
    batch, resolution, optimizer_name, recipe = case
    autocast = device.type == "cuda" and variant != "reference_fp32"
    backend = "reference" if variant == "reference_fp32" else "ops"
    model, forward, optimizer = _build(model_name, variant, device, optimizer_name)
    classes = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
    batches = _batches(batch, resolution, classes, device)

    def train_step(images, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step(images, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            forward(images)

    warmup, steps = (2, 3) if quick else (5, 20 if variant == "reference_fp32" else 50)
    row = {"model": model_name, "variant": variant, "batch": batch, "resolution": resolution,
           "precision": "bf16 autocast" if autocast else "fp32", "compiled": variant != "reference_fp32"}
    with sdbnn.backend(backend):
        model.train()
        row["train_images_per_s"], row["train_peak_mb"] = _rate(train_step, batches, warmup, steps, device)
        if recipe and variant == "sdbnn":  # evaluation rate, for the whole-schedule projection
            model.eval()
            row["eval_images_per_s"], _ = _rate(eval_step, batches, warmup, steps, device)
            from sdbnn.engine.config import load_recipe

            epochs = load_recipe(LAUNCH_CONFIGS / f"{recipe}.yaml")["epochs"]
            epoch_seconds = (CIFAR_TRAIN_IMAGES / row["train_images_per_s"]
                             + CIFAR_TEST_IMAGES / row["eval_images_per_s"])
            row.update(recipe=recipe, recipe_epochs=epochs, projected_epoch_s=epoch_seconds,
                       projected_schedule_min=epochs * epoch_seconds / 60)
    del model, forward, optimizer
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def run(quick: bool, device: torch.device, models: list[str] | None = None) -> dict:
    cases = QUICK_CASES if quick else FULL_CASES
    if models:
        unknown = sorted(set(models) - set(FULL_CASES))
        if unknown:
            raise ValueError(f"no training benchmark for {', '.join(unknown)}; choose from {', '.join(FULL_CASES)}")
        cases = {name: (QUICK_CASES.get(name) if quick else None) or FULL_CASES[name] for name in models}
    rows = []
    for model_name, case in cases.items():
        for variant in VARIANTS:
            row = measure(model_name, case, variant, device, quick)
            rows.append(row)
            print(f"{model_name:18} {variant:15} {row['train_images_per_s']:10.1f} img/s", flush=True)
        mine = {r["variant"]: r for r in rows if r["model"] == model_name}
        sd = mine["sdbnn"]
        sd["speedup_vs_reference_fp32"] = sd["train_images_per_s"] / mine["reference_fp32"]["train_images_per_s"]
        sd["ratio_to_full_precision"] = sd["train_images_per_s"] / mine["full_precision"]["train_images_per_s"]
    return {"quick": quick, "rows": rows}


def markdown_table(result: dict) -> str:
    lines = [
        "| model | batch × px | SD-BNN img/s | reference fp32 img/s | full-precision img/s | × reference | "
        "÷ full precision | peak MB (SD / ref / FP) | projected schedule |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_model: dict[str, dict] = {}
    for row in result["rows"]:
        by_model.setdefault(row["model"], {})[row["variant"]] = row

    def peak(row):
        return "n/a" if row["train_peak_mb"] is None else f"{row['train_peak_mb']:.0f}"

    for model, rows in by_model.items():
        sd, ref, fp = rows["sdbnn"], rows["reference_fp32"], rows["full_precision"]
        projected = (f"{sd['projected_schedule_min']:.1f} min ({sd['recipe_epochs']} epochs)"
                     if "projected_schedule_min" in sd else "—")
        lines.append(
            f"| {model} | {sd['batch']} × {sd['resolution']} | {sd['train_images_per_s']:,.0f} | "
            f"{ref['train_images_per_s']:,.0f} | {fp['train_images_per_s']:,.0f} | "
            f"{sd['speedup_vs_reference_fp32']:.2f}× | {sd['ratio_to_full_precision']:.2f} | "
            f"{peak(sd)} / {peak(ref)} / {peak(fp)} | {projected} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import environment, write_results

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="ResNet-20 at batch 16, few steps (CPU smoke run)")
    parser.add_argument("--out", type=Path, help="write training-<device>-<date>.{json,md} here")
    parser.add_argument("--models", nargs="+", choices=list(FULL_CASES), help="a subset (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result = {**environment(device), "training": run(args.quick, device, args.models)}
    table = markdown_table(result["training"])
    print(table)
    if args.out:
        write_results(args.out, "training", result, f"# Training-step throughput — {result['device']} — "
                      f"{result['date']}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())

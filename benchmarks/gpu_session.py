"""One budgeted GPU session: what a lent GPU runs, in priority order, in about 6 minutes on an H100.

    bash benchmarks/gpu_session.sh                    # the GPU machine: results into $OUT, else benchmarks/results
    bash benchmarks/gpu_session.sh --tiny             # CPU, tiny sizes: the test suite runs this
    python -m benchmarks.gpu_session --only training trainer --budget training=240   # a rerun of what was skipped

Stages, each guarded (a failure is recorded with its traceback and the next stage runs), each with a budget:
  preflight    versions, device, imports of every module the later stages use, one compile of each Triton kernel
  correctness  both ops (through autograd) against float64 on the ResNet-18 ImageNet layer shapes and an odd one
               (fp32/bf16, ede/approx, NCHW/NHWC, fp32 weights giving bf16 signs as under autocast); then
               resnet20 and resnet18_imagenet compiled with the fused ops against the reference backend, both
               under bf16 autocast (the fp32 reference measures what bf16 itself changes)
  fused_ops    Triton vs eager reference vs Inductor-compiled reference on the ResNet-18 layers (batch 256, bf16,
               channels_last; NCHW for one), forward+backward GB/s next to the copy bandwidth measured here
  training     training-step img/s under bf16 autocast, channels_last: resnet18_imagenet fused+compiled vs eager
               fp32 reference vs full-precision twin vs compiled reference; resnet20 with and without CUDA graphs,
               with the 500-epoch recipe projected
  trainer      the real Trainer, 2 epochs of synthetic CIFAR kept on the device: its img/s next to the bare step
  gpu_tests    `pytest -m gpu`, only when given a budget (--budget gpu_tests=SECONDS)
  targets      the README's targets against what this run measured

A stage may use its own budget plus whatever earlier stages left unused, never what later stages reserve; within a
stage, work starts only while its estimated cost fits (what did not is listed as skipped). Models compiled in the
correctness stage are reused by the training stage (each model compiles once). The JSON and markdown are rewritten
after every stage and every measured item. On CPU (--tiny) the compiled paths use the "aot_eager" backend (Inductor's
C++ compiles would dominate 2 cores) and the Trainer runs without compile; the output says so.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import importlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.common import (
    Budget,
    Interrupted,
    Report,
    Section,
    device_name,
    device_slug,
    environment,
    log,
)

ROOT = Path(__file__).resolve().parent.parent

STAGES = ("preflight", "correctness", "fused_ops", "training", "trainer", "gpu_tests", "targets")
TITLES = {"preflight": "a. Preflight", "correctness": "b. Correctness on the device", "fused_ops": "c. Fused ops",
          "training": "d. Training step", "trainer": "e. Trainer", "gpu_tests": "pytest -m gpu",
          "targets": "Targets"}

# ResNet-18 ImageNet's binary layers: (channels, height, width); weights are (C, C, 3, 3).
RESNET18_LAYERS = [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]
ODD_ACT_SHAPE, ODD_WEIGHT_SHAPE = (3, 17, 13, 11), (24, 17, 5, 3)

# bf16 autocast model comparison: the model compiled with the fused ops against the same weights on the reference
# backend, both under bf16 autocast (never against fp32: a binary network at bf16 flips signs near 0 and ends
# somewhere else — the fp32 numbers are recorded to show how far, not used as a limit). Inductor's fusions round
# differently from eager bf16 and flip a few signs, which moves gradients by a few percent overall, and some small,
# cancellation-prone tensors (d(alpha) = c·Σ dW) by more. A wrong gradient (surrogate, d(shift), d(alpha), a lost
# dtype) is off by O(1) across every layer of its kind: every gate, every alpha (≥ 1/6 of the tensors) or the weights
# (most of the norm).
BF16_LOSS_RTOL = 0.02  # |Δloss| / |loss|
BF16_GLOBAL_GRAD_RTOL = 0.10  # ‖ΔG‖ / ‖G‖ over all parameters together
BF16_PARAMETER_GRAD_RTOL = 0.3  # one parameter tensor's ‖Δg‖ / ‖g‖ ...
BF16_PARAMETERS_OVER_SHARE = 0.05  # ... which at most this share of the tensors may exceed


@dataclasses.dataclass(frozen=True)
class Plan:
    """Sizes, budgets (seconds) and cost estimates of one session: the GPU run, or the tiny CPU run."""

    tiny: bool
    compile_backend: str
    correctness_batch: int
    layers: list
    model_cases: dict  # model -> (batch, resolution, optimizer, recipe) as in benchmarks/training.py
    op_batch: int
    trainer_batch: int
    trainer_max_images: int | None
    trainer_compile: bool
    budgets: dict  # seconds per stage; the session's total is their sum unless --total-s says otherwise
    kernel_checks_s: float  # of the correctness budget, for the first op checks (the models need the rest)
    estimates: dict  # seconds a kind of work is expected to take, checked against the budget before it starts

    def estimate(self, kind: str) -> float:
        return 0.0 if self.tiny else self.estimates.get(kind, 0.0)

    def steps(self, variant: str) -> tuple[int, int]:
        if self.tiny:
            return 1, 2
        return (2, 5) if variant == "reference_fp32" else (5, 30)


GPU_PLAN = Plan(
    tiny=False, compile_backend="inductor", correctness_batch=8, layers=RESNET18_LAYERS,
    model_cases={"resnet20": (128, 32, "sgd", "cifar10_resnet20"), "resnet18_imagenet": (256, 224, "adam", None)},
    op_batch=256, trainer_batch=128, trainer_max_images=None, trainer_compile=True,
    budgets={"preflight": 15, "correctness": 150, "fused_ops": 40, "training": 100, "trainer": 35, "gpu_tests": 0,
             "targets": 5},
    kernel_checks_s=25,
    estimates={"kernel_check": 2, "op_case": 10, "compile_resnet20": 30, "compile_resnet18_imagenet": 75,
               "eval_compile": 15, "eager_resnet18_imagenet": 15, "trainer": 30},
)
TINY_PLAN = Plan(
    tiny=True, compile_backend="aot_eager", correctness_batch=2, layers=[(16, 8, 8), (32, 5, 5)],
    # ResNet-18 at 64 px: at 32 px its last stage is 1×1 and BatchNorm over 2 values makes gradients pure noise
    model_cases={"resnet20": (16, 32, "sgd", "cifar10_resnet20"), "resnet18_imagenet": (4, 64, "adam", None)},
    op_batch=2, trainer_batch=16, trainer_max_images=64, trainer_compile=False,
    budgets={"preflight": 300, "correctness": 600, "fused_ops": 300, "training": 600, "trainer": 300, "gpu_tests": 0,
             "targets": 60},
    kernel_checks_s=150, estimates={},
)

REQUIRED_MODULES = ["sdbnn", "sdbnn.ops", "sdbnn.reference", "sdbnn.kernels.act_sign", "sdbnn.kernels.weight_sign",
                    "sdbnn.models", "sdbnn.engine.config", "sdbnn.engine.trainer", "sdbnn.pipelines.synthetic",
                    "benchmarks.kernels", "benchmarks.training", "sdbnn.testing", "accelerate", "einops",
                    "safetensors", "tqdm", "yaml", "matplotlib", "triton"]
VERSION_MODULES = ["torch", "triton", "accelerate", "torchvision", "einops", "safetensors", "numpy", "tqdm",
                   "matplotlib", "sklearn", "yaml"]


class InjectedFailure(RuntimeError):
    """Raised by --inject-failure: tests prove that a failing stage leaves the others' results."""


class Session:
    """What stages share: the plan, the device, and models compiled in one stage for use in a later one."""

    def __init__(self, plan: Plan, device: torch.device, report: Report):
        self.plan, self.device, self.report = plan, device, report
        self.prepared: dict[tuple[str, str], object] = {}  # (model, variant) -> benchmarks.training.Prepared

    def stage_data(self, name: str) -> dict:
        return self.report.result.get(name, {})


# --- a. preflight -------------------------------------------------------------------------------------------------


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as error:  # noqa: BLE001 - an absent optional package is a fact to record
        return f"missing ({type(error).__name__})"


def preflight(section: Section, session: Session) -> None:
    data, device = section.data, session.device
    data["versions"] = {"python": platform.python_version(), **{name: _version(name) for name in VERSION_MODULES}}
    data["environment"] = {key: os.environ.get(key)
                           for key in ("TRITON_INTERPRET", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        data["device"] = {"name": properties.name, "capability": f"{properties.major}.{properties.minor}",
                          "memory_gib": round(properties.total_memory / 2**30, 1),
                          "multiprocessors": properties.multi_processor_count, "cuda": torch.version.cuda,
                          "cudnn": torch.backends.cudnn.version()}
        try:
            data["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv"],
                capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as error:
            data["nvidia_smi"] = f"unavailable: {error}"
        if os.environ.get("TRITON_INTERPRET") == "1":
            raise RuntimeError("TRITON_INTERPRET=1 on a GPU machine: the kernels would run interpreted (and triton "
                               "3.6's interpreter fails there); run through benchmarks/gpu_session.sh")
    section.save()
    failures = {}
    for module in REQUIRED_MODULES:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - every missing import is listed, not just the first
            failures[module] = f"{type(error).__name__}: {error}"
    data["imports"] = {module: failures.get(module, "ok") for module in REQUIRED_MODULES}
    section.save()

    import sdbnn.ops

    data["fused_path"] = "triton" if sdbnn.ops.uses_triton(torch.empty(1, device=device)) else "reference math"
    started = time.perf_counter()
    k, t = torch.tensor(1.0, device=device), torch.tensor(2.5, device=device)
    x = torch.randn(2, 8, 5, 5, device=device, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    x.requires_grad_()
    shift = torch.rand(2, 8, device=device, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(8, 8, 3, 3, device=device, requires_grad=True)
    alpha = torch.randn(8, device=device, requires_grad=True)
    out = torch.ops.sdbnn.act_sign(x, shift, k, t, "ede")
    binary = torch.ops.sdbnn.weight_sign(w, alpha, k, t, "approx", torch.bfloat16)
    (F.conv2d(out, binary, padding=1).float() ** 2).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    gradients = [x.grad, shift.grad, w.grad, alpha.grad]
    if not all(g is not None and bool(torch.isfinite(g.float()).all()) for g in gradients):
        raise RuntimeError("the tiny act_sign / weight_sign forward+backward gave missing or non-finite gradients")
    data["first_kernels_s"] = round(time.perf_counter() - started, 2)
    log(f"preflight: fused path {data['fused_path']}, first act_sign + weight_sign fwd+bwd in "
        f"{data['first_kernels_s']:.1f} s")
    if failures:
        raise ImportError("missing modules: " + "; ".join(f"{name} ({error})" for name, error in failures.items()))


def preflight_table(data: dict) -> str:
    lines = ["| what | value |", "|---|---|"]
    for name, version in data.get("versions", {}).items():
        lines.append(f"| {name} | {version} |")
    for key, value in data.get("device", {}).items():
        lines.append(f"| device {key} | {value} |")
    if "fused_path" in data:
        lines.append(f"| fused path | {data['fused_path']} |")
    if "first_kernels_s" in data:
        lines.append(f"| first act_sign + weight_sign fwd+bwd (compiles) | {data['first_kernels_s']:.1f} s |")
    broken = {name: status for name, status in data.get("imports", {}).items() if status != "ok"}
    lines.append(f"| imports | {'all ok' if not broken else '; '.join(f'{k}: {v}' for k, v in broken.items())} |")
    return "\n".join(lines) + "\n"


# --- b. correctness -----------------------------------------------------------------------------------------------


def kernel_check_matrix(plan: Plan) -> tuple[list[tuple], list[tuple]]:
    """(op, shape, channels_last, dtype, surrogate, out_dtype) checks as (first, rest), in priority order: first the
    training path (bf16 channels_last activations, fp32 weights giving bf16 signs) and the odd shapes in fp32; the
    rest (NCHW bf16, approx, bf16 weights) after the model checks, with what time is left."""
    batch, bf16, fp32 = plan.correctness_batch, torch.bfloat16, torch.float32
    acts = [(batch, *layer) for layer in plan.layers]
    weights = [(channels, channels, 3, 3) for channels, _, _ in plan.layers]
    first = [("act_sign", shape, True, bf16, "ede", None) for shape in acts]
    first += [("weight_sign", shape, True, fp32, "ede", bf16) for shape in weights]
    for channels_last in (True, False):
        first += [("act_sign", ODD_ACT_SHAPE, channels_last, fp32, "ede", None),
                  ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, fp32, "ede", None)]
    rest = [("act_sign", shape, False, bf16, "ede", None) for shape in acts]
    rest += [("weight_sign", shape, False, fp32, "ede", None) for shape in weights]
    for channels_last in (True, False):
        rest += [("act_sign", acts[0], channels_last, bf16, "approx", None),
                 ("act_sign", acts[-1], channels_last, fp32, "approx", None),
                 ("act_sign", ODD_ACT_SHAPE, channels_last, fp32, "approx", None),
                 ("weight_sign", weights[-1], channels_last, fp32, "approx", bf16),
                 ("weight_sign", ODD_WEIGHT_SHAPE, channels_last, bf16, "approx", None)]
    return first, rest


def _check_label(op, shape, channels_last, dtype, surrogate, out_dtype) -> str:
    dtypes = str(dtype).removeprefix("torch.") + (f"->{str(out_dtype).removeprefix('torch.')}" if out_dtype else "")
    return f"{op} {tuple(shape)} {'nhwc' if channels_last else 'nchw'} {dtypes} {surrogate}"


def run_kernel_checks(section: Section, session: Session, checks: list[tuple], budget: Budget) -> None:
    from sdbnn.testing import check_act_sign, check_weight_sign

    plan = session.plan
    results = section.data.setdefault("kernel_checks", [])
    for op, shape, channels_last, dtype, surrogate, out_dtype in checks:
        label = _check_label(op, shape, channels_last, dtype, surrogate, out_dtype)
        if not budget.allows(plan.estimate("kernel_check")):
            section.skip(label, "time budget of the op checks spent")
            continue
        started = time.perf_counter()
        try:
            if op == "act_sign":
                check_act_sign(shape, channels_last, dtype, surrogate, device=session.device, through="op")
            else:
                check_weight_sign(shape, channels_last, dtype, surrogate, device=session.device, through="op",
                                  out_dtype=out_dtype)
            results.append({"check": label, "passed": True, "seconds": round(time.perf_counter() - started, 2)})
        except Exception as error:  # noqa: BLE001 - a failing check is recorded and the next one runs
            results.append({"check": label, "passed": False, "seconds": round(time.perf_counter() - started, 2)})
            section.error(label, error)
        section.save()
    passed = sum(result["passed"] for result in results)
    log(f"correctness: {passed}/{len(results)} op checks passed so far")


def _loss_and_grads(module, forward, images, labels, backend: str, autocast: bool):
    import sdbnn

    device_type = images.device.type
    module.zero_grad(set_to_none=True)
    with sdbnn.backend(backend), torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        loss = F.cross_entropy(forward(images), labels)
    loss.backward()
    grads = {name: p.grad.detach().float().clone() for name, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return loss.item(), grads


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.norm().item()
    return (a - b).norm().item() / scale if scale > 0 else float((a - b).norm().item() > 0)


def compare_model(name: str, session: Session) -> dict:
    """The model compiled with the fused ops vs the same weights on the reference backend, both under bf16 autocast,
    one training step's loss and gradients; the fp32 reference measures bf16's own effect. The compiled model is
    kept for the training stage (compiled once)."""
    import sdbnn
    from benchmarks import training

    plan, device = session.plan, session.device
    case = plan.model_cases[name]
    model = training.build_model(name, "sdbnn", device)
    if name == "resnet18_imagenet":
        # The official init (uniform [0, 1e-3)) gives each filter one sign, so d(alpha) = c·Σ dW cancels to rounding
        # noise (tests/test_compile.py); spread weights make the gradients a meaningful comparison.
        for module in model.modules():
            if isinstance(module, sdbnn.SDConv2d):
                torch.nn.init.normal_(module.weight, 0.0, 0.05)
    reference_model = copy.deepcopy(model)
    prepared = training.prepare(name, case, "sdbnn", device, compile_backend=plan.compile_backend, autocast=True,
                                model=model)
    images, labels = prepared.batches[0]
    started = time.perf_counter()
    compiled_loss, compiled = _loss_and_grads(model, prepared.forward, images, labels, "ops", True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    prepared.first_step_s = time.perf_counter() - started
    session.prepared[(name, "sdbnn")] = prepared
    reference_loss, reference = _loss_and_grads(reference_model, reference_model, images, labels, "reference", True)
    fp32_loss, fp32 = _loss_and_grads(reference_model, reference_model, images, labels, "reference", False)
    del reference_model
    if device.type == "cuda":
        torch.cuda.empty_cache()

    if compiled.keys() != reference.keys():
        raise AssertionError(f"{name}: gradients of different parameters: {sorted(compiled.keys() ^ reference.keys())}")
    names = [key for key in reference if reference[key].norm() > 0]
    flat = {key: torch.cat([grads[key].flatten() for key in names]) for key, grads in
            (("compiled", compiled), ("reference", reference), ("fp32", fp32))}
    per_parameter = sorted(({"parameter": key, "error": _relative(compiled[key], reference[key]),
                             "bf16_vs_fp32": _relative(reference[key], fp32[key])} for key in names),
                           key=lambda item: item["error"], reverse=True)
    over = [item["parameter"] for item in per_parameter if item["error"] > BF16_PARAMETER_GRAD_RTOL]
    loss_error = abs(compiled_loss - reference_loss) / max(abs(reference_loss), 1e-12)
    global_error = _relative(flat["compiled"], flat["reference"])
    result = {
        "model": name, "batch": case[0], "resolution": case[1], "compile_backend": plan.compile_backend,
        "first_step_s": round(prepared.first_step_s, 2),
        "loss": {"compiled_bf16": compiled_loss, "reference_bf16": reference_loss, "reference_fp32": fp32_loss,
                 "relative_error": loss_error, "limit": BF16_LOSS_RTOL},
        "gradients": {"relative_error": global_error, "limit": BF16_GLOBAL_GRAD_RTOL,
                      "bf16_vs_fp32": _relative(flat["reference"], flat["fp32"]), "parameters": len(names),
                      "parameters_over": over, "parameters_over_limit": BF16_PARAMETERS_OVER_SHARE,
                      "worst": per_parameter[:5]},
    }
    result["passed"] = (loss_error <= BF16_LOSS_RTOL and global_error <= BF16_GLOBAL_GRAD_RTOL
                        and len(over) <= BF16_PARAMETERS_OVER_SHARE * len(names))
    log(f"correctness: {name} compiled bf16 vs reference bf16: loss {loss_error:.1e}, gradients {global_error:.4f}, "
        f"{len(over)}/{len(names)} tensors over {BF16_PARAMETER_GRAD_RTOL:g} (bf16 vs fp32 reference: "
        f"{result['gradients']['bf16_vs_fp32']:.3f}) -> {'ok' if result['passed'] else 'FAIL'}")
    return result


def correctness(section: Section, session: Session) -> None:
    first, rest = kernel_check_matrix(session.plan)
    run_kernel_checks(section, session, first, section.budget.child(session.plan.kernel_checks_s))
    models = section.data.setdefault("models", [])
    for name in session.plan.model_cases:
        label = f"{name} compiled fused ops vs reference (bf16 autocast)"
        if not section.allows(label, session.plan.estimate(f"compile_{name}")):
            continue
        try:
            result = compare_model(name, session)
            models.append(result)
            if not result["passed"]:
                raise AssertionError(f"{name}: compiled bf16 gradients differ from the reference beyond the limits "
                                     f"(see models[].gradients.worst)")
        except Exception as error:  # noqa: BLE001 - the next model still runs
            section.error(label, error)
        section.save()
    run_kernel_checks(section, session, rest, section.budget)


def correctness_table(data: dict) -> str:
    checks = data.get("kernel_checks", [])
    failed = [check["check"] for check in checks if not check["passed"]]
    lines = ["Op checks (outputs and gradients vs float64, through autograd): "
             f"{len(checks) - len(failed)}/{len(checks)} passed{': failed ' + ', '.join(failed) if failed else ''}.", ""]
    if data.get("models"):
        lines += [f"Compiled fused-op model vs reference backend, both bf16 autocast. Limits: loss {BF16_LOSS_RTOL:g} "
                  f"relative; all gradients ‖ΔG‖/‖G‖ ≤ {BF16_GLOBAL_GRAD_RTOL:g}; at most "
                  f"{BF16_PARAMETERS_OVER_SHARE:.0%} of the parameter tensors over {BF16_PARAMETER_GRAD_RTOL:g}. "
                  "bf16 vs fp32 (reference backend) shows what bf16 itself changes in a binary network.", "",
                  "| model | batch × px | loss error | gradient error | tensors over | worst tensor | bf16 vs fp32 | "
                  "first step s | result |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for item in data["models"]:
            grads = item["gradients"]
            worst = grads["worst"][0] if grads["worst"] else None
            worst_text = f"{worst['parameter']} ({worst['error']:.3f})" if worst else "—"
            lines.append(f"| {item['model']} | {item['batch']} × {item['resolution']} | "
                         f"{item['loss']['relative_error']:.1e} | {grads['relative_error']:.4f} | "
                         f"{len(grads['parameters_over'])}/{grads['parameters']} | {worst_text} | "
                         f"{grads['bf16_vs_fp32']:.3f} | {item['first_step_s']:.1f} | "
                         f"{'ok' if item['passed'] else '**FAIL**'} |")
    return "\n".join(lines) + "\n"


# --- c. fused ops -------------------------------------------------------------------------------------------------


def fused_op_jobs(plan: Plan) -> list[tuple]:
    """(op, case, dtype) for benchmarks.kernels: every ResNet-18 layer bf16 channels_last, the first also NCHW, and
    the largest fp32 weight (what the optimizer holds)."""
    cases = [(f"resnet18.layer{index + 1}", (plan.op_batch, *layer), (layer[0], layer[0], 3, 3), "nhwc")
             for index, layer in enumerate(plan.layers)]
    first, last = plan.layers[0], plan.layers[-1]
    cases.append(("resnet18.layer1", (plan.op_batch, *first), (first[0], first[0], 3, 3), "nchw"))
    jobs = [("act_sign", case, torch.bfloat16) for case in cases]
    jobs.append(("weight_sign", ("resnet18.layer4", (plan.op_batch, *last), (last[0], last[0], 3, 3), "nchw"),
                 torch.float32))
    return jobs


def fused_ops(section: Section, session: Session) -> None:
    from benchmarks import kernels

    kernels.run(session.plan.tiny, session.device, "ede", jobs=fused_op_jobs(session.plan),
                compile_backend=session.plan.compile_backend, job_estimate_s=session.plan.estimate("op_case"),
                section=section)


def fused_ops_table(data: dict) -> str:
    from benchmarks import kernels

    return kernels.markdown_table(data)


# --- d. training step ---------------------------------------------------------------------------------------------

# Priority order: the README's targets first (ResNet-18 vs eager fp32 and vs its twin, ResNet-20's schedule).
TRAINING_ORDER = [("resnet18_imagenet", "sdbnn"), ("resnet18_imagenet", "reference_fp32"),
                  ("resnet18_imagenet", "full_precision"), ("resnet20", "sdbnn"), ("resnet20", "sdbnn_cudagraphs"),
                  ("resnet18_imagenet", "reference_compiled")]


def _training_estimate(plan: Plan, model: str, variant: str, reused: bool) -> float:
    from benchmarks.training import VARIANTS

    estimate = 0.0 if reused else plan.estimate(f"eager_{model}" if not VARIANTS[variant].compiled
                                                else f"compile_{model}")
    if plan.model_cases[model][3] and VARIANTS[variant].binary and VARIANTS[variant].backend == "ops":
        estimate += plan.estimate("eval_compile")
    return estimate


def training_stage(section: Section, session: Session) -> None:
    from benchmarks import training

    plan, device, data = session.plan, session.device, section.data
    data.update(compile_backend=plan.compile_backend, precision="bf16 autocast", rows=[])
    if plan.tiny:
        data["note"] = (f"CPU tiny run: compiled with {plan.compile_backend}; CUDA graphs need CUDA, so the "
                        "cudagraphs variant runs without them")
    for model, variant in TRAINING_ORDER:
        label = f"{model} {variant}"
        reused = (model, variant) in session.prepared
        if not section.allows(label, _training_estimate(plan, model, variant, reused)):
            continue
        try:
            prepared = session.prepared.pop((model, variant), None) or training.prepare(
                model, plan.model_cases[model], variant, device, compile_backend=plan.compile_backend, autocast=True)
            row = training.measure(prepared, plan.tiny, plan.steps(variant))
            row["compiled_in"] = "correctness stage" if reused else "this stage"
            data["rows"].append(row)
            training.add_ratios(data["rows"])
            log(f"training: {model} {variant}: {_rate_text(row['train_images_per_s'])} img/s"
                + (f" (first step {row['first_step_s']:.1f} s)" if row.get("first_step_s") else ""))
        except Exception as error:  # noqa: BLE001 - the next variant still runs
            section.error(label, error)
        finally:
            prepared = None
            training.release()
        section.save()


def training_table(data: dict) -> str:
    from benchmarks import training

    note = f"{data['note']}.\n\n" if data.get("note") else ""
    firsts = [f"{row['model']} {row['variant']} {row['first_step_s']:.0f} s" for row in data["rows"]
              if row.get("first_step_s") is not None]
    return (note + training.markdown_table(data) + ("\nFirst step (compilation included): " + ", ".join(firsts) + ".\n"
                                                    if firsts else ""))


# --- e. trainer ---------------------------------------------------------------------------------------------------


def trainer_stage(section: Section, session: Session) -> None:
    """The Trainer in this process (it takes this process's GPU; accelerate launch would start a second CUDA context
    and recompile from nothing), on synthetic CIFAR-shaped data kept on the device."""
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.trainer import Trainer

    plan, data = session.plan, section.data
    if not section.allows("Trainer run", plan.estimate("trainer")):
        return
    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(model="resnet20", dataset="synthetic", epochs=2, batch_size=plan.trainer_batch,
                             compile=plan.trainer_compile, compile_mode=None, output_dir=str(Path(scratch) / "run"),
                             max_images=plan.trainer_max_images)
        data["config"] = {"model": config.model, "dataset": config.dataset, "epochs": config.epochs,
                          "batch_size": config.batch_size, "compile": config.compile,
                          "max_images": config.max_images, "in_process": True}
        if plan.tiny:
            data["note"] = "CPU tiny run: the Trainer runs without compile (Inductor on 2 cores would dominate)"
        started = time.perf_counter()
        Trainer(config).fit()
        data["seconds_fit"] = round(time.perf_counter() - started, 2)
        records = [json.loads(line) for line in (Path(config.output_dir) / "metrics.jsonl").read_text().splitlines()
                   if line.strip()]
    data["epochs"] = records
    measured = records[-1]  # the second epoch: the first includes compilation
    data["train_images_per_s"] = measured.get("train_images_per_s")
    data["images_per_s"] = measured.get("images_per_s")
    bare = next((row for row in session.stage_data("training").get("rows", [])
                 if row["model"] == "resnet20" and row["variant"] == "sdbnn"), None)
    if bare is not None and data["train_images_per_s"]:
        data["bare_step_images_per_s"] = bare["train_images_per_s"]
        data["bare_step_batch"] = bare["batch"]
        data["trainer_over_bare_step"] = data["train_images_per_s"] / bare["train_images_per_s"]
    log(f"trainer: {_rate_text(data['train_images_per_s'])} img/s training, {_rate_text(data['images_per_s'])} img/s "
        f"with evaluation; bare compiled step {_rate_text(data.get('bare_step_images_per_s'))} img/s")


def _rate_text(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def trainer_table(data: dict) -> str:
    def number(key, fmt=None):
        if data.get(key) is None:
            return "—"
        return format(data[key], fmt) if fmt else _rate_text(data[key])

    note = f"{data['note']}.\n\n" if data.get("note") else ""
    return (note + "| Trainer train img/s (epoch 2) | Trainer img/s incl. evaluation | bare compiled step img/s | "
            "Trainer ÷ bare step |\n|---|---|---|---|\n"
            f"| {number('train_images_per_s')} | {number('images_per_s')} | {number('bare_step_images_per_s')} | "
            f"{number('trainer_over_bare_step', '.2f')} |\n")


# --- pytest -m gpu (optional) ---------------------------------------------------------------------------------------


def gpu_tests(section: Section, session: Session) -> None:
    if session.device.type != "cuda":
        section.data["note"] = "no CUDA device: nothing to run"
        return
    environment_ = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    try:
        result = subprocess.run(command, cwd=ROOT, env=environment_, capture_output=True, text=True,
                                timeout=max(section.budget.remaining(), 1))
        section.data.update(returncode=result.returncode, output_tail=(result.stdout + result.stderr)[-4000:])
        if result.returncode != 0:
            raise AssertionError(f"pytest -m gpu exited {result.returncode}")
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode(errors="replace") if isinstance(error.stdout, bytes) else error.stdout or ""
        section.data.update(returncode=None, output_tail=output[-4000:])
        section.skip("the rest of pytest -m gpu", "stopped at the stage budget")


def gpu_tests_table(data: dict) -> str:
    output = data.get("output_tail", data.get("note", "")).strip()
    return f"Exit status {data.get('returncode')}.\n\n```\n{output}\n```\n"


# --- targets ------------------------------------------------------------------------------------------------------


def targets(section: Section, session: Session) -> None:
    """The README's targets against this run's numbers (None where the measurement is missing)."""
    rows = session.stage_data("fused_ops").get("rows", [])
    large = [row for row in rows if row["provider"] == "fused" and row["bytes_forward"] / 2 >= 25e6]
    training_rows = {(row["model"], row["variant"]): row for row in session.stage_data("training").get("rows", [])}
    sd18 = training_rows.get(("resnet18_imagenet", "sdbnn"), {})
    projected = [training_rows[key]["projected_schedule_min"] for key in
                 (("resnet20", "sdbnn"), ("resnet20", "sdbnn_cudagraphs"))
                 if "projected_schedule_min" in training_rows.get(key, {})]

    def worst(values):  # the smallest ratio; the smallest projected time is the best variant's
        return min(values) if values else None

    items = [
        ("fused op fwd+bwd, share of copy bandwidth (tensors ≥ 25 MB, worst case)", 0.8, ">=",
         worst([row["copy_fraction_forward_backward"] for row in large])),
        ("fused op fwd+bwd vs Inductor-compiled reference (tensors ≥ 25 MB, worst case)", 1.5, ">=",
         worst([row["speedup_vs"]["compiled"] for row in large if "compiled" in row["speedup_vs"]])),
        ("resnet18_imagenet step vs full-precision twin", 0.9, ">=", sd18.get("ratio_to_full_precision")),
        ("resnet18_imagenet step vs eager fp32 reference", 5.0, ">=", sd18.get("speedup_vs_reference_fp32")),
        ("ResNet-20 500-epoch recipe projected, minutes (best variant)", 10.0, "<=", worst(projected)),
    ]
    section.data["targets"] = [
        {"target": name, "goal": f"{sign} {goal:g}", "measured": value,
         "met": None if value is None else (value >= goal if sign == ">=" else value <= goal)}
        for name, goal, sign, value in items]
    if session.plan.tiny:
        section.data["note"] = "CPU tiny run: the numbers mean nothing; this checks the bookkeeping"


def targets_table(data: dict) -> str:
    note = f"{data['note']}.\n\n" if data.get("note") else ""
    lines = ["| target | goal | measured | met |", "|---|---|---|---|"]
    for item in data.get("targets", []):
        measured = "not measured" if item["measured"] is None else f"{item['measured']:.2f}"
        met = "—" if item["met"] is None else ("yes" if item["met"] else "**no**")
        lines.append(f"| {item['target']} | {item['goal']} | {measured} | {met} |")
    return note + "\n".join(lines) + "\n"


STAGE_FUNCTIONS = {
    "preflight": (preflight, preflight_table),
    "correctness": (correctness, correctness_table),
    "fused_ops": (fused_ops, fused_ops_table),
    "training": (training_stage, training_table),
    "trainer": (trainer_stage, trainer_table),
    "gpu_tests": (gpu_tests, gpu_tests_table),
    "targets": (targets, targets_table),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_session", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (the CPU run the test suite does)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "benchmarks" / "results"),
                        help="folder for the JSON, markdown and log (default: $OUT, else benchmarks/results)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", nargs="+", choices=STAGES, help="run these stages (default: all)")
    parser.add_argument("--compile-backend", help="torch.compile backend for the models and the compiled reference "
                                                  "(default: inductor; aot_eager with --tiny)")
    parser.add_argument("--total-s", type=float,
                        help="budget of the whole session in seconds (default: the sum of the stages' budgets)")
    parser.add_argument("--budget", action="append", default=[], metavar="STAGE=SECONDS",
                        help="a stage's own budget (repeatable), e.g. training=240 or gpu_tests=300")
    parser.add_argument("--inject-failure", action="append", default=[], choices=STAGES,
                        help="make this stage raise at its start (tests the failure path)")
    args = parser.parse_args(argv)
    for item in args.budget:
        name, _, seconds = item.partition("=")
        if name not in STAGES or not seconds:
            parser.error(f"--budget takes STAGE=SECONDS with STAGE one of {', '.join(STAGES)}, got {item!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" and not args.tiny:
        print("no CUDA device: the full session needs a GPU; run with --tiny for the CPU smoke run", file=sys.stderr)
        return 2
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    if args.compile_backend:
        plan = dataclasses.replace(plan, compile_backend=args.compile_backend)
    budgets = {**plan.budgets, **{name: float(seconds) for name, _, seconds in
                                  (item.partition("=") for item in args.budget)}}
    stages = [name for name in STAGES if (args.only is None or name in args.only)]
    total_s = sum(budgets[name] for name in stages) if args.total_s is None else args.total_s
    # Models of one class share their forward's code object, so each variant and train/eval mode adds an entry there.
    for name in ("recompile_limit", "cache_size_limit"):  # the name differs between torch versions
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 32))
            break

    try:
        where = environment(device)
    except Exception as error:  # noqa: BLE001 - a broken tree still gets its files; preflight says what broke
        where = {"device": device_name(device), "date": datetime.date.today().isoformat(), "torch": torch.__version__,
                 "triton": None, "fused_path": f"unknown ({type(error).__name__}: {error})"}
    info = {**where, "tiny": args.tiny, "total_budget_s": total_s, "stage_budgets_s": budgets,
            "compile_backend": plan.compile_backend,
            "command": " ".join(["python -m benchmarks.gpu_session", *(sys.argv[1:] if argv is None else argv)])}
    stem = ("tiny-" if args.tiny else "") + f"{device_slug(info['device'])}-{info['date']}"
    notes = [f"`{info['command']}`; torch {info['torch']}, triton {info['triton']}, fused path: {info['fused_path']}; "
             f"total budget {total_s:.0f} s."]
    if args.tiny:
        notes.append(f"CPU tiny run: compiled paths use the {plan.compile_backend} backend and the Trainer runs "
                     "without compile; it checks that every stage runs, not speed.")
    report = Report(args.out, stem, info, f"GPU session — {info['device']} — {info['date']}", notes)
    session = Session(plan, device, report)
    log(f"GPU session on {info['device']} ({'tiny' if args.tiny else 'full'}), total budget {total_s:.0f} s, "
        f"results in {args.out / stem}.json/.md")

    def interrupt(signum, frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    total = Budget(total_s)
    try:
        for index, name in enumerate(stages):
            if budgets[name] <= 0:
                report.skip_rest([name], f"not requested (--budget {name}=SECONDS runs it)")
                continue
            reserved_later = sum(budgets[later] for later in stages[index + 1:])
            allowance = min(total.remaining(), max(budgets[name], total.remaining() - reserved_later))
            function, table = STAGE_FUNCTIONS[name]

            def body(section, function=function, name=name):
                if name in args.inject_failure:
                    raise InjectedFailure(f"--inject-failure {name}")
                return function(section, session)

            report.run(name, body, table, total.child(allowance), TITLES[name])
    except Interrupted:
        report.skip_rest(stages, "the session was stopped (hard time limit) before it started")
        log("interrupted: results so far are written")
        return 1
    return report.finish("stages")


if __name__ == "__main__":
    sys.exit(main())

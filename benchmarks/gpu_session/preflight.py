"""a. Preflight: versions, the device, imports of every module the later stages use, and one compile of each Triton
kernel (a tiny act_sign and weight_sign forward and backward, checked against float64)."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import time

import torch

from benchmarks.common import Section, log
from benchmarks.gpu_session.plan import Session, Stage

REQUIRED_MODULES = ["sdbnn", "sdbnn.ops", "sdbnn.reference", "sdbnn.kernels.act_sign", "sdbnn.kernels.weight_sign",
                    "sdbnn.models", "sdbnn.engine.config", "sdbnn.engine.trainer", "sdbnn.pipelines.synthetic",
                    "benchmarks.kernels", "benchmarks.training", "sdbnn.testing", "accelerate", "einops",
                    "safetensors", "tqdm", "yaml", "matplotlib", "triton"]
VERSION_MODULES = ["torch", "triton", "accelerate", "torchvision", "einops", "safetensors", "numpy", "tqdm",
                   "matplotlib", "sklearn", "yaml"]


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as error:  # noqa: BLE001 - an absent optional package is a fact to record
        return f"missing ({type(error).__name__})"


def _describe_device(data: dict, device: torch.device) -> None:
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


def _first_kernels(device: torch.device) -> None:
    """One act_sign and one weight_sign forward and backward through the ops, checked against float64 (on CUDA this
    compiles each kernel once)."""
    from sdbnn.testing import check_act_sign, check_weight_sign

    check_act_sign((2, 8, 5, 5), True, torch.bfloat16, "ede", device=device, through="op")
    check_weight_sign((8, 8, 3, 3), False, torch.float32, "approx", device=device, through="op",
                      out_dtype=torch.bfloat16)


def preflight(section: Section, session: Session) -> None:
    data, device = section.data, session.device
    data["versions"] = {"python": platform.python_version(), **{name: _version(name) for name in VERSION_MODULES}}
    data["environment"] = {key: os.environ.get(key)
                           for key in ("TRITON_INTERPRET", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    if device.type == "cuda":
        _describe_device(data, device)
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

    data["fused_path"] = sdbnn.ops.implementation(torch.empty(1, device=device))
    started = time.perf_counter()
    _first_kernels(device)
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


STAGE = Stage("preflight", "a. Preflight", preflight, preflight_table, budget_s=15, tiny_budget_s=300)

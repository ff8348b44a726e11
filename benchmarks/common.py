"""What every benchmark records about where it ran, and how results are written."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import sys
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def device_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def environment(device: torch.device) -> dict:
    import sdbnn.ops

    triton = sys.modules.get("triton")
    probe = torch.empty(1, device=device)
    return {
        "device": device_name(device),
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "triton": getattr(triton, "__version__", None),
        "cpu_cores": os.cpu_count(),
        "fused_path": "triton" if sdbnn.ops.uses_triton(probe) else "reference math (no Triton kernels on this device)",
    }


def write_results(out: Path, prefix: str, result: dict, markdown: str) -> Path:
    """``<out>/<prefix>-<device>-<date>.json`` and ``.md`` (prefix "" names the file by device and date only)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = "-".join(part for part in (prefix, device_slug(result["device"]), result["date"]) if part)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown)
    print(f"wrote {out / stem}.json and .md")
    return out / f"{stem}.json"

"""Where a result came from: the code's commit, the machine and the libraries. Every run's summary.json and every
committed result file records it, so that a number can be traced to the code and the machine that produced it."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

SOURCE_TREE = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=SOURCE_TREE, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> dict:
    """The source tree's commit, and whether tracked files differ from it (None outside a git checkout)."""
    head = _git("rev-parse", "HEAD")
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": head, "uncommitted_changes": bool(changed) if head and changed is not None else None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def environment() -> dict:
    """Commit, machine (CPU model, usable cores, torch threads, GPU) and library versions of this process."""
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("triton", "accelerate", "numpy"):
        module = sys.modules.get(name)
        versions[name] = getattr(module, "__version__", None)
    return {
        **commit(),
        "cpu_model": cpu_model(),
        "cpu_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        **versions,
    }

"""What several test files share: the environment of training subprocesses and the commands that start them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"


def cpu_env(**extra: str) -> dict[str, str]:
    """The environment for a training or benchmark subprocess: without TRITON_INTERPRET (the interpreted kernels
    are for the kernel tests; training through them is ~40× slower), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return {**env, **extra}


def accelerate_command(script: str | Path, *args: str, processes: int) -> list[str]:
    """``accelerate launch`` of ``script`` with ``processes`` CPU ranks over gloo (run it with `accelerate_env`:
    without ACCELERATE_USE_CPU, --multi_gpu on a CPU machine silently runs independent trainings)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *args]


def accelerate_env() -> dict[str, str]:
    return cpu_env(ACCELERATE_USE_CPU="true")


def run_script(script: str | Path, *args: str, processes: int = 1, env: dict[str, str] | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a launch/ script (1 process: plain python; more: accelerate launch), capturing its output."""
    if processes == 1:
        command, environment = [sys.executable, str(script), *args], env or cpu_env()
    else:
        command, environment = accelerate_command(script, *args, processes=processes), env or accelerate_env()
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)

"""`pytest -m gpu` (tests/test_gpu.py: the kernel checks compiled for CUDA, whole models on the GPU), only when given a
budget (--budget gpu_tests=SECONDS); stopped at its budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Section
from benchmarks.gpu_session.plan import Session, Stage

ROOT = Path(__file__).resolve().parents[2]


def gpu_tests(section: Section, session: Session) -> None:
    if session.device.type != "cuda":
        section.data["note"] = "no CUDA device: nothing to run"
        return
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests/test_gpu.py"]
    try:
        result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True,
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


STAGE = Stage("gpu_tests", "pytest -m gpu", gpu_tests, gpu_tests_table, budget_s=0, tiny_budget_s=0)

"""What several test files share: the environment of training subprocesses and the commands that start them."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch"
# Comma-separated optional modules this environment promises (.ci/run sets it to what .ci/setup installs): a test
# that needs one of them fails when it is missing, instead of skipping. Unset (a plain local run), such tests skip.
REQUIRE_OPTIONAL = "SDBNN_REQUIRE_OPTIONAL"


def required_optional_modules() -> set[str]:
    return {name.strip() for name in os.environ.get(REQUIRE_OPTIONAL, "").split(",") if name.strip()}


def require_optional(module: str, why: str = "") -> None:
    """Skip the calling test (or fixture) when the optional ``module`` is not installed, or fail it when
    SDBNN_REQUIRE_OPTIONAL lists ``module``. A module that is installed but fails to import is an error either way.
    Tests mark this with ``@pytest.mark.optional("module", ...)`` (tests/conftest.py) or call it."""
    import pytest

    if importlib.util.find_spec(module) is not None:
        return
    problem = f"{module} is not installed" + (f" ({why})" if why else "")
    if module in required_optional_modules():
        pytest.fail(f"{problem}, and {REQUIRE_OPTIONAL} says this environment has it", pytrace=False)
    pytest.skip(problem)


def cpu_env(**extra: str) -> dict[str, str]:
    """The environment for a training or benchmark subprocess: without TRITON_INTERPRET (so its kernels are
    defined as a GPU run defines them; interpreted, they are for the kernel tests), plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    return {**env, **extra}


def accelerate_command(script: str | Path, *args: str, processes: int, machines: int = 1,
                       launcher_flags: tuple[str, ...] = ()) -> list[str]:
    """``accelerate launch`` of ``script`` with ``processes`` CPU ranks (on all ``machines``) over gloo, plus
    ``launcher_flags`` (run it with `accelerate_env`: without ACCELERATE_USE_CPU, --multi_gpu on a CPU machine
    silently runs independent trainings)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", str(machines), "--mixed_precision", "no", "--dynamo_backend", "no", *launcher_flags,
            str(script), *args]


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


def free_port() -> int:
    """A TCP port nothing listens on now (for a rendezvous on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The direct children of process ``pid`` (from Linux's /proc/<pid>/stat)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(command name)": state, parent pid, ...
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def process_environment(pid: int) -> dict[str, str]:
    entries = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(entry.decode(errors="replace").split("=", 1) for entry in entries if b"=" in entry)


def node_command(script: str | Path, *args: str, machine: int, port: int) -> list[str]:
    """One of two "nodes" on this machine (machine rank ``machine``, 1 CPU process each, gloo over 127.0.0.1),
    launched with launch/configs/accelerate_multinode.yaml as a cluster's nodes are (run it with `accelerate_env`)."""
    flags = ("--config_file", str(LAUNCH / "configs" / "accelerate_multinode.yaml"), "--machine_rank", str(machine),
             "--main_process_ip", "127.0.0.1", "--main_process_port", str(port))
    return accelerate_command(script, *args, processes=2, machines=2, launcher_flags=flags)


def run_two_nodes(script: str | Path, args_of_node, timeout: int = 900) -> list[subprocess.CompletedProcess]:
    """Run ``script`` on two "nodes" at once, node N with the arguments ``args_of_node(N)``."""
    port = free_port()
    nodes = [subprocess.Popen(node_command(script, *args_of_node(machine), machine=machine, port=port), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=accelerate_env())
             for machine in (0, 1)]
    outputs = [node.communicate(timeout=timeout) for node in nodes]
    return [subprocess.CompletedProcess(node.args, node.returncode, *output) for node, output in zip(nodes, outputs)]


@contextlib.contextmanager
def torch_threads(count: int):
    """torch's thread count set to ``count`` inside the block: runs compared within one process need the same count
    on both sides, and one thread keeps in-process training fast on a busy 2-core machine (more threads spin)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)

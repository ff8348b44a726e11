"""Kernel launches as data: what a launcher chose (`LaunchConfig`) and one place that starts it (`launch`).

`recording()` captures launches instead of running them, so a tool can see exactly what the launchers would launch
— arguments included — from meta tensors, with no GPU (`benchmarks.kernel_resources` compiles these for GPU
targets). Plain Python: no Triton.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    """One kernel launch as a launcher decides it from the shapes and dtypes."""

    kernel: Any  # a triton.jit function
    grid: tuple[int, ...]
    constexprs: Mapping[str, Any]
    num_warps: int
    runtime: Mapping[str, int] = dataclasses.field(default_factory=dict)  # launcher-chosen runtime ints

    @property
    def name(self) -> str:
        # act_sign._backward_planes_kernel -> "act_sign.backward_planes"
        op = self.kernel.fn.__module__.rsplit(".", 1)[-1]
        return f"{op}.{self.kernel.fn.__name__.strip('_').removesuffix('_kernel')}"

    def describe(self) -> dict[str, Any]:
        """JSON-friendly: kernel name, grid, constexprs, runtime choices and num_warps."""
        return {
            "kernel": self.name,
            "grid": list(self.grid),
            "constexprs": {key: json_value(value) for key, value in self.constexprs.items()},
            "runtime": dict(self.runtime),
            "num_warps": self.num_warps,
        }


def json_value(value: Any) -> Any:
    """A constexpr as JSON: numbers and strings as they are, Triton dtypes by name (tl.float32 -> "fp32")."""
    return value if isinstance(value, (bool, int, float, str)) else str(value)


@dataclasses.dataclass(frozen=True)
class RecordedLaunch:
    config: LaunchConfig
    args: tuple  # the positional runtime arguments (tensors and ints), in the kernel's order


_recorded: list[RecordedLaunch] | None = None


def launch(config: LaunchConfig, *args: Any) -> None:
    """Start ``config.kernel`` on ``args`` (or record it inside `recording`)."""
    if _recorded is not None:
        _recorded.append(RecordedLaunch(config, args))
        return
    config.kernel[config.grid](*args, **config.runtime, **config.constexprs, num_warps=config.num_warps)


@contextlib.contextmanager
def recording() -> Iterator[list[RecordedLaunch]]:
    """Inside the block, launches are appended to the yielded list instead of running (outputs stay unwritten)."""
    global _recorded
    previous, _recorded = _recorded, []
    try:
        yield _recorded
    finally:
        _recorded = previous

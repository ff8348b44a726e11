"""Tile sizes of the Triton launchers, read at every launch.

The interpreter pays ~1 ms per program, so it gets large tiles; on a GPU the sizes keep tiles register-resident and
enough programs in flight. Tests switch sizes with `use` to run the GPU's tiling (several passes per row, several
splits of the channels_last reduction, weight rows longer than a tile) under the interpreter. Plain Python: no Triton.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class TileSizes:
    forward_block: int  # act_sign forward: elements per program
    elements_per_program: int  # act_sign backward: elements one program holds per pass
    plane_block: int  # act_sign backward, NCHW: most elements of one (b, c) plane per pass
    channel_block: int  # act_sign backward, channels_last: most channels per program
    target_programs: int  # act_sign backward, channels_last: split H·W over programs until about this many
    weight_tile: int  # weight_sign: elements per program; longer rows are walked in blocks of this size

    def __post_init__(self):
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value < 1:
                raise ValueError(f"tile size {item.name} must be positive, got {value}")
            # tl.arange needs powers of two; target_programs only counts programs
            if item.name != "target_programs" and value & (value - 1):
                raise ValueError(f"tile size {item.name} must be a power of two, got {value}")


GPU = TileSizes(forward_block=1024, elements_per_program=2048, plane_block=1024, channel_block=128,
                target_programs=2048, weight_tile=4096)
INTERPRETER = TileSizes(forward_block=8192, elements_per_program=8192, plane_block=8192, channel_block=128,
                        target_programs=1, weight_tile=32768)

_current = INTERPRETER if os.environ.get("TRITON_INTERPRET") == "1" else GPU


def current() -> TileSizes:
    return _current


@contextlib.contextmanager
def use(sizes: TileSizes | None = None, **changes: int) -> Iterator[TileSizes]:
    """Launch with ``sizes`` (default: the current ones) with ``changes`` applied, inside the block."""
    global _current
    chosen = dataclasses.replace(sizes or _current, **changes)
    previous, _current = _current, chosen
    try:
        yield chosen
    finally:
        _current = previous

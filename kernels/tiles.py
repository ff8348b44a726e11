"""Tile sizes of the Triton launchers, read at every launch.

The interpreter pays ~1 ms per program, so it gets large tiles; on a GPU the sizes keep tiles register-resident and
enough programs in flight. Tests switch sizes with `use` to run the GPU's tiling (several passes per row, several
splits of the channels_last reduction, weight rows longer than a tile) under the interpreter. Plain Python: no Triton.

GPU sizes and warps come from `python -m benchmarks.kernel_resources` (registers, spills and occupancy compiled for
sm_80/90/100 without a GPU, with triton 3.6 and 3.8; the chosen configurations are in its markdown under
benchmarks/results/): 8 elements per thread (2,048-element act_sign tiles on 8 warps, 1,024-element weight tiles on 4:
8 warps made triton 3.6's sm_100 ptxas spill) keep every kernel spill-free and the act_sign kernels at ≥ 50% occupancy
on sm_90, with 32 bytes per thread of each streamed fp32 tensor in flight (16 elements of 16-bit storage in the
forward; 4 elements in unaligned NCHW planes, whose every element needs its own addresses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator


@dataclasses.dataclass(frozen=True)
class TileSizes:
    forward_block: int  # act_sign forward: elements per program for 4-byte storage (×2 for 2-byte storage)
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


GPU = TileSizes(forward_block=2048, elements_per_program=2048, plane_block=1024, channel_block=128,
                target_programs=2048, weight_tile=1024)
# The launchers cap tiles at the tensor's size, so large interpreter tiles cost small tensors nothing (ResNet-20's
# float64 forward+backward: 7.7 s with 8,192/32,768 uncapped, 2.0 s now; ResNet-18 ImageNet at 64 px: 76 s, 14 s).
INTERPRETER = TileSizes(forward_block=65536, elements_per_program=65536, plane_block=65536, channel_block=128,
                        target_programs=1, weight_tile=262144)

_current = INTERPRETER if os.environ.get("TRITON_INTERPRET") == "1" else GPU


ELEMENTS_PER_THREAD = 8  # in fp32 registers: each element keeps its value, gradient and mask live
MAX_WARPS = 8  # 16-warp blocks round occupancy down in steps of a quarter of the SM


def num_warps(tile_elements: int, elements_per_thread: int = ELEMENTS_PER_THREAD) -> int:
    """Warps for a program holding ``tile_elements`` per pass (powers of two), ``elements_per_thread`` each: more
    per thread costs registers, fewer leaves too few bytes in flight."""
    return max(1, min(MAX_WARPS, tile_elements // (32 * elements_per_thread)))


def forward_elements_per_thread(element_size: int) -> int:
    """The act_sign forward holds one value per element, so 16-bit storage takes twice ELEMENTS_PER_THREAD: every
    thread then reads 32 bytes per pass whatever the dtype."""
    return ELEMENTS_PER_THREAD * max(1, 4 // element_size)


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

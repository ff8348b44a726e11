"""What one SM of each NVIDIA architecture holds, the theoretical occupancy of a kernel from its registers, warps
and shared memory, and the targets the compiled kernels must meet (used by `benchmarks.kernel_resources` and its
report; no GPU, no Triton)."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class SmLimits:
    max_warps: int  # resident warps per SM
    max_blocks: int  # resident blocks per SM
    shared_bytes: int  # shared memory per SM (the largest carve-out)
    reserved_shared: int  # shared memory the driver reserves per block


# Per-SM limits (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"). All of them: 65,536
# 32-bit registers per SM in 4 sub-partitions (a warp's registers live in one), allocated per warp in units of 256,
# at most 255 per thread; shared memory allocated in units of 128 bytes.
ARCHS = {
    75: SmLimits(max_warps=32, max_blocks=16, shared_bytes=64 * 1024, reserved_shared=0),  # Turing
    80: SmLimits(max_warps=64, max_blocks=32, shared_bytes=164 * 1024, reserved_shared=1024),  # A100
    86: SmLimits(max_warps=48, max_blocks=16, shared_bytes=100 * 1024, reserved_shared=1024),  # GA10x
    89: SmLimits(max_warps=48, max_blocks=24, shared_bytes=100 * 1024, reserved_shared=1024),  # Ada
    90: SmLimits(max_warps=64, max_blocks=32, shared_bytes=228 * 1024, reserved_shared=1024),  # H100, H200
    100: SmLimits(max_warps=64, max_blocks=32, shared_bytes=228 * 1024, reserved_shared=1024),  # B200
    120: SmLimits(max_warps=48, max_blocks=32, shared_bytes=128 * 1024, reserved_shared=1024),  # RTX 50xx
}
REGISTERS_PER_SM, SUB_PARTITIONS, REGISTER_UNIT, MAX_REGISTERS, SHARED_UNIT = 65536, 4, 256, 255, 128
ACT_SIGN_MIN_OCCUPANCY, OCCUPANCY_ARCH = 0.5, 90  # the act_sign kernels' target, on sm_90


def occupancy(arch: int, registers: int, num_warps: int, shared_bytes: int) -> tuple[float, int, str]:
    """(resident warps ÷ the SM's maximum, resident blocks, the limiting resource) for one block of ``num_warps``
    warps using ``registers`` per thread and ``shared_bytes`` of shared memory."""
    sm = ARCHS[arch]
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_UNIT) * REGISTER_UNIT
    warps_by_registers = (REGISTERS_PER_SM // SUB_PARTITIONS // per_warp) * SUB_PARTITIONS
    shared = math.ceil((shared_bytes + sm.reserved_shared) / SHARED_UNIT) * SHARED_UNIT
    limits = {
        "warps": sm.max_warps // num_warps,
        "registers": warps_by_registers // num_warps,
        "blocks": sm.max_blocks,
        "shared": sm.shared_bytes // shared if shared else sm.max_blocks,
    }
    limit = min(limits, key=limits.get)
    blocks = limits[limit]
    return blocks * num_warps / sm.max_warps, blocks, limit


def targets(rows: list[dict]) -> list[str]:
    """What misses the targets, one line each (empty: all met)."""
    failures = []
    for row in rows:
        what = f"{row['arch']} {row['kernel']} {row['constexprs']} num_warps={row['num_warps']}"
        if not row["compiled"]:
            failures.append(f"{what}: did not compile: {row['error'].splitlines()[0]}")
            continue
        if row["spill_bytes"]:
            failures.append(f"{what}: {row['spill_bytes']} bytes of spills")
        if (row["kernel"].startswith("act_sign") and row["arch"] == f"sm_{OCCUPANCY_ARCH}"
                and row["occupancy"] < ACT_SIGN_MIN_OCCUPANCY):
            failures.append(f"{what}: occupancy {row['occupancy']:.0%} < {ACT_SIGN_MIN_OCCUPANCY:.0%}")
        if row["kernel"].startswith("weight_sign") and row["registers"] >= MAX_REGISTERS:
            failures.append(f"{what}: {row['registers']} registers (the limit)")
    return failures

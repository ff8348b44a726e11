"""Fused activation self-distribution sign: kernels and launchers.

forward:  out = sign(x[b, c, h, w] + shift[b, c])
backward: dx = g · surrogate'(x + shift) and d(shift)[b, c] = Σ_hw dx, in one pass that recomputes x + shift.

NCHW and channels_last inputs are read in place (no layout copy); the outputs keep the input's layout. The math runs
in COMPUTE: fp32 for fp32, bf16 and fp16 storage, float64 when x or shift is float64 (as the op layer's reference math).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sdbnn import reference
from sdbnn.kernels import tiles
from sdbnn.kernels.launches import LaunchConfig, launch
from sdbnn.kernels.layouts import dense, is_channels_last, output_like
from sdbnn.kernels.surrogates import SURROGATE_CODES, check_schedule_scalars, compute_type, sign, surrogate_derivative


MAX_SAMPLE_ELEMENTS = 2**30  # 32-bit offsets inside one sample (plus one tile) cannot overflow


@triton.jit
def _forward_kernel(
    x_ptr, shift_ptr, out_ptr, n_elements, C, HW,
    HAS_SHIFT: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    # 64-bit start of the program's elements, then 32-bit index math per element (fewer registers)
    start = tl.program_id(0).to(tl.int64) * BLOCK
    x_ptr += start
    out_ptr += start
    offsets = tl.arange(0, BLOCK)
    mask = offsets < n_elements - start
    v = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(COMPUTE)
    if HAS_SHIFT:
        if CHANNELS_LAST:  # shift[b, c] of element (b, h, w, c)
            first_sample = start // (HW * C)
            within = (start - first_sample * HW * C).to(tl.int32) + offsets
            plane = (within // (HW * C)) * C + within % C
            shift_ptr += first_sample * C
        else:
            first_plane = start // HW
            plane = ((start - first_plane * HW).to(tl.int32) + offsets) // HW
            shift_ptr += first_plane
        v += tl.load(shift_ptr + plane, mask=mask, other=0.0).to(COMPUTE)
    tl.store(out_ptr + offsets, sign(v).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_planes_kernel(
    g_ptr, x_ptr, shift_ptr, k_ptr, t_ptr, dx_ptr, dshift_ptr, n_planes, HW,
    HAS_SHIFT: tl.constexpr, SURROGATE: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_HW: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """NCHW: each (b, c) plane is contiguous; a program owns BLOCK_P whole planes, so d(shift) is a register sum.
    Offsets inside the program's planes are 32-bit (from a 64-bit start): fewer registers per element."""
    first_plane = tl.program_id(0) * BLOCK_P
    start = first_plane.to(tl.int64) * HW
    g_ptr += start
    x_ptr += start
    dx_ptr += start
    planes = first_plane + tl.arange(0, BLOCK_P)
    plane_mask = planes < n_planes
    k = tl.load(k_ptr).to(COMPUTE)
    t = tl.load(t_ptr).to(COMPUTE)
    if HAS_SHIFT:
        shift = tl.load(shift_ptr + planes, mask=plane_mask, other=0.0).to(COMPUTE)
    else:
        shift = tl.zeros([BLOCK_P], dtype=COMPUTE)
    dshift = tl.zeros([BLOCK_P], dtype=COMPUTE)
    plane_offsets = tl.arange(0, BLOCK_P) * HW
    for first_col in range(0, HW, BLOCK_HW):
        cols = first_col + tl.arange(0, BLOCK_HW)
        offsets = plane_offsets[:, None] + cols[None, :]
        mask = plane_mask[:, None] & (cols[None, :] < HW)
        v = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(COMPUTE) + shift[:, None]
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(COMPUTE)
        dx = tl.where(mask, g * surrogate_derivative(v, k, t, SURROGATE), 0.0)
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dshift += tl.sum(dx, axis=1)
    if HAS_SHIFT:
        tl.store(dshift_ptr + planes, dshift.to(dshift_ptr.dtype.element_ty), mask=plane_mask)


@triton.jit
def _backward_channels_last_kernel(
    g_ptr, x_ptr, shift_ptr, k_ptr, t_ptr, dx_ptr, partial_ptr, B, C, HW, ROWS_PER_SPLIT,
    HAS_SHIFT: tl.constexpr, SURROGATE: tl.constexpr, BLOCK_HW: tl.constexpr, BLOCK_C: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    """channels_last: a program owns one sample, BLOCK_C channels and one split of the H·W rows; it writes its partial
    d(shift) in COMPUTE, which the launcher sums over splits (splits keep the GPU full when B·C is small)."""
    b = tl.program_id(0)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    split = tl.program_id(2)
    channel_mask = channels < C
    k = tl.load(k_ptr).to(COMPUTE)
    t = tl.load(t_ptr).to(COMPUTE)
    if HAS_SHIFT:
        shift = tl.load(shift_ptr + b * C + channels, mask=channel_mask, other=0.0).to(COMPUTE)
    else:
        shift = tl.zeros([BLOCK_C], dtype=COMPUTE)
    dshift = tl.zeros([BLOCK_C], dtype=COMPUTE)
    first_row = split * ROWS_PER_SPLIT
    start = (b.to(tl.int64) * HW + first_row) * C  # then 32-bit offsets inside this sample's split
    g_ptr += start
    x_ptr += start
    dx_ptr += start
    for first in range(0, ROWS_PER_SPLIT, BLOCK_HW):
        rows = first + tl.arange(0, BLOCK_HW)
        offsets = rows[:, None] * C + channels[None, :]
        mask = (first_row + rows[:, None] < HW) & channel_mask[None, :]
        v = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(COMPUTE) + shift[None, :]
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(COMPUTE)
        dx = tl.where(mask, g * surrogate_derivative(v, k, t, SURROGATE), 0.0)
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dshift += tl.sum(dx, axis=0)
    if HAS_SHIFT:
        tl.store(partial_ptr + (split * B + b) * C + channels, dshift, mask=channel_mask)


def interpreted() -> bool:
    """Whether these kernels were defined for Triton's interpreter (TRITON_INTERPRET=1 at import) and so run on CPU
    tensors, rather than compiled for a GPU."""
    return not isinstance(_forward_kernel, triton.runtime.JITFunction)


def _check(x: torch.Tensor, shift: torch.Tensor | None) -> None:
    if x.dim() != 4:
        raise ValueError(f"act_sign expects x of shape (batch, channels, height, width), got {tuple(x.shape)}")
    if shift is not None and tuple(shift.shape) != tuple(x.shape[:2]):
        raise ValueError(f"shift has shape {tuple(shift.shape)}, expected (batch, channels) = {tuple(x.shape[:2])}")
    if math.prod(x.shape[1:]) > MAX_SAMPLE_ELEMENTS:
        raise ValueError(f"act_sign: one sample of x holds C·H·W = {math.prod(x.shape[1:]):,} elements; the kernels "
                         f"index inside a sample in 32 bits (at most {MAX_SAMPLE_ELEMENTS:,})")


def _compute_dtype(x: torch.Tensor, shift: torch.Tensor | None) -> torch.dtype:
    return reference.compute_dtype(x.dtype, *([] if shift is None else [shift.dtype]))


def forward_config(shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool, has_shift: bool,
                   compute_dtype: torch.dtype = torch.float32) -> LaunchConfig:
    """The forward launch for an input of ``shape`` (B, C, H, W) stored in ``dtype``, math in ``compute_dtype``."""
    per_thread = tiles.forward_elements_per_thread(dtype.itemsize)
    numel = math.prod(shape)
    # no larger than the tensor (the interpreter's large tiles would mostly be masked lanes)
    block = min(tiles.current().forward_block * per_thread // tiles.ELEMENTS_PER_THREAD, triton.next_power_of_2(numel))
    return LaunchConfig(
        _forward_kernel, (triton.cdiv(numel, block),),
        {"HAS_SHIFT": has_shift, "CHANNELS_LAST": channels_last, "BLOCK": block,
         "COMPUTE": compute_type(compute_dtype)}, tiles.num_warps(block, per_thread),
    )


def backward_config(
    shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool, has_shift: bool, surrogate: str,
    compute_dtype: torch.dtype = torch.float32,
) -> LaunchConfig:
    """The backward launch: NCHW walks whole (b, c) planes; channels_last tiles [H·W rows, channels] and splits H·W
    over programs (``runtime["ROWS_PER_SPLIT"]``; grid[2] splits of partial d(shift) in ``compute_dtype``)."""
    B, C, H, W = shape
    HW = H * W
    math_constexprs = {"SURROGATE": SURROGATE_CODES[surrogate], "COMPUTE": compute_type(compute_dtype)}
    sizes = tiles.current()
    if channels_last:
        block_c = min(triton.next_power_of_2(C), sizes.channel_block)
        block_hw = max(1, min(triton.next_power_of_2(HW), sizes.elements_per_program // block_c))
        row_blocks = triton.cdiv(HW, block_hw)
        # split H·W over programs until about target_programs are in flight (each SM wants several)
        splits = max(1, min(row_blocks, sizes.target_programs // (B * triton.cdiv(C, block_c))))
        rows_per_split = triton.cdiv(row_blocks, splits) * block_hw
        splits = triton.cdiv(HW, rows_per_split)
        return LaunchConfig(
            _backward_channels_last_kernel, (B, triton.cdiv(C, block_c), splits),
            {"HAS_SHIFT": has_shift, "BLOCK_HW": block_hw, "BLOCK_C": block_c, **math_constexprs},
            num_warps=tiles.num_warps(block_hw * block_c), runtime={"ROWS_PER_SPLIT": rows_per_split},
        )
    block_hw = min(triton.next_power_of_2(HW), sizes.plane_block)
    # Planes whose size is not a multiple of 16 start unaligned: no vector loads, every element keeps its own
    # addresses live, so such programs hold half the elements per thread.
    per_thread = tiles.ELEMENTS_PER_THREAD if HW % 16 == 0 else tiles.ELEMENTS_PER_THREAD // 2
    elements = sizes.elements_per_program * per_thread // tiles.ELEMENTS_PER_THREAD
    block_p = max(1, min(elements // block_hw, triton.next_power_of_2(B * C)))
    return LaunchConfig(
        _backward_planes_kernel, (triton.cdiv(B * C, block_p),),
        {"HAS_SHIFT": has_shift, "BLOCK_P": block_p, "BLOCK_HW": block_hw, **math_constexprs},
        num_warps=tiles.num_warps(block_p * block_hw, per_thread),
    )


def forward(x: torch.Tensor, shift: torch.Tensor | None) -> torch.Tensor:
    _check(x, shift)
    x = dense(x)
    out = output_like(x)
    B, C, H, W = x.shape
    if x.numel() == 0:
        return out
    config = forward_config(tuple(x.shape), x.dtype, is_channels_last(x), shift is not None, _compute_dtype(x, shift))
    launch(config, x, shift.contiguous() if shift is not None else x, out, x.numel(), C, H * W)
    return out


def backward(
    grad: torch.Tensor, x: torch.Tensor, shift: torch.Tensor | None, k: torch.Tensor, t: torch.Tensor, surrogate: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dx, d(shift)); d(shift) is None when shift is None. k and t must already be on x's device."""
    _check(x, shift)
    check_schedule_scalars("act_sign", k, t, x.device)
    x = dense(x)
    channels_last = is_channels_last(x)
    # g must walk the same memory order as x; it only differs when autograd hands over another layout.
    grad = grad.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    dx = output_like(x)
    dshift = torch.empty(shift.shape, dtype=shift.dtype, device=shift.device) if shift is not None else None
    B, C, H, W = x.shape
    if x.numel() == 0:
        if dshift is not None:
            dshift.zero_()
        return dx, dshift
    shift_arg = shift.contiguous() if shift is not None else x
    compute_dtype = _compute_dtype(x, shift)
    config = backward_config(tuple(x.shape), x.dtype, channels_last, shift is not None, surrogate, compute_dtype)
    if channels_last:
        splits = config.grid[2]
        partial = torch.empty((splits, B, C), dtype=compute_dtype, device=x.device) if shift is not None else x
        launch(config, grad, x, shift_arg, k, t, dx, partial, B, C, H * W)
        if dshift is not None:
            dshift.copy_(partial.sum(dim=0))
    else:
        launch(config, grad, x, shift_arg, k, t, dx, dshift if dshift is not None else x, B * C, H * W)
    return dx, dshift

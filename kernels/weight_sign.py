"""Fused weight self-distribution sign: kernels and launchers.

forward:  out = sign(W + sigmoid(alpha_c) · 0.01 · mean(W_c)), the signed mean taken per output channel
backward: dW = g · surrogate'(W') and d(alpha_c) = sigmoid'(alpha_c) · 0.01 · mean(W_c) · Σ dW_c (mean is a constant)

A program owns whole output-channel rows (Cin·kh·kw elements, ≤ 4,608 in the paper's models; short rows are packed
several to a program, long ones walked in blocks), so the mean, the sign, dW and d(alpha) are all in-register
reductions. Each row of an NCHW or channels_last weight is one dense block (the order inside it does not matter to any
of these), so both layouts are read in place. The math runs in COMPUTE: fp32, or float64 when w or alpha is float64.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from sdbnn.kernels import tiles
from sdbnn.kernels.launches import LaunchConfig, launch
from sdbnn.kernels.layouts import dense, output_like
from sdbnn.kernels.surrogates import SURROGATE_CODES, check_schedule_scalars, compute_type, sign, surrogate_derivative
from sdbnn import reference
from sdbnn.reference import WSD_MEAN_FRACTION


MAX_ROW_ELEMENTS = 2**30  # 32-bit offsets inside a program's rows (plus one tile) cannot overflow


@triton.jit
def _row_shift(w_ptr, alpha_ptr, offsets, rows, cols, row_mask, ROW, MEAN_FRACTION: tl.constexpr,
               BLOCK_R: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr):
    """(shift, sigmoid(alpha), scaled signed mean) per row of the tile, each of shape [BLOCK_R]."""
    total = tl.zeros([BLOCK_R], dtype=COMPUTE)
    for start in range(0, ROW, BLOCK):
        block_mask = row_mask[:, None] & (cols[None, :] + start < ROW)
        total += tl.sum(tl.load(w_ptr + offsets + start, mask=block_mask, other=0.0).to(COMPUTE), axis=1)
    scaled_mean = MEAN_FRACTION * (total / ROW)
    gate = 1.0 / (1.0 + tl.exp(-tl.load(alpha_ptr + rows, mask=row_mask, other=0.0).to(COMPUTE)))
    return gate * scaled_mean, gate, scaled_mean


@triton.jit
def _forward_kernel(
    w_ptr, alpha_ptr, out_ptr, n_rows, ROW,
    HAS_ALPHA: tl.constexpr, MEAN_FRACTION: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK: tl.constexpr,
    COMPUTE: tl.constexpr,
):
    first_row = tl.program_id(0) * BLOCK_R
    first_element = first_row.to(tl.int64) * ROW
    w_ptr += first_element
    out_ptr += first_element
    rows = first_row + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    cols = tl.arange(0, BLOCK)
    offsets = tl.arange(0, BLOCK_R)[:, None] * ROW + cols[None, :]  # 32-bit inside the program's rows
    shift = tl.zeros([BLOCK_R], dtype=COMPUTE)
    if HAS_ALPHA:
        shift, _gate, _mean = _row_shift(w_ptr, alpha_ptr, offsets, rows, cols, row_mask, ROW, MEAN_FRACTION, BLOCK_R,
                                         BLOCK, COMPUTE)
    for start in range(0, ROW, BLOCK):
        block_mask = row_mask[:, None] & (cols[None, :] + start < ROW)
        v = tl.load(w_ptr + offsets + start, mask=block_mask, other=0.0).to(COMPUTE) + shift[:, None]
        tl.store(out_ptr + offsets + start, sign(v).to(out_ptr.dtype.element_ty), mask=block_mask)


@triton.jit
def _backward_kernel(
    g_ptr, w_ptr, alpha_ptr, k_ptr, t_ptr, dw_ptr, dalpha_ptr, n_rows, ROW,
    HAS_ALPHA: tl.constexpr, SURROGATE: tl.constexpr, MEAN_FRACTION: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK: tl.constexpr, COMPUTE: tl.constexpr,
):
    first_row = tl.program_id(0) * BLOCK_R
    first_element = first_row.to(tl.int64) * ROW
    g_ptr += first_element
    w_ptr += first_element
    dw_ptr += first_element
    rows = first_row + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    cols = tl.arange(0, BLOCK)
    offsets = tl.arange(0, BLOCK_R)[:, None] * ROW + cols[None, :]  # 32-bit inside the program's rows
    k = tl.load(k_ptr).to(COMPUTE)
    t = tl.load(t_ptr).to(COMPUTE)
    shift = tl.zeros([BLOCK_R], dtype=COMPUTE)
    gate = tl.zeros([BLOCK_R], dtype=COMPUTE)
    scaled_mean = tl.zeros([BLOCK_R], dtype=COMPUTE)
    if HAS_ALPHA:
        shift, gate, scaled_mean = _row_shift(w_ptr, alpha_ptr, offsets, rows, cols, row_mask, ROW, MEAN_FRACTION,
                                              BLOCK_R, BLOCK, COMPUTE)
    dw_total = tl.zeros([BLOCK_R], dtype=COMPUTE)
    for start in range(0, ROW, BLOCK):
        block_mask = row_mask[:, None] & (cols[None, :] + start < ROW)
        v = tl.load(w_ptr + offsets + start, mask=block_mask, other=0.0).to(COMPUTE) + shift[:, None]
        g = tl.load(g_ptr + offsets + start, mask=block_mask, other=0.0).to(COMPUTE)
        dw = tl.where(block_mask, g * surrogate_derivative(v, k, t, SURROGATE), 0.0)
        tl.store(dw_ptr + offsets + start, dw.to(dw_ptr.dtype.element_ty), mask=block_mask)
        dw_total += tl.sum(dw, axis=1)
    if HAS_ALPHA:
        dalpha = gate * (1.0 - gate) * scaled_mean * dw_total
        tl.store(dalpha_ptr + rows, dalpha.to(dalpha_ptr.dtype.element_ty), mask=row_mask)


def _check(w: torch.Tensor, alpha: torch.Tensor | None) -> None:
    if w.dim() < 2:
        raise ValueError(f"weight_sign expects a weight of shape (out_channels, ...), got {tuple(w.shape)}")
    if alpha is not None and tuple(alpha.shape) != (w.shape[0],):
        raise ValueError(f"alpha has shape {tuple(alpha.shape)}, expected (out_channels,) = ({w.shape[0]},)")
    if w[0].numel() > MAX_ROW_ELEMENTS:
        raise ValueError(f"weight_sign: one output channel holds {w[0].numel():,} weights; the kernels index inside "
                         f"a program's rows in 32 bits (at most {MAX_ROW_ELEMENTS:,})")


def _tile(shape: tuple[int, ...]) -> tuple[int, dict[str, int], int]:
    """(programs, tile constexprs, num_warps): short rows share a program, long rows are walked in blocks."""
    rows, row = shape[0], math.prod(shape[1:])
    tile = tiles.current().weight_tile
    block = min(triton.next_power_of_2(max(row, 1)), tile)
    block_r = max(1, min(tile // block, triton.next_power_of_2(rows)))
    return triton.cdiv(rows, block_r), {"BLOCK_R": block_r, "BLOCK": block}, tiles.num_warps(block_r * block)


def forward_config(shape: tuple[int, ...], dtype: torch.dtype, has_alpha: bool, out_dtype: torch.dtype | None = None,
                   compute_dtype: torch.dtype = torch.float32) -> LaunchConfig:
    """The forward launch for a weight of ``shape`` (out_channels, ...) stored in ``dtype``, math in
    ``compute_dtype``."""
    programs, tile, warps = _tile(shape)
    constexprs = {"HAS_ALPHA": has_alpha, "MEAN_FRACTION": WSD_MEAN_FRACTION, "COMPUTE": compute_type(compute_dtype)}
    return LaunchConfig(_forward_kernel, (programs,), {**constexprs, **tile}, warps)


def backward_config(shape: tuple[int, ...], dtype: torch.dtype, has_alpha: bool, surrogate: str,
                    compute_dtype: torch.dtype = torch.float32) -> LaunchConfig:
    programs, tile, warps = _tile(shape)
    constexprs = {"HAS_ALPHA": has_alpha, "SURROGATE": SURROGATE_CODES[surrogate], "MEAN_FRACTION": WSD_MEAN_FRACTION,
                  "COMPUTE": compute_type(compute_dtype)}
    return LaunchConfig(_backward_kernel, (programs,), {**constexprs, **tile}, warps)


def _compute_dtype(w: torch.Tensor, alpha: torch.Tensor | None) -> torch.dtype:
    return reference.compute_dtype(w.dtype, *([] if alpha is None else [alpha.dtype]))


def forward(w: torch.Tensor, alpha: torch.Tensor | None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """sign(W'), stored in ``out_dtype`` (default: w's dtype; autocast asks for the convolution's dtype)."""
    _check(w, alpha)
    w = dense(w)  # each output channel's row is then one dense block, in either layout
    out = output_like(w, out_dtype)
    if w.numel() == 0:
        return out
    config = forward_config(tuple(w.shape), w.dtype, alpha is not None, out_dtype, _compute_dtype(w, alpha))
    launch(config, w, alpha.contiguous() if alpha is not None else w, out, w.shape[0], w[0].numel())
    return out


def backward(
    grad: torch.Tensor, w: torch.Tensor, alpha: torch.Tensor | None, k: torch.Tensor, t: torch.Tensor, surrogate: str
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(dW, d(alpha)) in the dtypes of w and alpha (grad may be another dtype); d(alpha) is None when alpha is None.
    k and t must already be on w's device."""
    _check(w, alpha)
    check_schedule_scalars("weight_sign", k, t, w.device)
    w = dense(w)  # each output channel's row is then one dense block, in either layout
    if grad.stride() != w.stride():  # g must walk the same memory order as w
        grad = torch.empty_like(w, dtype=grad.dtype).copy_(grad)
    dw = output_like(w)
    dalpha = torch.empty(alpha.shape, dtype=alpha.dtype, device=alpha.device) if alpha is not None else None
    if w.numel() == 0:
        if dalpha is not None:
            dalpha.zero_()
        return dw, dalpha
    config = backward_config(tuple(w.shape), w.dtype, alpha is not None, surrogate, _compute_dtype(w, alpha))
    launch(config, grad, w, alpha.contiguous() if alpha is not None else w, k, t, dw,
           dalpha if dalpha is not None else w, w.shape[0], w[0].numel())
    return dw, dalpha

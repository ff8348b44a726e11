"""Fused weight self-distribution sign: kernels and launchers.

forward:  out = sign(W + sigmoid(alpha_c) · 0.01 · mean(W_c)), the signed mean taken per output channel
backward: dW = g · surrogate'(W') and d(alpha_c) = sigmoid'(alpha_c) · 0.01 · mean(W_c) · Σ dW_c (mean is a constant)

A program owns whole output-channel rows (Cin·kh·kw elements, ≤ 4,608 in the paper's models; short rows are packed
several to a program), so the mean, the sign, dW and d(alpha) are all in-register reductions. Each row of an NCHW or channels_last weight is one dense block
(the order inside it does not matter to any of these), so both layouts are read in place.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sdbnn.kernels import tiles
from sdbnn.kernels.layouts import dense, output_like
from sdbnn.kernels.surrogates import SURROGATE_CODES, check_schedule_scalars, sign, surrogate_derivative
from sdbnn.reference import WSD_MEAN_FRACTION


@triton.jit
def _row_shift(w_ptr, alpha_ptr, offsets, rows, cols, row_mask, ROW, MEAN_FRACTION: tl.constexpr,
               BLOCK_R: tl.constexpr, BLOCK: tl.constexpr):
    """(shift, sigmoid(alpha), scaled signed mean) per row of the tile, each of shape [BLOCK_R]."""
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, ROW, BLOCK):
        block_mask = row_mask[:, None] & (cols[None, :] + start < ROW)
        total += tl.sum(tl.load(w_ptr + offsets + start, mask=block_mask, other=0.0).to(tl.float32), axis=1)
    scaled_mean = MEAN_FRACTION * (total / ROW)
    gate = 1.0 / (1.0 + tl.exp(-tl.load(alpha_ptr + rows, mask=row_mask, other=0.0).to(tl.float32)))
    return gate * scaled_mean, gate, scaled_mean


@triton.jit
def _forward_kernel(
    w_ptr, alpha_ptr, out_ptr, n_rows, ROW,
    HAS_ALPHA: tl.constexpr, MEAN_FRACTION: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    cols = tl.arange(0, BLOCK)
    offsets = rows[:, None].to(tl.int64) * ROW + cols[None, :]
    shift = tl.zeros([BLOCK_R], dtype=tl.float32)
    if HAS_ALPHA:
        shift, _gate, _mean = _row_shift(w_ptr, alpha_ptr, offsets, rows, cols, row_mask, ROW, MEAN_FRACTION, BLOCK_R,
                                         BLOCK)
    for start in range(0, ROW, BLOCK):
        block_mask = row_mask[:, None] & (cols[None, :] + start < ROW)
        v = tl.load(w_ptr + offsets + start, mask=block_mask, other=0.0).to(tl.float32) + shift[:, None]
        tl.store(out_ptr + offsets + start, sign(v).to(out_ptr.dtype.element_ty), mask=block_mask)


@triton.jit
def _backward_kernel(
    g_ptr, w_ptr, alpha_ptr, k_ptr, t_ptr, dw_ptr, dalpha_ptr, n_rows, ROW,
    HAS_ALPHA: tl.constexpr, SURROGATE: tl.constexpr, MEAN_FRACTION: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < n_rows
    cols = tl.arange(0, BLOCK)
    offsets = rows[:, None].to(tl.int64) * ROW + cols[None, :]
    k = tl.load(k_ptr).to(tl.float32)
    t = tl.load(t_ptr).to(tl.float32)
    shift = tl.zeros([BLOCK_R], dtype=tl.float32)
    gate = tl.zeros([BLOCK_R], dtype=tl.float32)
    scaled_mean = tl.zeros([BLOCK_R], dtype=tl.float32)
    if HAS_ALPHA:
        shift, gate, scaled_mean = _row_shift(w_ptr, alpha_ptr, offsets, rows, cols, row_mask, ROW, MEAN_FRACTION,
                                              BLOCK_R, BLOCK)
    dw_total = tl.zeros([BLOCK_R], dtype=tl.float32)
    for start in range(0, ROW, BLOCK):
        block_mask = row_mask[:, None] & (cols[None, :] + start < ROW)
        v = tl.load(w_ptr + offsets + start, mask=block_mask, other=0.0).to(tl.float32) + shift[:, None]
        g = tl.load(g_ptr + offsets + start, mask=block_mask, other=0.0).to(tl.float32)
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


def _tile(row: int) -> tuple[int, int]:
    """(rows per program, row block): short rows share a program, long rows are walked in blocks."""
    tile = tiles.current().weight_tile
    block = min(triton.next_power_of_2(max(row, 1)), tile)
    return max(1, tile // block), block


def forward(w: torch.Tensor, alpha: torch.Tensor | None, out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """sign(W'), stored in ``out_dtype`` (default: w's dtype; autocast asks for the convolution's dtype)."""
    _check(w, alpha)
    w = dense(w)  # each output channel's row is then one dense block, in either layout
    out = output_like(w, out_dtype)
    if w.numel() == 0:
        return out
    row = w[0].numel()
    block_r, block = _tile(row)
    _forward_kernel[(triton.cdiv(w.shape[0], block_r),)](
        w, alpha.contiguous() if alpha is not None else w, out, w.shape[0], row,
        HAS_ALPHA=alpha is not None, MEAN_FRACTION=WSD_MEAN_FRACTION, BLOCK_R=block_r, BLOCK=block,
    )
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
    row = w[0].numel()
    block_r, block = _tile(row)
    _backward_kernel[(triton.cdiv(w.shape[0], block_r),)](
        grad, w, alpha.contiguous() if alpha is not None else w, k, t, dw,
        dalpha if dalpha is not None else w, w.shape[0], row,
        HAS_ALPHA=alpha is not None, SURROGATE=SURROGATE_CODES[surrogate],
        MEAN_FRACTION=WSD_MEAN_FRACTION, BLOCK_R=block_r, BLOCK=block,
    )
    return dw, dalpha

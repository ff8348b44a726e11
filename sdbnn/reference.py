"""Eager, differentiable reference math of SD-BNN (docs/method.md §SD conv, §Surrogate gradients).

This module is the single source of truth: layers compose these functions, and the fused kernels are tested
against them. Everything here is plain PyTorch autograd and runs on any device and dtype.
"""

from __future__ import annotations

import math

import torch
from einops import reduce

SURROGATES = ("ede", "approx", "clip", "ste")
"""Backward rules for sign: IR-Net's EDE, Bi-Real's ApproxSign, clip-STE, identity STE."""

WEIGHT_SCALES = ("none", "mean_abs", "pow2")
"""Optional per-output-channel weight scales (not SD-BNN, which uses none): XNOR mean|W'|, IR-Net 2^round(log2)."""

WSD_MEAN_FRACTION = 0.01
"""WSD shifts each filter by sigmoid(alpha_c) times this fraction of its signed mean."""

T_MAX = 10.0
"""Upper end of the EDE temperature schedule on every model."""


def check_surrogate(surrogate: str) -> None:
    if surrogate not in SURROGATES:
        raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {', '.join(SURROGATES)}")


def surrogate_derivative(
    x: torch.Tensor, surrogate: str, k: torch.Tensor | None = None, t: torch.Tensor | None = None
) -> torch.Tensor:
    """d sign(x)/dx as each surrogate defines it, in at least fp32: half types are computed in fp32, float64
    stays float64 (the caller casts back)."""
    check_surrogate(surrogate)
    x = x.to(compute_dtype(x.dtype))
    if surrogate == "ede":
        if k is None or t is None:
            raise ValueError("the 'ede' surrogate needs k and t (see sdbnn.set_ede / ede_schedule)")
        k, t = k.to(x.dtype), t.to(x.dtype)
        return k * t * (1.0 - torch.tanh(t * x) ** 2)
    if surrogate == "approx":
        inner = (x >= -1.0) & (x < 1.0)
        return torch.where(inner, 2.0 - 2.0 * x.abs(), torch.zeros_like(x))
    if surrogate == "clip":
        return (x.abs() <= 1.0).to(x.dtype)
    return torch.ones_like(x)  # ste


def compute_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype gradient math runs in: fp32 for fp32 and half types, float64 when any input is float64."""
    result = torch.float32
    for dtype in dtypes:
        result = torch.promote_types(result, dtype)
    return result


class _SignWithSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, k, t, surrogate):
        ctx.save_for_backward(x, k, t)
        ctx.surrogate = surrogate
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad_output):
        x, k, t = ctx.saved_tensors
        derivative = surrogate_derivative(x, ctx.surrogate, k, t)
        grad_x = grad_output.to(compute_dtype(grad_output.dtype, derivative.dtype)) * derivative
        return grad_x.to(grad_output.dtype), None, None, None


def sign_with_surrogate(
    x: torch.Tensor, surrogate: str = "ede", k: torch.Tensor | None = None, t: torch.Tensor | None = None
) -> torch.Tensor:
    """torch.sign(x) (so sign(0) = 0) whose backward is the chosen surrogate's derivative."""
    check_surrogate(surrogate)
    if surrogate == "ede" and (k is None or t is None):
        raise ValueError("the 'ede' surrogate needs k and t (see sdbnn.set_ede / ede_schedule)")
    return _SignWithSurrogate.apply(x, k, t, surrogate)


# --- activation self-distribution (ASD) ----------------------------------------------------------------------


def asd_dynamic_shift(x: torch.Tensor, reduce_weight: torch.Tensor, expand_weight: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel shift s[b, c] = sigmoid(W2 · relu(W1 · mean_hw(x))) in (0, 1)."""
    pooled = reduce(x, "b c h w -> b c", "mean")
    hidden = torch.relu(pooled @ reduce_weight.t())
    return torch.sigmoid(hidden @ expand_weight.t())


def asd_static_shift(beta: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Ablation variant: one learnable shift sigmoid(beta_c) per channel, shared by all samples."""
    return torch.sigmoid(beta).expand(batch_size, -1)


def act_sign(
    x: torch.Tensor,
    shift: torch.Tensor | None,
    k: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    surrogate: str = "ede",
) -> torch.Tensor:
    """sign(x[b, c, h, w] + shift[b, c]) with the surrogate gradient; shift=None binarizes x unshifted."""
    if shift is not None:
        if shift.shape != x.shape[:2]:
            raise ValueError(f"shift has shape {tuple(shift.shape)}, expected (batch, channels) = {tuple(x.shape[:2])}")
        x = x + shift[:, :, None, None]
    return sign_with_surrogate(x, surrogate, k, t)


# --- weight self-distribution (WSD) --------------------------------------------------------------------------


def _per_out_channel(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def wsd_shift_weight(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """W'_c = W_c + sigmoid(alpha_c) · 0.01 · mean(W_c); the signed mean is a constant (no gradient)."""
    signed_mean = WSD_MEAN_FRACTION * w.detach().flatten(1).mean(1)
    return w + _per_out_channel(torch.sigmoid(alpha) * signed_mean, w)


def wsd_alpha_grad(w: torch.Tensor, alpha: torch.Tensor, grad_shifted: torch.Tensor) -> torch.Tensor:
    """Closed form of dL/d(alpha_c) = sigmoid'(alpha_c) · 0.01·mean(W_c) · Σ dL/dW'_c (what autograd gives above)."""
    gate = torch.sigmoid(alpha)
    signed_mean = WSD_MEAN_FRACTION * w.flatten(1).mean(1)
    return gate * (1 - gate) * signed_mean * grad_shifted.flatten(1).sum(1)


def weight_sign(
    w: torch.Tensor,
    alpha: torch.Tensor | None,
    k: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    surrogate: str = "ede",
    scale: str = "none",
) -> torch.Tensor:
    """sign(W') with W' the WSD-shifted weight (alpha=None: no shift), optionally times a per-channel scale."""
    if scale not in WEIGHT_SCALES:
        raise ValueError(f"unknown weight scale {scale!r}; choose one of {', '.join(WEIGHT_SCALES)}")
    shifted = w if alpha is None else wsd_shift_weight(w, alpha)
    binary = sign_with_surrogate(shifted, surrogate, k, t)
    if scale == "none":
        return binary
    mean_abs = shifted.abs().flatten(1).mean(1)
    if scale == "pow2":
        mean_abs = torch.exp2(torch.round(torch.log2(mean_abs))).detach()
    return binary * _per_out_channel(mean_abs, w)


# --- EDE schedule --------------------------------------------------------------------------------------------


def ede_schedule(
    epoch: float, epochs: int, t_min: float, t_max: float = T_MAX, t_cap: float | None = None
) -> tuple[float, float]:
    """IR-Net's (k, t) for epoch e of E: t = Tmin·10^((e/E)·log10(Tmax/Tmin)), k = max(1/t, 1).

    ``epoch`` may be fractional (per-step schedules). k and t are recomputed from the epoch, never stored.
    ``t_cap`` (not in the paper) holds t at that value once the schedule reaches it, with k = max(1/t, 1) as
    usual: EDE's peak slope k·t then stays at max(t_cap, 1) (see docs/method.md §EDE schedule).
    """
    if epochs <= 0:
        raise ValueError(f"epochs must be positive, got {epochs}")
    if not 0 <= epoch <= epochs:
        raise ValueError(f"epoch {epoch} is outside [0, {epochs}]")
    if not 0 < t_min <= t_max:
        raise ValueError(f"need 0 < t_min <= t_max, got t_min={t_min}, t_max={t_max}")
    if t_cap is not None and t_cap <= 0:
        raise ValueError(f"t_cap must be positive, got {t_cap}")
    t = t_min * 10.0 ** ((epoch / epochs) * math.log10(t_max / t_min))
    if t_cap is not None:
        t = min(t, t_cap)
    return max(1.0 / t, 1.0), t

"""Triton device functions shared by the SD-BNN kernels: torch.sign and the surrogate derivatives.

Mirrors `sdbnn.reference.surrogate_derivative`; the codes below follow `reference.SURROGATES`.
"""

import torch
import triton
import triton.language as tl

from sdbnn.reference import SURROGATES

SURROGATE_CODES = {name: code for code, name in enumerate(SURROGATES)}  # ede 0, approx 1, clip 2, ste 3


@triton.jit
def sign(v):
    # v is 0 (or NaN) in the last branch, so this is torch.sign exactly: sign(0) = 0.
    return tl.where(v > 0, 1.0, tl.where(v < 0, -1.0, v))


def compute_type(dtype: torch.dtype) -> tl.dtype:
    """The kernels' math type (their COMPUTE constexpr) for the op layer's math dtype (`reference.compute_dtype`)."""
    return {torch.float32: tl.float32, torch.float64: tl.float64}[dtype]


@triton.jit
def surrogate_derivative(v, k, t, SURROGATE: tl.constexpr):
    """d sign(v)/dv in v's dtype (the kernel's COMPUTE); k and t are scalars of that dtype (used by EDE only)."""
    if SURROGATE == 0:
        # k·t·(1 − tanh²(t·v)) with 1 − tanh²(z) = 4e / (1 + e)², e = exp(−2|z|): overflow-free, and
        # the interpreter has no libdevice tanh.
        e = tl.exp(-2.0 * tl.abs(t * v))
        derivative = k * t * (4.0 * e / ((1.0 + e) * (1.0 + e)))
    elif SURROGATE == 1:
        derivative = tl.where((v >= -1.0) & (v < 1.0), 2.0 - 2.0 * tl.abs(v), 0.0)
    elif SURROGATE == 2:
        derivative = tl.where(tl.abs(v) <= 1.0, 1.0, 0.0).to(v.dtype)
    else:
        derivative = v * 0.0 + 1.0
    return derivative


def check_schedule_scalars(op: str, k: torch.Tensor, t: torch.Tensor, device: torch.device) -> None:
    """k and t are read through pointers, so they must be one-element tensors already on the kernel's device:
    copying them here would synchronise the host every step and break CUDA-graph capture."""
    for name, value in (("k", k), ("t", t)):
        if value.device != device or value.numel() != 1:
            raise ValueError(
                f"{op}: {name} must be a one-element tensor on the input's device ({device}), got shape "
                f"{tuple(value.shape)} on {value.device}; keep k and t as module buffers that move with the model "
                "(sdbnn.set_ede fills them in place)"
            )

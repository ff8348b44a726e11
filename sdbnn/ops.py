"""The op layer: SD-BNN's two fused ops as torch.library custom ops, and the one place that picks an implementation.

    torch.ops.sdbnn.act_sign(x, shift, k, t, surrogate)     -> sign(x + shift[b, c])
    torch.ops.sdbnn.weight_sign(w, alpha, k, t, surrogate)  -> sign(w + sigmoid(alpha)·0.01·mean_c(w))

plus their backward ops (``act_sign_backward``, ``weight_sign_backward``), each with a fake (meta) implementation
and autograd registered, so torch.compile keeps them inside one graph. ``shift`` / ``alpha`` may be None (ASD / WSD
off). ``k`` and ``t`` are 0-dim tensors on the input's device, so that changing them never recompiles and no step
copies them (a copy would synchronise the host and break CUDA-graph capture).

Under autocast, `weight_sign` returns the dtype the convolution will use (its ``out_dtype`` argument), so no cast
kernel runs per layer; the gradient of an fp32 weight stays fp32. Gradient math runs in fp32, float64 in float64.

Dispatch: CUDA tensors run the Triton kernels in `sdbnn.kernels`; CPU tensors run the reference math (the
functions of `sdbnn.reference`, in closed form, since autograd cannot run inside an op), or the Triton kernels when
``TRITON_INTERPRET=1`` so that tests exercise them. Eager CPU calls (not under torch.compile) run that same CPU math
through plain autograd Functions, without the custom ops' Python dispatch (see "the eager CPU path" below).
``with sdbnn.backend("reference"):`` bypasses the ops for pure-autograd debugging.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from sdbnn import reference
from sdbnn.kernels.layouts import is_dense, output_like

BACKENDS = ("ops", "reference")
_AUTOCAST_DEVICE_TYPES = ("cuda", "cpu")  # where the ops run; meta tensors (fakes, lazy init) have no autocast state
_backend = "ops"

try:  # triton ships with CUDA builds of torch; CPU-only installs run the reference math
    from sdbnn.kernels import act_sign as _act_kernels
    from sdbnn.kernels import weight_sign as _weight_kernels
except ImportError:  # pragma: no cover - depends on the install
    _act_kernels = _weight_kernels = None

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Choose how SD convs compute sign: "ops" (fused custom ops, the default) or "reference" (eager autograd)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def current_backend() -> str:
    return _backend


def uses_triton(tensor: Tensor) -> bool:
    """Whether the ops run Triton kernels for this tensor (CUDA, or CPU under TRITON_INTERPRET=1)."""
    if _act_kernels is None:
        return False
    return tensor.is_cuda or (_INTERPRET and tensor.device.type == "cpu")


def _empty_if_none(gradient: Tensor | None, like: Tensor) -> Tensor:
    # custom ops return tensors only; an absent input's gradient travels as an empty tensor
    return gradient if gradient is not None else like.new_empty(0)


# Both ops share one signature: (tensor, optional per-channel tensor, k, t, surrogate) -> sign of the shifted tensor;
# their backward ops return (d tensor, d per-channel tensor or empty).


def _forward_fake(value, per_channel, k, t, surrogate, out_dtype=None):
    return output_like(value, out_dtype)


def _backward_fake(grad, value, per_channel, k, t, surrogate):
    return output_like(value), (torch.empty_like(per_channel) if per_channel is not None else value.new_empty(0))


def _register_autograd(forward_op, backward_op) -> None:
    def setup_context(ctx, inputs, output):
        value, per_channel, k, t, surrogate, *options = inputs  # options: weight_sign's out_dtype
        ctx.save_for_backward(value, per_channel, k, t)
        ctx.surrogate, ctx.options = surrogate, len(options)

    def backward(ctx, grad):
        value, per_channel, k, t = ctx.saved_tensors
        d_value, d_per_channel = backward_op(grad, value, per_channel, k, t, ctx.surrogate)
        return d_value, (d_per_channel if per_channel is not None else None), None, None, None, *[None] * ctx.options

    forward_op.register_autograd(backward, setup_context=setup_context)


# --- CPU math --------------------------------------------------------------------------------------------------
# What the ops compute on CPU without Triton: the reference math in closed form (autograd cannot run inside an op).
# The custom ops' CPU kernels and the eager CPU path (`_EagerActSign`, `_EagerWeightSign`) both run these functions.


def _shifted_activation(x: Tensor, shift: Tensor | None) -> Tensor:
    """x + shift[b, c] in the gradient math's dtype (fp32; float64 for float64 inputs)."""
    dtype = reference.compute_dtype(x.dtype, *([] if shift is None else [shift.dtype]))
    return x.to(dtype) if shift is None else x.to(dtype) + shift.to(dtype)[:, :, None, None]


def _act_sign_cpu(x: Tensor, shift: Tensor | None) -> Tensor:
    if shift is None:
        return torch.sign(x, out=output_like(x))
    if reference.compute_dtype(x.dtype, shift.dtype) == x.dtype:  # fp32 / float64: add and sign in the output
        return torch.add(x, shift[:, :, None, None], out=output_like(x)).sign_()
    return output_like(x).copy_(torch.sign(_shifted_activation(x, shift)))


def _act_sign_grad_cpu(
    grad: Tensor, x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str, signs: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """(dx in x's dtype and layout, d(shift) or None). ``signs``: the forward's output, when the caller kept it."""
    shifted = _shifted_activation(x, shift)
    if surrogate == "ede":  # with a shift, `shifted` is a fresh buffer: the EDE passes overwrite it
        dx = _ede_grad(grad, shifted, k, t, signs, in_place=shift is not None)
    else:
        dx = grad.to(shifted.dtype) * reference.surrogate_derivative(shifted, surrogate, k, t)
    dshift = None if shift is None else dx.sum(dim=(2, 3)).to(shift.dtype)
    return _in_layout_of(dx, x), dshift


def _ede_grad(grad: Tensor, shifted: Tensor, k: Tensor, t: Tensor, signs: Tensor | None, in_place: bool) -> Tensor:
    """grad · k·t·(1 − tanh²(t·v)) for v = ``shifted`` (math dtype; overwritten when ``in_place``), the CPU training
    hot spot, as grad · 4k·t·σ(−2t|v|)·(1 − σ(−2t|v|)) in four or five passes over one buffer: on CPU, sigmoid is ~3×
    faster than tanh, and the formula written out allocates and sweeps memory twice as often. σ(1 − σ) is the same
    for ±v, and on the side σ ≤ ½ it has no cancellation in the tails. Given the forward's ``signs``, −2t|v| is
    −2t·v·sign(v) in one pass, bit for bit the same as |v| then × (−2t)."""
    # k and t rounded to the math dtype, then Python floats: their products are exact in double, so each scalar
    # rounds once to the math dtype in the kernel, as a product of 0-dim tensors would (without their dispatch)
    k, t = k.to(shifted.dtype).item(), t.to(shifted.dtype).item()
    out = shifted if in_place else None
    if signs is None:
        gate = torch.abs(shifted, out=out).mul_(-2 * t)
    else:
        gate = torch.addcmul(_ZERO, shifted, signs, value=-2 * t, out=out)
    gate.sigmoid_()
    torch.addcmul(gate, gate, gate, value=-1.0, out=gate)  # σ − σ² = σ(1 − σ)
    return torch.addcmul(_ZERO, gate, grad, value=4 * k * t, out=gate)  # 4k·t·σ(1 − σ)·grad


_ZERO = torch.zeros(())  # addcmul's addend for a plain product: 0-dim, so the other operands set the dtype


def _in_layout_of(result: Tensor, x: Tensor) -> Tensor:
    """``result`` when it already has the op output's dtype and strides (``output_like(x)``), else a copy into one."""
    if result.dtype == x.dtype and is_dense(x) and result.stride() == x.stride():
        return result
    return output_like(x).copy_(result)


def _shifted_weight(w: Tensor, alpha: Tensor | None) -> Tensor:
    """W' in the gradient math's dtype (fp32; float64 for float64 inputs)."""
    dtype = reference.compute_dtype(w.dtype, *([] if alpha is None else [alpha.dtype]))
    return w.to(dtype) if alpha is None else reference.wsd_shift_weight(w.to(dtype), alpha.to(dtype))


def _weight_sign_cpu(w: Tensor, shifted: Tensor, out_dtype: torch.dtype | None) -> Tensor:
    """sign(W') for W' = ``shifted``, in w's layout and ``out_dtype`` (default w's)."""
    out = output_like(w, out_dtype)
    return torch.sign(shifted, out=out) if out.dtype == shifted.dtype else out.copy_(torch.sign(shifted))


def _weight_sign_grad_cpu(
    grad: Tensor, w: Tensor, alpha: Tensor | None, shifted: Tensor, k: Tensor, t: Tensor, surrogate: str,
    signs: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """(dW in w's dtype and layout, d(alpha) or None) for W' = ``shifted`` (not overwritten)."""
    if surrogate == "ede":
        dw = _ede_grad(grad, shifted, k, t, signs, in_place=False)
    else:
        dw = grad.to(shifted.dtype) * reference.surrogate_derivative(shifted, surrogate, k, t)
    dalpha = None if alpha is None else reference.wsd_alpha_grad(w.to(dw.dtype), alpha.to(dw.dtype), dw).to(alpha.dtype)
    return _in_layout_of(dw, w), dalpha


# --- the custom ops -----------------------------------------------------------------------------------------


@torch.library.custom_op("sdbnn::act_sign", mutates_args=())
def _act_sign(x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str) -> Tensor:
    reference.check_surrogate(surrogate)
    if uses_triton(x):
        return _act_kernels.forward(x, shift)
    return _act_sign_cpu(x, shift)


_act_sign.register_fake(_forward_fake)


@torch.library.custom_op("sdbnn::act_sign_backward", mutates_args=())
def _act_sign_backward(
    grad: Tensor, x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str
) -> tuple[Tensor, Tensor]:
    if uses_triton(x):
        dx, dshift = _act_kernels.backward(grad, x, shift, k, t, surrogate)
    else:
        dx, dshift = _act_sign_grad_cpu(grad, x, shift, k, t, surrogate)
    return dx, _empty_if_none(dshift, x)


_act_sign_backward.register_fake(_backward_fake)
_register_autograd(_act_sign, torch.ops.sdbnn.act_sign_backward)


@torch.library.custom_op("sdbnn::weight_sign", mutates_args=())
def _weight_sign(
    w: Tensor, alpha: Tensor | None, k: Tensor, t: Tensor, surrogate: str, out_dtype: torch.dtype | None = None
) -> Tensor:
    """``out_dtype``: the output's dtype (default w's): autocast's, so the convolution needs no cast of its own."""
    reference.check_surrogate(surrogate)
    if uses_triton(w):
        return _weight_kernels.forward(w, alpha, out_dtype)
    return _weight_sign_cpu(w, _shifted_weight(w, alpha), out_dtype)


_weight_sign.register_fake(_forward_fake)


@torch.library.custom_op("sdbnn::weight_sign_backward", mutates_args=())
def _weight_sign_backward(
    grad: Tensor, w: Tensor, alpha: Tensor | None, k: Tensor, t: Tensor, surrogate: str
) -> tuple[Tensor, Tensor]:
    if uses_triton(w):
        dw, dalpha = _weight_kernels.backward(grad, w, alpha, k, t, surrogate)
    else:
        dw, dalpha = _weight_sign_grad_cpu(grad, w, alpha, _shifted_weight(w, alpha), k, t, surrogate)
    return dw, _empty_if_none(dalpha, w)


_weight_sign_backward.register_fake(_backward_fake)
_register_autograd(_weight_sign, torch.ops.sdbnn.weight_sign_backward)


# --- the eager CPU path ---------------------------------------------------------------------------------------
# A custom op called from Python pays for its Python dispatch (autograd wrapper, redispatch, a dynamo-disable guard,
# output checks): on this project's CPU a tiny act_sign forward+backward costs ~0.40 ms of CPU through the op and
# ~0.25 ms through a Function (weight_sign, which recomputes W' in its backward op, ~0.60 vs ~0.38 ms; the reference
# backend ~0.23 and ~0.35 ms), and ResNet-20 makes 36 such calls a step. So eager CPU training (no Triton, not
# compiling) runs the same CPU math through plain autograd Functions, which also keep what the backward can reuse:
# the sign (|v| = v·sign(v)) and W'.


def _eager_cpu(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu" and not uses_triton(tensor) and not torch.compiler.is_compiling()


class _EagerActSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, shift, k, t, surrogate):
        reference.check_surrogate(surrogate)
        signs = _act_sign_cpu(x, shift)
        ctx.save_for_backward(x, shift, k, t, signs)
        ctx.surrogate = surrogate
        return signs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, shift, k, t, signs = ctx.saved_tensors
        dx, dshift = _act_sign_grad_cpu(grad, x, shift, k, t, ctx.surrogate, signs)
        return dx, dshift, None, None, None


class _EagerWeightSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, alpha, k, t, surrogate):
        reference.check_surrogate(surrogate)
        shifted = _shifted_weight(w, alpha)
        signs = _weight_sign_cpu(w, shifted, None)
        ctx.save_for_backward(w, alpha, k, t, shifted, signs)
        ctx.surrogate = surrogate
        return signs

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        w, alpha, k, t, shifted, signs = ctx.saved_tensors
        dw, dalpha = _weight_sign_grad_cpu(grad, w, alpha, shifted, k, t, ctx.surrogate, signs)
        return dw, dalpha, None, None, None


# --- what layers call ----------------------------------------------------------------------------------------


def act_sign(x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str) -> Tensor:
    """sign(x + shift[b, c]) with the surrogate gradient, by the current backend."""
    if _backend == "reference":
        return reference.act_sign(x, shift, k, t, surrogate)
    if _eager_cpu(x):
        return _EagerActSign.apply(x, shift, k, t, surrogate)
    return torch.ops.sdbnn.act_sign(x, shift, k, t, surrogate)


def weight_sign(
    w: Tensor, alpha: Tensor | None, k: Tensor, t: Tensor, surrogate: str, scale: str = "none"
) -> Tensor:
    """sign(W') with W' the WSD-shifted weight (alpha None: unshifted), by the current backend.

    Under autocast the fused op returns autocast's dtype for w's device (what the convolution casts the weight to
    anyway: ±1 and 0 are exact in every float type), so no cast kernel runs per layer, forward or backward.
    Per-channel scales (ablations only) are not fused: they run the reference math on either backend.
    """
    if _backend == "reference" or scale != "none":
        return reference.weight_sign(w, alpha, k, t, surrogate, scale)
    out_dtype = autocast_dtype(w)
    if out_dtype is None and _eager_cpu(w):  # under autocast the op returns autocast's dtype without a cast kernel
        return _EagerWeightSign.apply(w, alpha, k, t, surrogate)
    return torch.ops.sdbnn.weight_sign(w, alpha, k, t, surrogate, out_dtype)


def autocast_dtype(tensor: Tensor) -> torch.dtype | None:
    """The dtype autocast casts ``tensor`` to for a convolution, or None when it leaves it alone (autocast off for
    its device type, float64, or already that dtype)."""
    device_type = tensor.device.type
    if tensor.dtype == torch.float64 or not tensor.is_floating_point() or device_type not in _AUTOCAST_DEVICE_TYPES:
        return None
    if not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.get_autocast_dtype(device_type)
    return None if dtype == tensor.dtype else dtype

"""The op layer: SD-BNN's two fused ops as torch.library custom ops, and the one place that picks an implementation.

    torch.ops.sdbnn.act_sign(x, shift, k, t, surrogate)     -> sign(x + shift[b, c])
    torch.ops.sdbnn.weight_sign(w, alpha, k, t, surrogate)  -> sign(w + sigmoid(alpha)·0.01·mean_c(w))

plus their backward ops (``act_sign_backward``, ``weight_sign_backward``), each with a fake (meta) implementation
and autograd registered, so torch.compile keeps them inside one graph. ``shift`` / ``alpha`` may be None (ASD / WSD
off). ``k`` and ``t`` are 0-dim tensors on the input's device, so that changing them never recompiles and no step
copies them (a copy would synchronise the host and break CUDA-graph capture).

Under autocast, `weight_sign` returns the dtype the convolution will use (its ``out_dtype`` argument), so no cast
kernel runs per layer; the gradient of an fp32 weight stays fp32. Gradient math runs in fp32, float64 in float64.

Three implementations, and one function that picks between them (`implementation`):

- ``"reference"``: `sdbnn.reference`'s autograd on the paper's formulas, the oracle everything is tested against;
- ``"cpu"``: the CPU math below, the same formulas in closed form inside the custom ops (autograd cannot run inside
  an op); what CPU training runs;
- ``"triton"``: the kernels of `sdbnn.kernels`, compiled on CUDA, interpreted on CPU (for tests).

The choice follows the tensor's device and one setting, ``with sdbnn.backend(name):`` — ``"ops"`` (the default: the
custom ops, running Triton on CUDA and the CPU math on CPU), ``"triton"`` (the custom ops running the Triton kernels on
every device: on CPU that needs ``TRITON_INTERPRET=1`` set before sdbnn is imported, since Triton decides
interpreter or compiler when a kernel is defined) or ``"reference"`` (no custom ops: the oracle's autograd).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from sdbnn import reference
from sdbnn.kernels.layouts import is_dense, output_like

BACKENDS = ("ops", "triton", "reference")  # the settings of `backend`
IMPLEMENTATIONS = ("reference", "cpu", "triton")  # what `implementation` returns
_AUTOCAST_DEVICE_TYPES = ("cuda", "cpu")  # where the ops run; meta tensors (fakes, lazy init) have no autocast state
_backend = "ops"

try:  # triton ships with CUDA builds of torch; CPU-only installs run the CPU math
    from sdbnn.kernels import act_sign as _act_kernels
    from sdbnn.kernels import weight_sign as _weight_kernels
except ImportError:  # pragma: no cover - depends on the install
    _act_kernels = _weight_kernels = None


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """Choose how SD convs compute sign: "ops" (the default: the fused custom ops, Triton on CUDA and the CPU math
    on CPU), "triton" (the custom ops on the Triton kernels everywhere: interpreted on CPU, for tests) or
    "reference" (the eager autograd oracle, for debugging)."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    if name == "triton" and not kernels_available(on_cpu=True):
        raise RuntimeError("backend 'triton' on CPU runs the kernels in Triton's interpreter: set TRITON_INTERPRET=1 "
                           "before sdbnn is imported (Triton decides when a kernel is defined)")
    previous, _backend = _backend, name
    try:
        yield
    finally:
        _backend = previous


def current_backend() -> str:
    return _backend


def kernels_available(on_cpu: bool = False) -> bool:
    """Whether the Triton kernels can run: imported, and for CPU tensors defined for the interpreter."""
    if _act_kernels is None:
        return False
    return not on_cpu or _act_kernels.interpreted()


def implementation(tensor: Tensor) -> str:
    """The one place that picks an implementation (one of `IMPLEMENTATIONS`) for an op on ``tensor``."""
    if _backend == "reference":
        return "reference"
    if _act_kernels is not None and (tensor.is_cuda or _backend == "triton"):
        return "triton"
    return "cpu"


def _empty_if_none(gradient: Tensor | None, like: Tensor) -> Tensor:
    # custom ops return tensors only; an absent input's gradient travels as an empty tensor
    return gradient if gradient is not None else like.new_empty(0)


# Both ops share one signature: (tensor, optional per-channel tensor, k, t, surrogate) -> sign of the shifted tensor;
# their backward ops return (d tensor, d per-channel tensor or empty).


def _forward_fake(value, per_channel, k, t, surrogate, out_dtype=None):
    return output_like(value, out_dtype)


def _backward_fake(grad, value, per_channel, k, t, surrogate):
    return output_like(value), (torch.empty_like(per_channel) if per_channel is not None else value.new_empty(0))


def _register_autograd(forward_op, backward_op, traced_backward=None) -> None:
    """``traced_backward``: what the backward is under torch.compile instead of ``backward_op`` (torch ops, which
    Inductor fuses with the kernels around them)."""
    def setup_context(ctx, inputs, output):
        value, per_channel, k, t, surrogate, *options = inputs  # options: weight_sign's out_dtype
        ctx.save_for_backward(value, per_channel, k, t)
        ctx.surrogate, ctx.options = surrogate, len(options)

    def backward(ctx, grad):
        value, per_channel, k, t = ctx.saved_tensors
        if traced_backward is not None and torch.compiler.is_compiling():
            d_value, d_per_channel = traced_backward(grad, value, per_channel, k, t, ctx.surrogate)
        else:
            d_value, d_per_channel = backward_op(grad, value, per_channel, k, t, ctx.surrogate)
        return d_value, (d_per_channel if per_channel is not None else None), None, None, None, *[None] * ctx.options

    forward_op.register_autograd(backward, setup_context=setup_context)


def _act_sign_grad_traced(grad: Tensor, x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str):
    """act_sign's backward under torch.compile: the reference's formulas in torch ops, so that Inductor computes the
    surrogate gradient inside the kernels that already read the incoming gradient (the activation's backward, the
    residual add, the shift's reduction) instead of a separate pass writing dx. Compiled for sm_90 without a GPU, this
    moves fewer bytes per step than the Triton backward in three of the four paper models, and removes one launch per
    binary layer (studies/results/cuda-graph/); the forward keeps the Triton kernel, which moves fewer bytes
    than Inductor's in every model."""
    shifted = _shifted_activation(x, shift)
    dx = grad.to(shifted.dtype) * reference.surrogate_derivative(shifted, surrogate, k, t)
    return dx.to(x.dtype), (None if shift is None else dx.sum(dim=(2, 3)).to(shift.dtype))


# --- CPU math --------------------------------------------------------------------------------------------------
# What the custom ops compute on CPU: the paper's formulas in closed form (autograd cannot run inside an op), with
# one EDE formula of its own (`_ede_grad`), tested against the reference's autograd in tests/test_cpu_path.py.


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
    grad: Tensor, x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str
) -> tuple[Tensor, Tensor | None]:
    """(dx in x's dtype and layout, d(shift) or None)."""
    shifted = _shifted_activation(x, shift)
    if surrogate == "ede":  # with a shift, `shifted` is a fresh buffer: the EDE passes overwrite it
        dx = _ede_grad(grad, shifted, k, t, in_place=shift is not None)
    else:
        dx = grad.to(shifted.dtype) * reference.surrogate_derivative(shifted, surrogate, k, t)
    dshift = None if shift is None else dx.sum(dim=(2, 3)).to(shift.dtype)
    return _in_layout_of(dx, x), dshift


def _ede_grad(grad: Tensor, shifted: Tensor, k: Tensor, t: Tensor, in_place: bool) -> Tensor:
    """grad · k·t·(1 − tanh²(t·v)) for v = ``shifted`` (math dtype; overwritten when ``in_place``), the CPU training
    hot spot, as grad · 4k·t·σ(−2t|v|)·(1 − σ(−2t|v|)) in five passes over one buffer: on CPU, sigmoid is ~3× faster
    than tanh, and the formula written out allocates and sweeps memory twice as often. σ(1 − σ) is the same for ±v,
    and on the side σ ≤ ½ it has no cancellation in the tails."""
    # k and t rounded to the math dtype, then Python floats: their products are exact in double, so each scalar
    # rounds once to the math dtype in the kernel, as a product of 0-dim tensors would (without their dispatch)
    k, t = k.to(shifted.dtype).item(), t.to(shifted.dtype).item()
    gate = torch.abs(shifted, out=shifted if in_place else None).mul_(-2 * t).sigmoid_()
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
    grad: Tensor, w: Tensor, alpha: Tensor | None, shifted: Tensor, k: Tensor, t: Tensor, surrogate: str
) -> tuple[Tensor, Tensor | None]:
    """(dW in w's dtype and layout, d(alpha) or None) for W' = ``shifted`` (not overwritten)."""
    if surrogate == "ede":
        dw = _ede_grad(grad, shifted, k, t, in_place=False)
    else:
        dw = grad.to(shifted.dtype) * reference.surrogate_derivative(shifted, surrogate, k, t)
    dalpha = None if alpha is None else reference.wsd_alpha_grad(w.to(dw.dtype), alpha.to(dw.dtype), dw).to(alpha.dtype)
    return _in_layout_of(dw, w), dalpha


# --- the custom ops -----------------------------------------------------------------------------------------


@torch.library.custom_op("sdbnn::act_sign", mutates_args=())
def _act_sign(x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str) -> Tensor:
    reference.check_surrogate(surrogate)
    if implementation(x) == "triton":
        return _act_kernels.forward(x, shift)
    return _act_sign_cpu(x, shift)


_act_sign.register_fake(_forward_fake)


@torch.library.custom_op("sdbnn::act_sign_backward", mutates_args=())
def _act_sign_backward(
    grad: Tensor, x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str
) -> tuple[Tensor, Tensor]:
    if implementation(x) == "triton":
        dx, dshift = _act_kernels.backward(grad, x, shift, k, t, surrogate)
    else:
        dx, dshift = _act_sign_grad_cpu(grad, x, shift, k, t, surrogate)
    return dx, _empty_if_none(dshift, x)


_act_sign_backward.register_fake(_backward_fake)
_register_autograd(_act_sign, torch.ops.sdbnn.act_sign_backward, _act_sign_grad_traced)


@torch.library.custom_op("sdbnn::weight_sign", mutates_args=())
def _weight_sign(
    w: Tensor, alpha: Tensor | None, k: Tensor, t: Tensor, surrogate: str, out_dtype: torch.dtype | None = None
) -> Tensor:
    """``out_dtype``: the output's dtype (default w's): autocast's, so the convolution needs no cast of its own."""
    reference.check_surrogate(surrogate)
    if implementation(w) == "triton":
        return _weight_kernels.forward(w, alpha, out_dtype)
    return _weight_sign_cpu(w, _shifted_weight(w, alpha), out_dtype)


_weight_sign.register_fake(_forward_fake)


@torch.library.custom_op("sdbnn::weight_sign_backward", mutates_args=())
def _weight_sign_backward(
    grad: Tensor, w: Tensor, alpha: Tensor | None, k: Tensor, t: Tensor, surrogate: str
) -> tuple[Tensor, Tensor]:
    if implementation(w) == "triton":
        dw, dalpha = _weight_kernels.backward(grad, w, alpha, k, t, surrogate)
    else:
        dw, dalpha = _weight_sign_grad_cpu(grad, w, alpha, _shifted_weight(w, alpha), k, t, surrogate)
    return dw, _empty_if_none(dalpha, w)


_weight_sign_backward.register_fake(_backward_fake)
_register_autograd(_weight_sign, torch.ops.sdbnn.weight_sign_backward)


# --- what layers call ----------------------------------------------------------------------------------------


def act_sign(x: Tensor, shift: Tensor | None, k: Tensor, t: Tensor, surrogate: str) -> Tensor:
    """sign(x + shift[b, c]) with the surrogate gradient, by the current backend."""
    if implementation(x) == "reference":
        return reference.act_sign(x, shift, k, t, surrogate)
    return torch.ops.sdbnn.act_sign(x, shift, k, t, surrogate)


def weight_sign(
    w: Tensor, alpha: Tensor | None, k: Tensor, t: Tensor, surrogate: str, scale: str = "none"
) -> Tensor:
    """sign(W') with W' the WSD-shifted weight (alpha None: unshifted), by the current backend.

    Under autocast the fused op returns autocast's dtype for w's device (what the convolution casts the weight to
    anyway: ±1 and 0 are exact in every float type), so no cast kernel runs per layer, forward or backward.
    Per-channel scales (ablations only) are not fused: they run the reference math on either backend.
    """
    if implementation(w) == "reference" or scale != "none":
        return reference.weight_sign(w, alpha, k, t, surrogate, scale)
    return torch.ops.sdbnn.weight_sign(w, alpha, k, t, surrogate, autocast_dtype(w))


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

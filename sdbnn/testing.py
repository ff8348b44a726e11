"""Kernel-vs-reference and whole-model comparisons, part of the library as `torch.testing` is of torch: used by the
CPU (interpreted) tests, the CUDA (`-m gpu`) tests and the GPU session's correctness stage.

Expected values are computed in float64 from the upcast inputs; fp32 results are also compared with the
reference's own autograd. Importable without Triton (CPU-only installs): then only the op path (``through="op"``,
the reference math on CPU) can be checked, and asking for the kernels is one clear error.
"""

import contextlib
import importlib.util
from pathlib import Path

import torch

import sdbnn.ops  # registers torch.ops.sdbnn
from sdbnn import reference
from sdbnn.layers import SDConv2d

try:  # triton ships with CUDA builds of torch; CPU-only installs have no kernels to check
    from sdbnn.kernels import act_sign as act_kernels
    from sdbnn.kernels import weight_sign as weight_kernels
except ImportError:  # pragma: no cover - depends on the install
    act_kernels = weight_kernels = None

ACT_SHAPES = [(1, 3, 5, 7), (2, 5, 1, 1), (3, 24, 7, 7), (1, 1, 9, 9), (2, 17, 13, 11)]
WEIGHT_SHAPES = [(1, 3, 3, 3), (5, 7, 1, 1), (16, 16, 3, 3), (24, 17, 5, 3), (3, 40)]
# channels_last exists for 4-D weights only
WEIGHT_CASES = [(shape, cl) for shape in WEIGHT_SHAPES for cl in [False, True][: 2 if len(shape) == 4 else 1]]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# fp32 matches the fp32 reference to rounding; bf16/fp16 store one rounding of the fp32 result (2^-8 / 2^-11 relative);
# float64 is computed in float64 (the kernels' exp form of 1 − tanh² against torch.tanh: ~1e-13 relative at most).
TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.bfloat16: (1.6e-2, 1e-5), torch.float16: (2e-3, 1e-6),
             torch.float64: (1e-12, 1e-15)}
# EDE's (k, t) at the schedule's start, end and middle (k = max(1/t, 1)): k·t is 1 at the start, so only k = 1000
# shows a kernel that drops k, and only k = 1 with t > 1 a kernel that drops t.
EDE_POINTS = [(torch.tensor(1000.0), torch.tensor(1e-3)), (torch.tensor(1.0), torch.tensor(2.5)),
              (torch.tensor(10.0), torch.tensor(0.1))]
EDE_POINT_IDS = ["k1000-t0.001", "k1-t2.5", "k10-t0.1"]
# every surrogate, EDE at each schedule point: (surrogate, (k, t)), with ids for pytest
SURROGATE_CASES = [("ede", point) for point in EDE_POINTS] + [(name, EDE_POINTS[1]) for name in reference.SURROGATES
                                                             if name != "ede"]
SURROGATE_CASE_IDS = [f"ede-{point}" for point in EDE_POINT_IDS] + [name for name in reference.SURROGATES
                                                                     if name != "ede"]


def foolbox_data() -> Path | None:
    """foolbox's folder of real test images (20 CIFAR-10 PNGs ``cifar10_NN_LABEL.png``, 20 ImageNet JPEGs
    ``imagenet_NN_LABEL.jpg``): real pixels without a download. None where foolbox is not installed."""
    spec = importlib.util.find_spec("foolbox")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "data"


def nonzero_random(shape, dtype, scale=1.5, device="cpu"):
    x = (torch.rand(shape, dtype=torch.float64) * 2 - 1) * scale
    return torch.where(x.abs() < 1e-3, torch.full_like(x, 0.25), x).to(dtype).to(device)


@contextlib.contextmanager
def poisoned_allocations():
    """Every fresh float buffer starts as NaN, so an element a kernel forgets to write fails the comparison."""
    empty_like, empty = torch.empty_like, torch.empty

    def poison(tensor):
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor

    torch.empty_like = lambda *args, **kwargs: poison(empty_like(*args, **kwargs))
    torch.empty = lambda *args, **kwargs: poison(empty(*args, **kwargs))
    try:
        yield
    finally:
        torch.empty_like, torch.empty = empty_like, empty


def derivative64(v, surrogate, k, t):
    """The surrogate derivative in float64 (EDE with tanh in float64, not the fp32 reference's rounding)."""
    if surrogate == "ede":
        k, t = k.double().cpu(), t.double().cpu()
        return k * t * (1 - torch.tanh(t * v) ** 2)
    return reference.surrogate_derivative(v, surrogate).double()


def assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOLERANCE[dtype]
    torch.testing.assert_close(actual.double().cpu(), expected, rtol=rtol, atol=atol * scale)


def _require_kernels() -> None:
    if act_kernels is None:
        raise RuntimeError("the Triton kernels cannot be checked: triton is not installed (check through='op')")


def _run_act(x, shift, grad, k, t, surrogate, through):
    """(out, dx, dshift) from the kernel launchers, or from the custom op through autograd."""
    if through == "kernel":
        _require_kernels()
        with poisoned_allocations():
            out = act_kernels.forward(x, shift)
            dx, dshift = act_kernels.backward(grad, x, shift, k, t, surrogate)
        return out, dx, dshift
    x_leaf, shift_leaf = x.clone().requires_grad_(), shift.clone().requires_grad_()
    with poisoned_allocations():
        out = torch.ops.sdbnn.act_sign(x_leaf, shift_leaf, k, t, surrogate)
        out.backward(grad)
    return out.detach(), x_leaf.grad, shift_leaf.grad


def check_act_sign(shape, channels_last, dtype, surrogate, device="cpu", through="kernel", ede=EDE_POINTS[1]):
    """Outputs and gradients against float64: of the kernel launchers (``through="kernel"``), or of the custom op
    through autograd (``through="op"``: whatever `sdbnn.ops.implementation` picks: Triton on CUDA, the CPU math
    or, under ``sdbnn.backend("triton")``, the interpreted kernels on CPU).
    ``ede``: EDE's (k, t) (stored in float64 for float64 inputs, as a float64 model holds them)."""
    k, t = (value.to(device, torch.float64 if dtype == torch.float64 else torch.float32) for value in ede)
    x = nonzero_random(shape, dtype, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    shift = torch.rand(shape[:2], dtype=torch.float64).to(dtype).to(device)
    grad = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    out, dx, dshift = _run_act(x, shift, grad, k, t, surrogate, through)
    shifted = x.double().cpu() + shift.double().cpu()[:, :, None, None]
    assert torch.equal(out.double().cpu(), torch.sign(shifted)) and out.dtype == dtype
    assert out.stride() == x.stride() and dx.stride() == x.stride()  # layout kept, no copy
    expected_dx = grad.double().cpu() * derivative64(shifted, surrogate, k, t)
    assert_close(dx, expected_dx, dtype)
    assert_close(dshift, expected_dx.sum(dim=(2, 3)), dtype, scale=shape[2] * shape[3])
    if dtype == torch.float32:  # against the reference's own autograd, too
        x_ref, shift_ref = x.clone().requires_grad_(), shift.clone().requires_grad_()
        reference.act_sign(x_ref, shift_ref, k, t, surrogate).backward(grad)
        torch.testing.assert_close(dx, x_ref.grad, rtol=1e-4, atol=1e-5)  # reference: fp32 1 − tanh² cancels
        torch.testing.assert_close(dshift, shift_ref.grad, rtol=1e-4, atol=1e-4)


def check_act_sign_kernel(shape, channels_last, dtype, surrogate, device="cpu", ede=EDE_POINTS[1]):
    check_act_sign(shape, channels_last, dtype, surrogate, device, through="kernel", ede=ede)


def _run_weight(w, alpha, grad, k, t, surrogate, through, out_dtype):
    if through == "kernel":
        _require_kernels()
        with poisoned_allocations():
            out = weight_kernels.forward(w, alpha, out_dtype)
            dw, dalpha = weight_kernels.backward(grad, w, alpha, k, t, surrogate)
        return out, dw, dalpha
    w_leaf, alpha_leaf = w.clone().requires_grad_(), alpha.clone().requires_grad_()
    with poisoned_allocations():
        out = torch.ops.sdbnn.weight_sign(w_leaf, alpha_leaf, k, t, surrogate, out_dtype)
        out.backward(grad)
    return out.detach(), w_leaf.grad, alpha_leaf.grad


def check_weight_sign(shape, channels_last, dtype, surrogate, device="cpu", through="kernel", out_dtype=None,
                      ede=EDE_POINTS[1]):
    """Like `check_act_sign`. ``out_dtype`` (autocast's): the sign is stored in it and the incoming gradient has it,
    while dW and d(alpha) keep the weight's dtype."""
    k, t = (value.to(device, torch.float64 if dtype == torch.float64 else torch.float32) for value in ede)
    w = nonzero_random(shape, dtype, scale=0.3, device=device)
    if channels_last:
        w = w.to(memory_format=torch.channels_last)
    alpha = torch.randn(shape[0], dtype=torch.float64).to(dtype).to(device)
    # NCHW even for a channels_last w: the launcher copies it into w's layout
    grad = torch.randn(shape, dtype=torch.float64).to(out_dtype or dtype).to(device)
    out, dw, dalpha = _run_weight(w, alpha, grad, k, t, surrogate, through, out_dtype)
    w64, a64 = w.double().cpu(), alpha.double().cpu()
    signed_mean = 0.01 * w64.flatten(1).mean(1)
    shifted = w64 + (torch.sigmoid(a64) * signed_mean).view(-1, *[1] * (w.dim() - 1))
    assert torch.equal(out.double().cpu(), torch.sign(shifted)) and out.stride() == w.stride()
    assert out.dtype == (out_dtype or dtype) and dw.dtype == dtype and dalpha.dtype == dtype
    expected_dw = grad.double().cpu() * derivative64(shifted, surrogate, k, t)
    assert_close(dw, expected_dw, dtype)
    gate = torch.sigmoid(a64)
    expected_dalpha = gate * (1 - gate) * signed_mean * expected_dw.flatten(1).sum(1)
    # d(alpha) is ~1e-5 here (it carries the 0.01·mean factor): fp16 holds such values as subnormals (step 6e-8).
    assert_close(dalpha, expected_dalpha, dtype, scale=0.1 if dtype == torch.float16 else 0.01)
    if dtype == torch.float32:
        w_ref, a_ref = w.clone().requires_grad_(), alpha.clone().requires_grad_()
        reference.weight_sign(w_ref, a_ref, k, t, surrogate).backward(grad.to(dtype))
        torch.testing.assert_close(dw, w_ref.grad, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(dalpha, a_ref.grad, rtol=1e-4, atol=1e-9)


def check_weight_sign_kernel(shape, channels_last, dtype, surrogate, device="cpu", out_dtype=None, ede=EDE_POINTS[1]):
    check_weight_sign(shape, channels_last, dtype, surrogate, device, through="kernel", out_dtype=out_dtype, ede=ede)


# --- whole models: a training step of the fused ops (compiled) against the reference ---------------------------------

# fp32: each gradient's largest error against its own largest value. Compiled code reorders float sums (1e-5 to 2e-4
# of the scale seen here); a wrong backward is off by O(1) of it.
FP32_GRAD_RTOL = 1e-3
# bf16 autocast: the model with the fused ops against the same weights on the reference backend, both under bf16
# autocast (never against fp32: a binary network at bf16 flips signs near 0 and ends somewhere else — the fp32 numbers
# are recorded to show how far, not used as a limit). Inductor's fusions round differently from eager bf16 and flip a
# few signs, which moves gradients by a few percent overall, and some small, cancellation-prone tensors
# (d(alpha) = c·Σ dW) by more. A wrong gradient (surrogate, d(shift), d(alpha), a lost dtype) is off by O(1) across
# every layer of its kind: every gate, every alpha (≥ 1/6 of the tensors) or the weights (most of the norm).
BF16_LOSS_RTOL = 0.02  # |Δloss| / |loss|
BF16_GLOBAL_GRAD_RTOL = 0.10  # ‖ΔG‖ / ‖G‖ over all parameters together
BF16_PARAMETER_GRAD_RTOL = 0.3  # one parameter tensor's ‖Δg‖ / ‖g‖ ...
BF16_PARAMETERS_OVER_SHARE = 0.05  # ... which at most this share of the tensors may exceed


def spread_binary_weights(model: torch.nn.Module, std: float = 0.05) -> None:
    """Normal weights in every SD convolution. The official ImageNet init (uniform [0, 1e-3)) gives each filter one
    sign, so d(alpha) = c·Σ dW cancels to rounding noise, in any two implementations alike; spread weights make the
    gradients a meaningful comparison."""
    for module in model.modules():
        if isinstance(module, SDConv2d):
            torch.nn.init.normal_(module.weight, 0.0, std)


def loss_and_gradients(module, images, labels, *, forward=None, backend="ops", autocast=False):
    """(loss, {parameter: fp32 gradient}) of one cross-entropy step of ``module``, called through ``forward`` (its
    compiled wrapper) when given, on the ops ``backend``, under bf16 autocast when asked. Leaves no gradients."""
    module.zero_grad(set_to_none=True)
    with sdbnn.ops.backend(backend), torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=autocast):
        loss = torch.nn.functional.cross_entropy((module if forward is None else forward)(images), labels)
    loss.backward()
    grads = {name: p.grad.detach().float().clone() for name, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return loss.item(), grads


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """‖actual − expected‖ / ‖expected‖ (against an all-zero expectation, any difference counts as 1)."""
    scale, difference = expected.norm().item(), (actual - expected).norm().item()
    return difference / scale if scale > 0 else float(difference > 0)


def assert_gradients_close(actual: dict, expected: dict, rtol: float = FP32_GRAD_RTOL) -> None:
    """Every parameter's gradient within ``rtol`` of its own largest value (see FP32_GRAD_RTOL)."""
    assert actual.keys() == expected.keys(), sorted(actual.keys() ^ expected.keys())
    for name, want in expected.items():
        error, scale = (actual[name] - want).abs().max().item(), want.abs().max().item()
        assert error <= rtol * scale + 1e-7, f"{name}: max error {error:.3g} against scale {scale:.3g}"


def bf16_gradient_check(grads: dict, reference_grads: dict, fp32_grads: dict) -> dict:
    """Gradients under bf16 autocast against the reference backend's under bf16 autocast, by the BF16_* limits:
    the error of all of them together, of each tensor (the five worst listed), and which exceed the per-tensor
    limit; ``fp32_grads`` (the reference in fp32) shows what bf16 itself changes."""
    if grads.keys() != reference_grads.keys():
        raise AssertionError(f"gradients of different parameters: {sorted(grads.keys() ^ reference_grads.keys())}")
    names = [key for key in reference_grads if reference_grads[key].norm() > 0]

    def flat(gradients):
        return torch.cat([gradients[key].flatten() for key in names])

    per_parameter = sorted(({"parameter": key, "error": relative_error(grads[key], reference_grads[key]),
                             "bf16_vs_fp32": relative_error(reference_grads[key], fp32_grads[key])} for key in names),
                           key=lambda item: item["error"], reverse=True)
    over = [item["parameter"] for item in per_parameter if item["error"] > BF16_PARAMETER_GRAD_RTOL]
    error = relative_error(flat(grads), flat(reference_grads))
    return {"relative_error": error, "limit": BF16_GLOBAL_GRAD_RTOL,
            "bf16_vs_fp32": relative_error(flat(reference_grads), flat(fp32_grads)), "parameters": len(names),
            "parameters_over": over, "parameters_over_limit": BF16_PARAMETERS_OVER_SHARE, "worst": per_parameter[:5],
            "passed": error <= BF16_GLOBAL_GRAD_RTOL and len(over) <= BF16_PARAMETERS_OVER_SHARE * len(names)}

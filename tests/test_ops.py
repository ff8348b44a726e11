"""Fused kernels and the op layer against the reference math (CPU, Triton interpreter)."""

import pytest
import torch

import sdbnn
from sdbnn import ops, reference
from sdbnn.kernels import act_sign as act_kernels
from sdbnn.kernels import weight_sign as weight_kernels

from kernel_checks import (
    ACT_SHAPES,
    DTYPES,
    EDE_POINTS,
    WEIGHT_CASES,
    check_act_sign_kernel,
    check_weight_sign_kernel,
    nonzero_random,
    poisoned_allocations,
)


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", ACT_SHAPES, ids=str)
def test_act_sign_kernel_matches_reference(shape, channels_last, dtype, surrogate):
    check_act_sign_kernel(shape, channels_last, dtype, surrogate)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_act_sign_kernel_without_shift_and_multi_block(channels_last, monkeypatch):
    monkeypatch.setattr(act_kernels, "_ELEMENTS_PER_PROGRAM", 64)  # walk H·W in several blocks
    monkeypatch.setattr(act_kernels, "_FORWARD_BLOCK", 64)
    monkeypatch.setattr(act_kernels, "_TARGET_PROGRAMS", 64)  # channels_last: H·W split over programs
    k, t = EDE_POINTS[0]
    x = nonzero_random((2, 6, 11, 9), torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grad = torch.randn(x.shape)
    shift = torch.rand(2, 6)
    with poisoned_allocations():
        assert torch.equal(act_kernels.forward(x, None), torch.sign(x))
        dx, dshift = act_kernels.backward(grad, x, None, k, t, "ede")
        dx_shifted, dshift_shifted = act_kernels.backward(grad, x, shift, k, t, "ede")
    assert dshift is None
    torch.testing.assert_close(dx, grad * reference.surrogate_derivative(x, "ede", k, t))
    expected = grad * reference.surrogate_derivative(x + shift[:, :, None, None], "ede", k, t)
    torch.testing.assert_close(dx_shifted, expected)
    torch.testing.assert_close(dshift_shifted, expected.sum(dim=(2, 3)), rtol=1e-5, atol=1e-4)


def test_act_sign_kernel_accepts_other_grad_layout_and_strided_views():
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 8, 6, 6), torch.float32).to(memory_format=torch.channels_last)
    grad = torch.randn(x.shape)  # NCHW gradient for an NHWC input
    shift = torch.rand(2, 8)
    dx, _ = act_kernels.backward(grad, x, shift, k, t, "approx")
    torch.testing.assert_close(dx, grad * reference.surrogate_derivative(x + shift[:, :, None, None], "approx"))
    view = nonzero_random((2, 8, 12, 6), torch.float32)[:, :, ::2]  # neither NCHW- nor NHWC-dense
    assert torch.equal(act_kernels.forward(view, shift), torch.sign(view + shift[:, :, None, None]))


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,channels_last", WEIGHT_CASES, ids=str)
def test_weight_sign_kernel_matches_reference(shape, channels_last, dtype, surrogate):
    check_weight_sign_kernel(shape, channels_last, dtype, surrogate)


def test_weight_sign_kernel_long_rows_and_no_alpha(monkeypatch):
    monkeypatch.setattr(weight_kernels, "_TILE", 32)  # rows of 45 walked in two blocks, one row per program
    k, t = EDE_POINTS[1]
    w = nonzero_random((7, 5, 3, 3), torch.float32, scale=0.3)
    alpha, grad = torch.randn(7), torch.randn(7, 5, 3, 3)
    with poisoned_allocations():
        out = weight_kernels.forward(w, alpha)
        dw, dalpha = weight_kernels.backward(grad, w, alpha, k, t, "ede")
        plain = weight_kernels.forward(w, None)
        dw_plain, none = weight_kernels.backward(grad, w, None, k, t, "clip")
    w_ref, a_ref = w.clone().requires_grad_(), alpha.clone().requires_grad_()
    expected = reference.weight_sign(w_ref, a_ref, k, t, "ede")
    expected.backward(grad)
    assert torch.equal(out, expected.detach())
    torch.testing.assert_close(dw, w_ref.grad)
    torch.testing.assert_close(dalpha, a_ref.grad, rtol=1e-5, atol=1e-9)
    assert torch.equal(plain, torch.sign(w)) and none is None
    torch.testing.assert_close(dw_plain, grad * (w.abs() <= 1))


def test_kernels_reject_bad_shapes():
    with pytest.raises(ValueError, match="shift has shape"):
        act_kernels.forward(torch.randn(2, 3, 4, 4), torch.rand(3, 2))
    with pytest.raises(ValueError, match="alpha has shape"):
        weight_kernels.forward(torch.randn(4, 3, 3, 3), torch.rand(3))


# --- the op layer ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["triton", "cpu-reference"])
def op_path(request, monkeypatch):
    """Both CPU implementations of the ops: interpreted Triton kernels, and the reference math."""
    monkeypatch.setattr(ops, "_INTERPRET", request.param == "triton")
    assert ops.uses_triton(torch.zeros(1)) == (request.param == "triton")
    return request.param


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("with_shift", [True, False], ids=["shift", "no-shift"])
def test_ops_autograd_matches_reference_backend(op_path, channels_last, with_shift):
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 6, 5, 3), torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    shift = torch.rand(2, 6) if with_shift else None
    w, alpha = nonzero_random((4, 6, 3, 3), torch.float32, 0.3), torch.randn(4)
    results = {}
    for backend in ops.BACKENDS:
        leaves = [tensor.clone().requires_grad_() if tensor is not None else None for tensor in (x, shift, w, alpha)]
        xl, sl, wl, al = leaves
        with sdbnn.backend(backend):
            a = ops.act_sign(xl, sl, k, t, "ede")
            b = ops.weight_sign(wl, al, k, t, "clip")
        (torch.nn.functional.conv2d(a, b, padding=1) ** 2).sum().backward()
        results[backend] = [a, b] + [leaf.grad for leaf in leaves if leaf is not None]
        assert a.stride() == x.stride()
    # The reference evaluates the official 1 − tanh² in fp32, which cancels where tanh → 1 (relative error up to
    # ~1e-4 there); the kernels' exp form does not. Per element, both are checked against float64 above.
    for got, expected in zip(results["ops"], results["reference"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck(op_path, channels_last):
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 5, 3, 4), torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    shift = torch.rand(2, 5, requires_grad=True)
    w = nonzero_random((4, 5, 3, 3), torch.float32, 0.3)
    if channels_last:
        w = w.to(memory_format=torch.channels_last)
    w.requires_grad_()
    alpha = torch.randn(4, requires_grad=True)
    grad = torch.randn(x.shape)
    cases = [
        (torch.ops.sdbnn.act_sign.default, (x, shift, k, t, "ede")),
        (torch.ops.sdbnn.act_sign.default, (x, None, k, t, "approx")),
        (torch.ops.sdbnn.act_sign_backward.default, (grad, x.detach(), shift.detach(), k, t, "ede")),
        (torch.ops.sdbnn.weight_sign.default, (w, alpha, k, t, "clip")),
        (torch.ops.sdbnn.weight_sign.default, (w, None, k, t, "ede")),
        (torch.ops.sdbnn.weight_sign_backward.default, (torch.randn(w.shape), w.detach(), alpha.detach(), k, t, "ede")),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_backend_switch():
    assert ops.current_backend() == "ops"
    with sdbnn.backend("reference"):
        assert ops.current_backend() == "reference"
    assert ops.current_backend() == "ops"
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        with sdbnn.backend("cuda"):
            pass

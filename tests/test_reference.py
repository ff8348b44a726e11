"""The reference math against the closed forms of docs/method.md §SD conv and §Surrogate gradients, in float64."""

import math

import pytest
import torch

from sdbnn import reference

EDE_POINTS = [(1000.0, 1e-3), (10.0, 0.1), (1.0, 1.0), (1.0, 9.82)]


def random_nonzero(*shape, scale=1.5, dtype=torch.float32):
    x = (torch.rand(*shape, dtype=torch.float64) * 2 - 1) * scale
    x = torch.where(x.abs() < 1e-3, torch.full_like(x, 0.5), x)
    return x.to(dtype)


def sign_grad(x, surrogate, k=None, t=None):
    x = x.clone().requires_grad_(True)
    g = torch.randn_like(x)
    out = reference.sign_with_surrogate(x, surrogate, k, t)
    (out * g).sum().backward()
    return out, x.grad, g


def test_sign_of_zero_is_zero_and_values_are_pm1():
    x = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 3.0])
    for surrogate in reference.SURROGATES:
        out = reference.sign_with_surrogate(x, surrogate, torch.tensor(1.0), torch.tensor(1.0))
        assert out.tolist() == [-1.0, -1.0, 0.0, 1.0, 1.0]


@pytest.mark.parametrize("k,t", EDE_POINTS)
def test_ede_gradient_matches_closed_form(k, t):
    x = random_nonzero(7, 5, 3, scale=3.0)
    out, grad, g = sign_grad(x, "ede", torch.tensor(k), torch.tensor(t))
    x64 = x.double()
    expected = g.double() * k * t * (1 - torch.tanh(t * x64) ** 2)
    torch.testing.assert_close(grad.double(), expected, rtol=1e-5, atol=1e-6 * k * t)
    assert torch.equal(out, torch.sign(x))


def test_approxsign_gradient_pieces():
    x = torch.tensor([-1.5, -1.0, -0.75, -0.25, 0.0, 0.25, 0.75, 0.999, 1.0, 1.5])
    _, grad, g = sign_grad(x, "approx")
    expected = []
    for value, weight in zip(x.tolist(), g.tolist()):
        if -1 <= value < 0:
            expected.append(weight * (2 + 2 * value))
        elif 0 <= value < 1:
            expected.append(weight * (2 - 2 * value))
        else:
            expected.append(0.0)
    torch.testing.assert_close(grad, torch.tensor(expected))
    assert grad[4] == 2 * g[4]  # the peak at 0


def test_clip_ste_and_identity_ste():
    x = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.7, 1.0, 1.01])
    _, grad, g = sign_grad(x, "clip")
    torch.testing.assert_close(grad, g * torch.tensor([0.0, 1, 1, 1, 1, 1, 0]))
    _, grad, g = sign_grad(x, "ste")
    torch.testing.assert_close(grad, g)


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
def test_act_sign_shift_gradient_is_spatial_sum(surrogate):
    k, t = torch.tensor(10.0), torch.tensor(0.1)
    x = random_nonzero(3, 5, 7, 3).requires_grad_(True)
    shift = torch.rand(3, 5, dtype=torch.float32).requires_grad_(True)
    out = reference.act_sign(x, shift, k, t, surrogate)
    g = torch.randn_like(out)
    (out * g).sum().backward()
    shifted = (x.detach() + shift.detach()[:, :, None, None]).double()
    delta = g.double() * reference.surrogate_derivative(shifted, surrogate, k, t).double()
    assert torch.equal(out, torch.sign(x.detach() + shift.detach()[:, :, None, None]))
    torch.testing.assert_close(x.grad.double(), delta, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(shift.grad.double(), delta.sum(dim=(2, 3)), rtol=1e-5, atol=1e-5)


def test_act_sign_rejects_mismatched_shift():
    with pytest.raises(ValueError, match="shift has shape"):
        reference.act_sign(torch.randn(2, 3, 4, 4), torch.rand(2, 4), surrogate="ste")


@pytest.mark.parametrize("k,t", EDE_POINTS[1:3])
def test_weight_sign_alpha_and_weight_gradients(k, t):
    k, t = torch.tensor(k), torch.tensor(t)
    w = random_nonzero(6, 5, 3, 3, scale=0.3).requires_grad_(True)
    alpha = torch.randn(6).requires_grad_(True)
    out = reference.weight_sign(w, alpha, k, t, "ede")
    g = torch.randn_like(out)
    (out * g).sum().backward()
    w64, a64 = w.detach().double(), alpha.detach().double()
    m = 0.01 * w64.flatten(1).mean(1)
    shifted = w64 + (torch.sigmoid(a64) * m)[:, None, None, None]
    assert torch.equal(out.double(), torch.sign(shifted))
    dx = g.double() * k.double() * t.double() * (1 - torch.tanh(t.double() * shifted) ** 2)
    torch.testing.assert_close(w.grad.double(), dx, rtol=1e-5, atol=1e-7)  # the mean is a constant
    sig = torch.sigmoid(a64)
    expected_alpha = sig * (1 - sig) * m * dx.flatten(1).sum(1)
    torch.testing.assert_close(alpha.grad.double(), expected_alpha, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
def test_float64_gradients_stay_float64(surrogate):
    # A float64 model is how equality with the official code is proven: no fp32 step may hide in its gradients.
    k, t = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.5, dtype=torch.float64)
    x = random_nonzero(2, 3, 5, 4, dtype=torch.float64).requires_grad_(True)
    shift = torch.rand(2, 3, dtype=torch.float64).requires_grad_(True)
    w = random_nonzero(4, 3, 3, 3, scale=0.3, dtype=torch.float64).requires_grad_(True)
    alpha = torch.randn(4, dtype=torch.float64).requires_grad_(True)
    g_act, g_weight = torch.randn(x.shape, dtype=torch.float64), torch.randn(w.shape, dtype=torch.float64)
    reference.act_sign(x, shift, k, t, surrogate).backward(g_act)
    reference.weight_sign(w, alpha, k, t, surrogate).backward(g_weight)

    def derivative(v):  # docs/method.md §EDE: closed forms, written out independently of reference.surrogate_derivative
        return {"ede": k * t * (1 - torch.tanh(t * v) ** 2),
                "approx": torch.where((v >= -1) & (v < 1), 2 - 2 * v.abs(), torch.zeros_like(v)),
                "clip": (v.abs() <= 1).double(), "ste": torch.ones_like(v)}[surrogate]

    dx = g_act * derivative(x.detach() + shift.detach()[:, :, None, None])
    assert x.grad.dtype == torch.float64 and shift.grad.dtype == torch.float64
    torch.testing.assert_close(x.grad, dx, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(shift.grad, dx.sum(dim=(2, 3)), rtol=1e-12, atol=1e-14)
    gate, signed_mean = torch.sigmoid(alpha.detach()), 0.01 * w.detach().flatten(1).mean(1)
    dw = g_weight * derivative(w.detach() + (gate * signed_mean)[:, None, None, None])
    torch.testing.assert_close(w.grad, dw, rtol=1e-12, atol=1e-14)
    dalpha = gate * (1 - gate) * signed_mean * dw.flatten(1).sum(1)
    torch.testing.assert_close(alpha.grad, dalpha, rtol=1e-12, atol=1e-16)


def test_weight_scales():
    w = random_nonzero(4, 3, 3, 3, scale=0.2)
    shifted = reference.wsd_shift_weight(w, torch.zeros(4))
    mean_abs = shifted.abs().flatten(1).mean(1)[:, None, None, None]
    out = reference.weight_sign(w, torch.zeros(4), surrogate="ste", scale="mean_abs")
    torch.testing.assert_close(out, torch.sign(shifted) * mean_abs)
    out = reference.weight_sign(w, torch.zeros(4), surrogate="ste", scale="pow2")
    torch.testing.assert_close(out, torch.sign(shifted) * 2.0 ** torch.round(torch.log2(mean_abs)))
    with pytest.raises(ValueError, match="unknown weight scale"):
        reference.weight_sign(w, None, surrogate="ste", scale="l2")


def test_asd_shifts():
    x = torch.randn(2, 16, 5, 5)
    w1, w2 = torch.randn(1, 16), torch.randn(16, 1)
    s = reference.asd_dynamic_shift(x, w1, w2)
    pooled = x.double().mean(dim=(2, 3))
    expected = torch.sigmoid(torch.relu(pooled @ w1.double().t()) @ w2.double().t())
    torch.testing.assert_close(s.double(), expected)
    assert s.shape == (2, 16) and (s > 0).all() and (s < 1).all()
    static = reference.asd_static_shift(torch.zeros(16), batch_size=3)
    assert static.shape == (3, 16) and torch.all(static == 0.5)


def test_bf16_signs_exact_and_gradients_close():
    k, t = torch.tensor(10.0), torch.tensor(0.1)
    x = random_nonzero(2, 3, 5, 5)
    shift = torch.rand(2, 3)
    xb, sb = x.bfloat16().requires_grad_(True), shift.bfloat16().requires_grad_(True)
    out = reference.act_sign(xb, sb, k, t, "ede")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.float(), torch.sign(xb.detach().float() + sb.detach().float()[:, :, None, None]))
    g = torch.randn(out.shape)
    (out.float() * g).sum().backward()
    shifted = xb.detach().double() + sb.detach().double()[:, :, None, None]
    expected = g.double() * 10 * 0.1 * (1 - torch.tanh(0.1 * shifted) ** 2)
    torch.testing.assert_close(xb.grad.double(), expected, rtol=2e-2, atol=2e-2)


def test_ede_schedule_examples():
    def close(a, b):
        return math.isclose(a, b, rel_tol=1e-9)

    k, t = reference.ede_schedule(0, 500, 1e-3)
    assert close(t, 1e-3) and close(k, 1000.0)
    k, t = reference.ede_schedule(250, 500, 1e-3)
    assert close(t, 0.1) and close(k, 10.0)
    k, t = reference.ede_schedule(375, 500, 1e-3)
    assert close(t, 1.0) and k == 1.0
    k, t = reference.ede_schedule(499, 500, 1e-3)
    assert abs(t - 9.817479) < 1e-5 and k == 1.0
    k, t = reference.ede_schedule(0, 400, 1e-1)  # VGG-Small
    assert close(t, 0.1) and close(k, 10.0)


def test_errors_are_clear():
    with pytest.raises(ValueError, match="unknown surrogate 'tanh'"):
        reference.sign_with_surrogate(torch.ones(2), "tanh")
    with pytest.raises(ValueError, match="needs k and t"):
        reference.sign_with_surrogate(torch.ones(2), "ede")
    with pytest.raises(ValueError, match="outside"):
        reference.ede_schedule(11, 10, 1e-3)
    with pytest.raises(ValueError, match="t_min"):
        reference.ede_schedule(1, 10, 0.0)

"""The op layer's CPU math (what CPU training runs, no Triton) against the reference backend's autograd: outputs,
gradients, dtypes and layouts, for every surrogate and across the EDE schedule."""

import pytest
import torch

import sdbnn
from sdbnn import ops
from sdbnn.testing import nonzero_random

SCHEDULE = [(1000.0, 1e-3), (10.0, 0.1), (1.0, 2.5)]  # the EDE schedule's start, middle and end
# fp32 and float64 agree with the reference to rounding. bf16 storage: the op computes in fp32 (x + shift
# included), so it is compared with the reference run on the fp32 upcast, to bf16's rounding of the result.
TOLERANCE = {torch.float32: 2e-6, torch.float64: 1e-13, torch.bfloat16: 1e-2}


@pytest.fixture(autouse=True)
def cpu_math():
    # the default setting runs the CPU math on CPU tensors, interpreter or not
    assert ops.current_backend() == "ops" and ops.implementation(torch.zeros(1)) == "cpu"


def _relative_error(actual, expected):
    return ((actual.double() - expected.double()).abs().max() / expected.double().abs().max().clamp_min(1e-30)).item()


def _run(backend, x, shift, grad, k, t, surrogate):
    x = x.clone().requires_grad_()
    shift = shift.clone().requires_grad_() if shift is not None else None
    with sdbnn.backend(backend):
        out = ops.act_sign(x, shift, k, t, surrogate)
    out.backward(grad)
    return out, x.grad, shift.grad if shift is not None else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("with_shift", [True, False], ids=["shift", "noshift"])
@pytest.mark.parametrize("surrogate", ["ede", "approx", "clip", "ste"])
def test_act_sign_cpu_math_matches_the_reference(dtype, channels_last, with_shift, surrogate):
    torch.manual_seed(0)
    shape = (3, 17, 5, 7)
    x = nonzero_random(shape, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    shift = torch.rand(shape[:2], dtype=torch.float64).to(dtype) if with_shift else None
    grad = nonzero_random(shape, dtype)
    for k_value, t_value in (SCHEDULE if surrogate == "ede" else SCHEDULE[:1]):
        k, t = torch.tensor(k_value, dtype=dtype), torch.tensor(t_value, dtype=dtype)
        out, dx, dshift = _run("ops", x, shift, grad, k, t, surrogate)
        upcast = (lambda v: v.float() if v is not None else None) if dtype == torch.bfloat16 else (lambda v: v)
        ref_out, ref_dx, ref_dshift = _run("reference", upcast(x), upcast(shift), upcast(grad), upcast(k), upcast(t),
                                           surrogate)
        assert torch.equal(out, ref_out.to(dtype))
        assert out.dtype == dx.dtype == dtype
        assert dx.stride() == x.stride() and out.stride() == x.stride()
        assert _relative_error(dx, ref_dx) <= TOLERANCE[dtype]
        if with_shift:
            assert dshift.dtype == dtype and _relative_error(dshift, ref_dshift) <= TOLERANCE[dtype]


def test_ede_gradient_follows_k_and_t():
    # k scales the gradient linearly; t sharpens it: a CPU path that dropped either would fail here
    torch.manual_seed(0)
    x = nonzero_random((2, 4, 3, 3), torch.float64)
    shift = torch.rand(2, 4, dtype=torch.float64)
    grad = torch.ones_like(x)
    _, dx_k1, _ = _run("ops", x, shift, grad, torch.tensor(1.0, dtype=torch.float64),
                       torch.tensor(0.5, dtype=torch.float64), "ede")
    _, dx_k3, _ = _run("ops", x, shift, grad, torch.tensor(3.0, dtype=torch.float64),
                       torch.tensor(0.5, dtype=torch.float64), "ede")
    torch.testing.assert_close(dx_k3, 3 * dx_k1, rtol=1e-14, atol=0)
    v = x + shift[:, :, None, None]
    torch.testing.assert_close(dx_k1, 0.5 * (1 - torch.tanh(0.5 * v) ** 2), rtol=1e-13, atol=1e-15)


def test_strided_views_get_a_dense_gradient():
    x = nonzero_random((2, 6, 5, 5), torch.float32)[:, ::2]  # not dense
    shift = torch.rand(2, 3)
    k, t = torch.tensor(2.0), torch.tensor(0.5)
    out, dx, _ = _run("ops", x, shift, torch.ones(x.shape), k, t, "ede")
    _, ref_dx, _ = _run("reference", x, shift, torch.ones(x.shape), k, t, "ede")
    assert out.is_contiguous() and dx.shape == x.shape
    torch.testing.assert_close(dx, ref_dx, rtol=2e-6, atol=1e-7)


def _run_weight(backend, w, alpha, grad, k, t, surrogate):
    w = w.clone().requires_grad_()
    alpha = alpha.clone().requires_grad_() if alpha is not None else None
    with sdbnn.backend(backend):
        out = ops.weight_sign(w, alpha, k, t, surrogate)
    out.backward(grad)
    return out, w.grad, alpha.grad if alpha is not None else None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("with_alpha", [True, False], ids=["alpha", "noalpha"])
@pytest.mark.parametrize("surrogate", ["ede", "approx", "clip", "ste"])
def test_weight_sign_cpu_math_matches_the_reference(dtype, channels_last, with_alpha, surrogate):
    torch.manual_seed(0)
    w = nonzero_random((6, 5, 3, 3), dtype, scale=0.3)
    if channels_last:
        w = w.contiguous(memory_format=torch.channels_last)
    alpha = torch.randn(6, dtype=torch.float64).to(dtype) if with_alpha else None
    grad = nonzero_random(w.shape, dtype)
    upcast = (lambda v: v.float() if v is not None else None) if dtype == torch.bfloat16 else (lambda v: v)
    for k_value, t_value in (SCHEDULE if surrogate == "ede" else SCHEDULE[:1]):
        k, t = torch.tensor(k_value, dtype=dtype), torch.tensor(t_value, dtype=dtype)
        out, dw, dalpha = _run_weight("ops", w, alpha, grad, k, t, surrogate)
        ref_out, ref_dw, ref_dalpha = _run_weight("reference", upcast(w), upcast(alpha), upcast(grad), upcast(k),
                                                  upcast(t), surrogate)
        assert torch.equal(out, ref_out.to(dtype)) and out.stride() == w.stride()
        assert dw.dtype == dtype and dw.stride() == w.stride()
        assert _relative_error(dw, ref_dw) <= TOLERANCE[dtype]
        if with_alpha:
            assert dalpha.dtype == dtype and _relative_error(dalpha, ref_dalpha) <= TOLERANCE[dtype]


def test_cpu_step_study_reports_the_median_of_per_round_ratios():
    from studies import cpu_step

    result = cpu_step.run("resnet20", batch_size=2, rounds=3, steps=1)
    for key in ("fused_over_reference", "fused_over_reference_cpu_time"):
        per_round = result[f"{key}_per_round"]
        assert len(per_round) == 3 and result[key] == sorted(per_round)[1]
    rates = result["images_per_s"]
    assert result["fused_over_reference_per_round"] == [o / r for o, r in zip(rates["ops"], rates["reference"])]
    text = cpu_step.markdown(result, "python -m studies.cpu_step")
    assert f"**{result['fused_over_reference']:.2f}×** wall clock" in text

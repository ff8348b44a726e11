"""CUDA-only: the kernel comparisons with compiled (not interpreted) Triton kernels, and whole models on the GPU.

Run on a GPU machine with `python -m pytest -m gpu` (without TRITON_INTERPRET); skipped elsewhere.
"""

import copy

import pytest
import torch

import sdbnn
from sdbnn import ops, reference
from sdbnn.testing import (
    ACT_SHAPES,
    DTYPES,
    EDE_POINTS,
    WEIGHT_CASES,
    assert_gradients_close,
    check_act_sign_kernel,
    check_weight_sign,
    check_weight_sign_kernel,
    loss_and_gradients,
    nonzero_random,
    spread_binary_weights,
)

pytestmark = pytest.mark.gpu

LARGE_ACT_SHAPES = [(64, 64, 56, 56), (32, 512, 7, 7), (3, 1000, 1, 1)]


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", ACT_SHAPES + LARGE_ACT_SHAPES, ids=str)
def test_act_sign_cuda(shape, channels_last, dtype, surrogate):
    assert ops.implementation(torch.empty(1, device="cuda")) == "triton"
    check_act_sign_kernel(shape, channels_last, dtype, surrogate, device="cuda")


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,channels_last", WEIGHT_CASES + [((512, 512, 3, 3), False), ((512, 512, 3, 3), True)], ids=str)
def test_weight_sign_cuda(shape, channels_last, dtype, surrogate):
    check_weight_sign_kernel(shape, channels_last, dtype, surrogate, device="cuda")


@pytest.mark.parametrize("name,size", [("resnet20", 32), ("vgg_small", 32), ("resnet18_cifar", 32), ("resnet18_imagenet", 64)])
def test_models_cuda_ops_compiled_match_reference(name, size):
    torch._dynamo.reset()
    model = sdbnn.create_model(name, num_classes=10).cuda()
    sdbnn.set_ede(model, 1.0, 2.5)
    if name == "resnet18_imagenet":
        spread_binary_weights(model)
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, fullgraph=True)
    x = torch.randn(8, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (8,), device="cuda")
    reference_loss, reference_grads = loss_and_gradients(model, x, labels, backend="reference")
    compiled_loss, compiled_grads = loss_and_gradients(compiled_model, x, labels, forward=compiled)
    assert abs(compiled_loss - reference_loss) <= 1e-3 * abs(reference_loss)
    assert_gradients_close(compiled_grads, reference_grads)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", [(64, 64, 3, 3), (512, 512, 3, 3), (24, 17, 5, 3)], ids=str)
def test_weight_sign_autocast_dtype_cuda(shape, channels_last):
    # fp32 weights, bf16 sign (autocast's dtype for the convolution) and bf16 incoming gradient; fp32 dW, d(alpha)
    check_weight_sign(shape, channels_last, torch.float32, "ede", device="cuda", through="op", out_dtype=torch.bfloat16)


def test_k_and_t_on_another_device_are_refused_cuda():
    # copying them would synchronise the host every step and break CUDA-graph capture
    from sdbnn.kernels import act_sign as act_kernels

    x = torch.randn(2, 3, 4, 4, device="cuda")
    k, t = EDE_POINTS[1]  # on the CPU
    with pytest.raises(ValueError, match="act_sign: k must be a one-element tensor on the input's device"):
        act_kernels.backward(torch.randn_like(x), x, None, k, t.cuda(), "ede")


def test_ops_capture_in_a_cuda_graph():
    """Forward and backward of both ops replay from one CUDA graph and match eager on new inputs."""
    k, t = (value.cuda() for value in EDE_POINTS[1])
    x = nonzero_random((4, 16, 9, 9), torch.bfloat16, device="cuda").to(memory_format=torch.channels_last)
    shift = torch.rand(4, 16, device="cuda", dtype=torch.bfloat16)
    w, alpha = nonzero_random((8, 16, 3, 3), torch.float32, 0.3, device="cuda"), torch.randn(8, device="cuda")
    leaves = [tensor.clone().requires_grad_() for tensor in (x, shift, w, alpha)]

    def step():
        a = torch.ops.sdbnn.act_sign(leaves[0], leaves[1], k, t, "ede")
        b = torch.ops.sdbnn.weight_sign(leaves[2], leaves[3], k, t, "approx", torch.bfloat16)
        loss = (torch.nn.functional.conv2d(a, b, padding=1).float() ** 2).sum()
        return [loss, *torch.autograd.grad(loss, leaves)]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm up (kernel compilation, allocator) outside the capture
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    new_inputs = [nonzero_random(x.shape, torch.bfloat16, device="cuda"), torch.rand_like(shift),
                  nonzero_random(w.shape, torch.float32, 0.3, device="cuda"), torch.randn_like(alpha)]
    with torch.no_grad():
        for leaf, value in zip(leaves, new_inputs):
            leaf.copy_(value)
    graph.replay()
    expected = step()
    for got, want in zip(captured, expected):  # cuDNN may sum in another order between calls
        torch.testing.assert_close(got, want)

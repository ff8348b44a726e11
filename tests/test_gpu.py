"""CUDA-only: the kernel comparisons with compiled (not interpreted) Triton kernels, and whole models on the GPU.

Run on a GPU machine with `python -m pytest -m gpu` (without TRITON_INTERPRET); skipped elsewhere.
"""

import copy

import pytest
import torch

import sdbnn
from sdbnn import ops, reference

from kernel_checks import ACT_SHAPES, DTYPES, WEIGHT_CASES, check_act_sign_kernel, check_weight_sign_kernel

pytestmark = pytest.mark.gpu

LARGE_ACT_SHAPES = [(64, 64, 56, 56), (32, 512, 7, 7), (3, 1000, 1, 1)]


@pytest.mark.parametrize("surrogate", reference.SURROGATES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", ACT_SHAPES + LARGE_ACT_SHAPES, ids=str)
def test_act_sign_cuda(shape, channels_last, dtype, surrogate):
    assert ops.uses_triton(torch.empty(1, device="cuda"))
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
    if name == "resnet18_imagenet":  # see test_compile.py: the official init makes d(alpha) rounding noise
        for module in model.modules():
            if isinstance(module, sdbnn.SDConv2d):
                torch.nn.init.normal_(module.weight, 0.0, 0.05)
    compiled_model = copy.deepcopy(model)
    compiled = torch.compile(compiled_model, fullgraph=True)
    x = torch.randn(8, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (8,), device="cuda")
    results = []
    for module, forward, backend in [(model, model, "reference"), (compiled_model, compiled, "ops")]:
        module.zero_grad(set_to_none=True)
        with sdbnn.backend(backend):
            loss = torch.nn.functional.cross_entropy(forward(x), labels)
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}))
    (reference_loss, reference_grads), (compiled_loss, compiled_grads) = results
    assert abs(compiled_loss - reference_loss) <= 1e-3 * abs(reference_loss)
    for key, expected in reference_grads.items():
        error = (compiled_grads[key] - expected).abs().max().item()
        assert error <= 1e-3 * expected.abs().max().item() + 1e-7, key

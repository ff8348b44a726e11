"""bf16 autocast where the hardware has no bf16 convolutions (docs/method.md §Precision).

On a CPU without AVX-512 BF16 or AMX, PyTorch's CPU autocast runs convolutions in bf16 through a slow reference
kernel (measured here on a 2-core AVX2 machine: a ResNet-20 step 8× slower than fp32). `emulated_bf16_convolutions`
computes each convolution the way autocast defines it — operands rounded to bf16, result stored in bf16 — with the
fp32 kernel doing the multiply-accumulate on the rounded operands. That is what a GPU's bf16 convolution does too (bf16
operands, fp32 accumulation, bf16 result); only the order of the fp32 sums differs. Every other op runs under
autocast as usual. Gradients flow through the roundings, so they are rounded to bf16 exactly where autocast rounds
them.
"""

from __future__ import annotations

import contextlib

import torch
from torch.overrides import TorchFunctionMode

_CONVOLUTIONS = (torch.conv1d, torch.conv2d, torch.conv3d)  # what torch.nn.functional.conv*d are


def native_bf16_convolutions(device: torch.device) -> bool:
    """Whether bf16 convolutions run at hardware speed on ``device`` (CUDA; a CPU with oneDNN's bf16 support)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _round_to_bf16(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(torch.bfloat16).float()
    return value


class _EmulatedBf16Convolutions(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVOLUTIONS and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                args = [_round_to_bf16(value) for value in args]
                kwargs = {key: _round_to_bf16(value) for key, value in kwargs.items()}
                return func(*args, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def emulated_bf16_convolutions():
    """A context in which CPU-autocast convolutions compute on bf16-rounded operands with the fp32 kernel."""
    return _EmulatedBf16Convolutions()


def autocast_context(accelerator, emulate_convolutions: bool):
    """The accelerator's autocast, plus the convolution emulation where the device needs it."""
    stack = contextlib.ExitStack()
    stack.enter_context(accelerator.autocast())
    if emulate_convolutions:
        stack.enter_context(emulated_bf16_convolutions())
    return stack

"""The inference form of a trained model, shared by the cost table, the packed file and the ONNX graph.

`folded_weight` is the fp32 weight an SD conv convolves with in eval mode (WSD folded in, signed for binary
weights); `inference_model` replaces each SD conv by `InferenceSDConv2d` (plain ``torch.sign`` on ``x + shift``,
the folded weight as a constant), so neither the ``sdbnn`` custom ops nor autograd Functions reach an exporter.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sdbnn import reference
from sdbnn.layers import SDConv2d


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module behind torch.compile and (Distributed)DataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def sd_convs(model: nn.Module) -> dict[str, SDConv2d]:
    """Every SD conv of ``model`` by qualified name."""
    return {name: module for name, module in model.named_modules() if isinstance(module, SDConv2d)}


def folded_weight(conv: SDConv2d) -> torch.Tensor:
    """The fp32 weight an SD conv convolves with in eval mode: sign(W') for binary weights, else W' itself,
    with W' the WSD-shifted weight (computed by `sdbnn.reference` exactly as the forward computes it)."""
    weight = conv.weight.detach().float().cpu()
    alpha = conv.alpha.detach().float().cpu() if conv.wsd else None
    with torch.no_grad():
        if not conv.binary_weights:
            return weight if alpha is None else reference.wsd_shift_weight(weight, alpha)
        # the surrogate only shapes gradients; "ste" needs no EDE (k, t)
        return reference.weight_sign(weight, alpha, surrogate="ste", scale=conv.weight_scale)


class InferenceSDConv2d(nn.Module):
    """An SD conv for inference only: conv2d(sign(x + shift), W) with the folded weight W as a constant.

    Plain torch ops (``torch.sign``, ``F.conv2d`` and the gate's mean / matmul / ReLU / sigmoid), the same math as
    `SDConv2d` in eval mode: exporters see no custom op and no autograd Function.
    """

    def __init__(self, conv: SDConv2d):
        super().__init__()
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.register_buffer("weight", folded_weight(conv).to(conv.weight.device))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())
        gate = conv.gate
        self.register_buffer("gate_reduce", gate.reduce.weight.detach().clone() if conv.asd == "dynamic" else None)
        self.register_buffer("gate_expand", gate.expand.weight.detach().clone() if conv.asd == "dynamic" else None)
        with torch.no_grad():
            static = torch.sigmoid(gate.beta.detach()) if conv.asd == "static" else None
        self.register_buffer("static_shift", static)

    def shifted_input(self, x: torch.Tensor) -> torch.Tensor:
        """x + shift: the value the activation sign binarizes."""
        if self.gate_reduce is not None:
            return x + reference.asd_dynamic_shift(x, self.gate_reduce, self.gate_expand)[:, :, None, None]
        if self.static_shift is not None:
            return x + self.static_shift[None, :, None, None]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(torch.sign(self.shifted_input(x)), self.weight, self.bias, self.stride, self.padding,
                        self.dilation)


def inference_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every SDConv2d replaced by an `InferenceSDConv2d`."""
    model = copy.deepcopy(unwrap_model(model)).eval()
    for name, conv in list(sd_convs(model).items()):
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, InferenceSDConv2d(conv))
    return model

"""Modules of SD-BNN: the self-distribution binary convolution and its activation-shift gates.

Modules only hold parameters and compose the ops (`sdbnn.ops`) and the math (`sdbnn.reference`); which
implementation runs is decided in the op layer, never here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from sdbnn import ops, reference

ASD_MODES = ("dynamic", "static", "off")

# The SD-BNN switches of SDConv2d with their defaults (the CIFAR configuration); models pass overrides through.
SD_OPTIONS = {
    "asd": "dynamic",
    "wsd": True,
    "binary_weights": True,
    "act_surrogate": "ede",
    "weight_surrogate": "ede",
    "se_reduction": 16,
    "weight_scale": "none",
}

# The official IRConv2d starts with k=10, t=0.1 until the trainer's first schedule call.
DEFAULT_K, DEFAULT_T = 10.0, 0.1


class SEGate(nn.Module):
    """Dynamic ASD: a bias-free squeeze-excitation MLP whose sigmoid output is added to the activations."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        if hidden < 1:
            raise ValueError(f"SE reduction {reduction} leaves no hidden unit for {channels} channels")
        self.reduce = nn.Linear(channels, hidden, bias=False)
        self.expand = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.asd_dynamic_shift(x, self.reduce.weight, self.expand.weight)


class StaticShift(nn.Module):
    """Static ASD (ablation only): one learnable shift sigmoid(beta_c) per channel, beta initialised to 0."""

    def __init__(self, channels: int):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reference.asd_static_shift(self.beta, x.shape[0])


class SDConv2d(nn.Module):
    """Self-distribution binary convolution: conv2d(sign(A + s), sign(W + sigmoid(alpha)·0.01·mean W)).

    Shaped like ``nn.Conv2d`` (``weight`` is ``[out, in, kh, kw]``); ``alpha`` holds the WSD gates and ``gate`` the
    ASD shift (absent when ``asd="off"``). ``k`` and ``t`` are the EDE parameters as 0-dim non-persistent buffers,
    so changing them between epochs changes no graph and is not checkpointed; set them with `sdbnn.set_ede`.

    Switches: ``asd`` dynamic/static/off; ``wsd``; ``binary_weights`` (False gives W32/A1, ImageNet stage 1);
    ``act_surrogate`` / ``weight_surrogate`` from `reference.SURROGATES`; ``se_reduction``; ``weight_scale`` from
    `reference.WEIGHT_SCALES` (SD-BNN uses "none").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = False,
        *,
        asd: str = SD_OPTIONS["asd"],
        wsd: bool = SD_OPTIONS["wsd"],
        binary_weights: bool = SD_OPTIONS["binary_weights"],
        act_surrogate: str = SD_OPTIONS["act_surrogate"],
        weight_surrogate: str = SD_OPTIONS["weight_surrogate"],
        se_reduction: int = SD_OPTIONS["se_reduction"],
        weight_scale: str = SD_OPTIONS["weight_scale"],
    ):
        super().__init__()
        if asd not in ASD_MODES:
            raise ValueError(f"unknown asd mode {asd!r}; choose one of {', '.join(ASD_MODES)}")
        reference.check_surrogate(act_surrogate)
        reference.check_surrogate(weight_surrogate)
        if weight_scale not in reference.WEIGHT_SCALES:
            raise ValueError(f"unknown weight scale {weight_scale!r}; choose one of {', '.join(reference.WEIGHT_SCALES)}")
        if weight_scale != "none" and not binary_weights:
            raise ValueError("weight_scale applies to binary weights; it needs binary_weights=True")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.asd, self.wsd, self.binary_weights = asd, wsd, binary_weights
        self.act_surrogate, self.weight_surrogate = act_surrogate, weight_surrogate
        self.se_reduction, self.weight_scale = se_reduction, weight_scale

        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        # alpha always exists so that checkpoints keep one layout across stages and ablations; it only trains with WSD.
        self.alpha = nn.Parameter(torch.zeros(out_channels), requires_grad=wsd)
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        if asd == "dynamic":
            self.gate = SEGate(in_channels, se_reduction)
        elif asd == "static":
            self.gate = StaticShift(in_channels)
        else:
            self.gate = None
        self.register_buffer("k", torch.tensor(DEFAULT_K), persistent=False)
        self.register_buffer("t", torch.tensor(DEFAULT_T), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv2d's default initialisation for weight/bias; alpha = 0. Models re-initialise per
        docs/method.md §Architectures."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        nn.init.zeros_(self.alpha)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The weight the convolution uses: sign(W') (or W' itself when binary_weights=False)."""
        alpha = self.alpha if self.wsd else None
        if not self.binary_weights:
            return self.weight if alpha is None else reference.wsd_shift_weight(self.weight, alpha)
        return ops.weight_sign(self.weight, alpha, self.k, self.t, self.weight_surrogate, self.weight_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SDConv2d expects input (batch, {self.in_channels}, height, width), got {tuple(x.shape)}"
            )
        shift = self.gate(x) if self.gate is not None else None
        binary_input = ops.act_sign(x, shift, self.k, self.t, self.act_surrogate)
        return F.conv2d(binary_input, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, asd={self.asd}, wsd={self.wsd}, binary_weights={self.binary_weights}, "
            f"act_surrogate={self.act_surrogate}, weight_surrogate={self.weight_surrogate}"
        )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.weight_scale != "none":
            text += f", weight_scale={self.weight_scale}"
        return text + ("" if self.bias is None else ", bias=True")


def set_ede(model: nn.Module, k: float | torch.Tensor, t: float | torch.Tensor) -> int:
    """Set the EDE (k, t) on every SDConv2d of ``model`` in place; returns how many convs were updated.

    Filling the existing buffers (rather than replacing them) keeps compiled graphs valid: no recompilation.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, SDConv2d):
            module.k.fill_(k)
            module.t.fill_(t)
            count += 1
    return count

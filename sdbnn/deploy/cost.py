"""The cost table BNN papers report: binary/real parameters, BOPs, FLOPs, OPs and model size, per layer.

    cost = sdbnn.summary(model, (3, 32, 32))         # a ModelSummary; print(cost) shows the table
    cost = sdbnn.summary("resnet18_imagenet", 224)   # a registered name: its full-precision twin is found too
    sdbnn.summary.model_cost(model, (3, 32, 32))     # totals only, JSON-able (what a training run records)
    python -m sdbnn.summary resnet20                 # or a run directory (config.yaml + model.safetensors)

(``sdbnn.summary`` is this module's API; the rows and their printing are in `sdbnn.deploy.cost_table`.)

Counting convention (Bi-Real Net, ReActNet; the models of docs/method.md §Architectures):

- **BOPs**: multiply-accumulates of binary convolutions (SDConv2d with binary_weights=True: both operands 1 bit).
- **FLOPs**: multiply-accumulates of real layers (real convs, linears, SDConv2d with binary_weights=False, which
  is W32/A1) plus the whole ASD gate (global-pool additions, its two FC layers' MACs, ReLU and sigmoid, one FLOP
  each), because the gate is SD-BNN's own real-valued sub-network. One MAC = one FLOP (torchvision's "GFLOPS"
  are MACs too; `torch.utils.flop_counter` counts 2 per MAC).
- **OPs** = BOPs / 64 + FLOPs.
- **element-wise ops** are what those papers leave out, shown in their own column so nothing is hidden: BatchNorm
  (one fused multiply-add per element), PReLU / hardtanh / ReLU, residual additions, max/average pooling (one op
  per window element), the activation sign and the ASD shift addition before it (one op per input element each),
  biases. They are not part of OPs. Data movement (reshapes, slicing, zero padding of option-A shortcuts) costs 0.
- Weight-side work of SD convs (WSD shift, sign of the weights, static ASD's sigmoid) is constant at inference:
  it is folded at export and costs 0 here.
- **Parameters**: binary = SD-conv weights with binary_weights=True; real = every other parameter the inference
  model needs; training-only = WSD ``alpha`` (folded into the signs at export, or unused with WSD off). Buffers
  (BatchNorm running statistics) are not parameters, as in larq and the papers.
- **Size** = binary parameters at 1 bit + real parameters at 32 bits, against the full-precision twin's
  parameters at 32 bits.

Counts are per image. They come from one forward pass on the meta device (no memory, no arithmetic) at the given
input size: forward hooks give each module's exact input and output shapes, and a dispatch mode sees the
element-wise work of functional calls (``F.hardtanh``, ``x + shortcut``, ``x.mean``) and charges it to the module
whose forward made it. Nothing is a per-architecture formula.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sdbnn.deploy.cost_table import BOPS_PER_FLOP, LayerCost, ModelSummary
from sdbnn.deploy.inference import unwrap_model
from sdbnn.layers import SDConv2d, SEGate, StaticShift

# Models whose natural input is an ImageNet crop; everything else in the registry is CIFAR-sized.
IMAGENET_INPUT, CIFAR_INPUT = (3, 224, 224), (3, 32, 32)

# aten ops that only move or view data: zero arithmetic.
_DATA_MOVEMENT = frozenset({
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "slice", "select", "unsqueeze",
    "squeeze", "detach", "alias", "clone", "copy_", "_to_copy", "contiguous", "empty", "empty_like", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_empty", "new_zeros", "new_ones", "fill_",
    "constant_pad_nd", "cat", "stack", "split", "split_with_sizes", "chunk", "unbind", "lift_fresh",
    "as_strided", "flatten", "_reshape_alias", "unsafe_split", "narrow", "scalar_tensor", "_local_scalar_dense",
})
_NORMALISATION = frozenset({
    "native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "batch_norm",
    "native_layer_norm", "native_group_norm", "_prelu_kernel", "prelu",
})
_REDUCTIONS = frozenset({"mean", "sum", "amax", "amin", "max", "min", "_adaptive_avg_pool2d", "adaptive_avg_pool2d"})
_WINDOW_POOLING = frozenset({"max_pool2d_with_indices", "max_pool2d", "avg_pool2d"})
_MATMULS = frozenset({"mm", "addmm", "bmm", "baddbmm", "matmul"})


def _first_tensor(value):
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _conv_macs(output: torch.Tensor, in_channels: int, groups: int, kernel_size: Sequence[int]) -> int:
    """Each output element is one dot product over (in_channels / groups) × kernel window inputs."""
    return output.numel() * (in_channels // groups) * math.prod(kernel_size)


class _CostCounter(TorchDispatchMode):
    """Charges the element-wise aten ops of a forward to the innermost running module; modules with their own
    formula (convs, linears, gates) are "opaque": nothing inside them is counted twice."""

    def __init__(self):
        super().__init__()
        self.stack: list[LayerCost] = []
        self.opaque_depth = 0
        self.uncounted: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.opaque_depth or not self.stack:
            return result
        row = self.stack[-1]
        name = func._opname
        output = _first_tensor(result)
        if name in _DATA_MOVEMENT or output is None:
            return result
        if torch.Tag.pointwise in func.tags or name in _NORMALISATION:
            row.elementwise_ops += output.numel()
        elif name in _REDUCTIONS:
            row.elementwise_ops += args[0].numel()
        elif name in _WINDOW_POOLING:
            row.elementwise_ops += output.numel() * _window_area(args[1])
        elif name == "convolution":  # a functional conv outside any conv module: a real one
            weight = args[1]
            row.flops += output.numel() * weight.shape[1] * math.prod(weight.shape[2:])
        elif name in _MATMULS:
            row.flops += output.numel() * args[-1].shape[-2]  # (..., M, K) @ (..., K, N): K MACs per output
        else:
            self.uncounted[str(func)] += 1
        return result


def _window_area(kernel_size) -> int:
    """Elements in a 2-D pooling window; aten passes [k] for a square window."""
    sizes = list(kernel_size) if isinstance(kernel_size, (list, tuple)) else [kernel_size]
    return math.prod(sizes * 2 if len(sizes) == 1 else sizes)


def _own_formula(module: nn.Module, inputs: tuple, output, row: LayerCost) -> None:
    """Add the cost of a module counted by its own formula (the `_OPAQUE` kinds); other modules are left to the
    dispatch counter."""
    output = _first_tensor(output)
    if isinstance(module, SDConv2d):
        macs = _conv_macs(output, module.in_channels, 1, module.kernel_size)
        if module.binary_weights:
            row.bops += macs
        else:
            row.flops += macs
        row.elementwise_ops += inputs[0].numel() * (2 if module.gate is not None else 1)  # shift addition, sign
        row.elementwise_ops += output.numel() * ((module.bias is not None) + (module.weight_scale != "none"))
    elif isinstance(module, SEGate):
        x = inputs[0]
        batch, channels = x.shape[:2]
        hidden = module.reduce.out_features
        gate = x.numel() + batch * (2 * channels * hidden + hidden + channels)  # pool adds, 2 FCs, ReLU, sigmoid
        row.flops += gate
        row.asd_gate_flops += gate
    elif isinstance(module, nn.modules.conv._ConvNd):
        row.flops += _conv_macs(output, module.in_channels, module.groups, module.kernel_size)
        row.elementwise_ops += output.numel() if module.bias is not None else 0
    elif isinstance(module, nn.Linear):
        row.flops += output.numel() * module.in_features
        row.elementwise_ops += output.numel() if module.bias is not None else 0
    # StaticShift: sigmoid(beta) is a constant at inference; its addition is counted in the SD conv


_OPAQUE = (SDConv2d, SEGate, StaticShift, nn.modules.conv._ConvNd, nn.Linear)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device, made without copying any parameter data."""
    memo = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=tensor.requires_grad) if isinstance(
            tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def input_shape(input_size: int | Sequence[int]) -> tuple[int, int, int]:
    """(C, H, W) of one image from (C, H, W), (batch, C, H, W) or one side (224 -> (3, 224, 224))."""
    if isinstance(input_size, int):
        return (3, input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) == 4:  # (batch, C, H, W): counts are per image regardless of the batch
        size = size[1:]
    if len(size) != 3 or min(size) <= 0:
        raise ValueError(f"input_size must be (C, H, W), (batch, C, H, W) or one side, got {input_size}")
    return size


def _count(model: nn.Module, image_size: tuple[int, int, int]) -> tuple[list[LayerCost], Counter]:
    from sdbnn.ops import backend

    meta_model = _meta_copy(unwrap_model(model)).eval()
    rows: dict[str, LayerCost] = {}
    names = {module: name for name, module in meta_model.named_modules()}
    counter = _CostCounter()
    handles = []

    def pre_hook(module, inputs):
        name = names[module]
        row = rows.setdefault(name, LayerCost(name, type(module).__name__))
        counter.stack.append(row)
        if isinstance(module, _OPAQUE):
            counter.opaque_depth += 1

    def post_hook(module, inputs, output):
        row = counter.stack.pop()
        if isinstance(module, _OPAQUE):
            counter.opaque_depth -= 1
        # an opaque module inside another (the gate inside an SD conv) still counts its own formula
        _own_formula(module, inputs, output, row)
        first = _first_tensor(output)
        row.output_shape = tuple(first.shape[1:]) if first is not None else ()
        row.calls += 1

    for module in names:
        handles.append(module.register_forward_pre_hook(pre_hook))
        handles.append(module.register_forward_hook(post_hook))
    try:
        with torch.no_grad(), backend("reference"), counter:
            meta_model(torch.empty(1, *image_size, device="meta"))
    finally:
        for handle in handles:
            handle.remove()
    _assign_parameters(meta_model, names, rows)
    return list(rows.values()), counter.uncounted


def _assign_parameters(model: nn.Module, names: dict, rows: dict[str, LayerCost]) -> None:
    """Each module's own parameters go to its row, or to the nearest ancestor that ran (the SE gate's FC weights
    belong to the gate, whose forward uses them without calling the Linear modules)."""
    for module, name in names.items():
        owner = name
        while owner not in rows:
            owner = owner.rpartition(".")[0] if "." in owner else ""
        row = rows[owner]
        for param_name, param in module.named_parameters(recurse=False):
            if isinstance(module, SDConv2d) and param_name == "alpha":
                row.training_only_params += param.numel()
            elif isinstance(module, SDConv2d) and param_name == "weight" and module.binary_weights:
                row.binary_params += param.numel()
            else:
                row.real_params += param.numel()


def twin_name(model_name: str) -> str | None:
    """The registered full-precision twin of a model (``name + "_fp"``), or None."""
    from sdbnn.models import list_models

    twin = f"{model_name}_fp"
    return twin if twin in list_models() else None


def _twin_model(twin: str, options: dict) -> nn.Module:
    """The twin built with the options it shares with the binary model (num_classes)."""
    from sdbnn.models import create_model, model_spec

    accepted = model_spec(twin).options
    return create_model(twin, **{key: value for key, value in options.items() if key in accepted})


def _summarize(model: nn.Module, image_size: tuple[int, int, int], name: str, twin: str | None,
               twin_model: nn.Module | None) -> ModelSummary:
    rows, uncounted = _count(model, image_size)
    result = ModelSummary(name, image_size, rows, uncounted_ops=dict(uncounted))
    if twin_model is not None:
        twin_rows, _ = _count(twin_model, image_size)
        result.twin = twin
        result.twin_params = sum(p.numel() for p in twin_model.parameters())
        result.twin_flops = sum(row.flops + row.bops // BOPS_PER_FLOP for row in twin_rows)
    return result


def summary(
    model: nn.Module | str,
    input_size: int | Sequence[int] | None = None,
    *,
    twin: nn.Module | str | None = None,
    name: str | None = None,
) -> ModelSummary:
    """Count parameters, BOPs, FLOPs, OPs, element-wise ops and size of ``model`` for one image of ``input_size``
    ((C, H, W), (B, C, H, W) or one side: 224 → (3, 224, 224)).

    ``model`` is a module or a registered model name; for a name, the input size defaults to the model's dataset
    and the twin to ``name + "_fp"``. ``twin`` (a module or a registered name) is the full-precision model to
    compare size and FLOPs with. ``name`` labels the table.
    """
    from sdbnn.models import create_model

    if isinstance(model, str):
        name = name or model
        twin = twin if twin is not None else twin_name(model)
        model = create_model(model)
    name = name or type(unwrap_model(model)).__name__
    if input_size is None:
        if name not in _registered():
            raise ValueError("summary needs input_size for a model given as a module")
        input_size = default_input_size(name)
    twin_label = twin if isinstance(twin, str) else None if twin is None else type(unwrap_model(twin)).__name__
    twin_model = create_model(twin) if isinstance(twin, str) else twin
    return _summarize(model, input_shape(input_size), name, twin_label, twin_model)


def _registered() -> list[str]:
    from sdbnn.models import list_models

    return list_models()


def model_cost(model: nn.Module, input_size: int | Sequence[int], *, twin: nn.Module | str | None = None,
               name: str | None = None) -> dict:
    """Totals only, as JSON-able numbers: what a training run prints at its end and stores in summary.json.

    ``twin``: the full-precision twin (a module, or a registered name such as ``config.model + "_fp"``), for the
    size and FLOPs ratios; without it those entries are None."""
    return summary(model, input_size, twin=twin, name=name).totals()


def run_summary(model: nn.Module, config, input_size: int | Sequence[int] | None = None) -> ModelSummary:
    """The cost table of a training run's model (``config``: its TrainConfig): at the run's evaluation input size
    unless ``input_size`` is given, against the twin built with the run's options (its number of classes)."""
    twin = twin_name(config.model)
    twin_model = _twin_model(twin, config.model_options) if twin else None
    return _summarize(model, input_shape(input_size or run_input_size(config)), config.model, twin, twin_model)


def run_cost(model: nn.Module, config) -> dict:
    """`run_summary`'s totals: what the Trainer prints at the end of a run and stores in summary.json."""
    return run_summary(model, config).totals()

def default_input_size(model_name: str) -> tuple[int, int, int]:
    """The input the model was designed for: an ImageNet crop for the ImageNet models, CIFAR's 32×32 otherwise."""
    return IMAGENET_INPUT if "imagenet" in model_name or model_name == "resnet34" else CIFAR_INPUT


def run_input_size(config) -> tuple[int, int, int]:
    """A run's evaluation input: 224 crops on ImageNet, 32×32 for the CIFAR-sized datasets (digits included)."""
    return IMAGENET_INPUT if config.dataset == "imagenet" else default_input_size(config.model)

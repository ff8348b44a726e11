"""The cost table BNN papers report: binary/real parameters, BOPs, FLOPs, OPs and model size, per layer.

    cost = sdbnn.summary(model, (3, 32, 32))         # a ModelSummary; print(cost) shows the table
    cost = sdbnn.summary("resnet18_imagenet", 224)   # a registered name: its full-precision twin is found too
    sdbnn.summary.model_cost(model, (3, 32, 32))     # totals only, JSON-able (what a training run records)
    python -m sdbnn.summary resnet20                 # or a run directory (config.yaml + model.safetensors)

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

import argparse
import copy
import dataclasses
import json
import math
import sys
import types
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sdbnn.layers import SDConv2d, SEGate, StaticShift

BITS_PER_BINARY_PARAM = 1
BITS_PER_REAL_PARAM = 32
BOPS_PER_FLOP = 64  # a 64-bit word does 64 binary MACs in one XNOR + popcount (Bi-Real Net, ReActNet)

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


@dataclass
class LayerCost:
    """One module's share of the cost (per image). ``name`` is its qualified name ("" for the model itself)."""

    name: str
    kind: str
    output_shape: tuple[int, ...] = ()
    binary_params: int = 0
    real_params: int = 0
    training_only_params: int = 0
    bops: int = 0
    flops: int = 0
    elementwise_ops: int = 0
    asd_gate_flops: int = 0
    calls: int = 0

    @property
    def is_empty(self) -> bool:
        counts = (self.binary_params, self.real_params, self.training_only_params, self.bops, self.flops,
                  self.elementwise_ops)
        return not any(counts)


@dataclass
class ModelSummary:
    """Per-layer rows and totals. ``str(summary)`` (or `table`) prints them; `to_dict` gives JSON-able values."""

    model: str
    input_size: tuple[int, int, int]
    rows: list[LayerCost]
    twin: str | None = None
    twin_params: int | None = None
    twin_flops: int | None = None
    uncounted_ops: dict[str, int] = field(default_factory=dict)  # aten ops with no rule (should stay empty)

    def _total(self, column: str) -> int:
        return sum(getattr(row, column) for row in self.rows)

    @property
    def binary_params(self) -> int:
        return self._total("binary_params")

    @property
    def real_params(self) -> int:
        return self._total("real_params")

    @property
    def training_only_params(self) -> int:
        return self._total("training_only_params")

    @property
    def bops(self) -> int:
        return self._total("bops")

    @property
    def flops(self) -> int:
        return self._total("flops")

    @property
    def elementwise_ops(self) -> int:
        return self._total("elementwise_ops")

    @property
    def asd_gate_flops(self) -> int:
        return self._total("asd_gate_flops")

    @property
    def ops(self) -> float:
        return self.bops / BOPS_PER_FLOP + self.flops

    @property
    def size_bytes(self) -> float:
        return (self.binary_params * BITS_PER_BINARY_PARAM + self.real_params * BITS_PER_REAL_PARAM) / 8

    @property
    def twin_size_bytes(self) -> float | None:
        return None if self.twin_params is None else self.twin_params * BITS_PER_REAL_PARAM / 8

    @property
    def compression(self) -> float | None:
        """How many times smaller than the full-precision twin."""
        return None if self.twin_size_bytes is None else self.twin_size_bytes / self.size_bytes

    @property
    def speedup(self) -> float | None:
        """The twin's FLOPs over this model's OPs (the papers' "speed-up")."""
        return None if self.twin_flops is None else self.twin_flops / self.ops

    def totals(self) -> dict:
        """The totals as JSON-able numbers (what `model_cost` returns)."""
        return {
            "model": self.model,
            "input_size": list(self.input_size),
            "binary_params": self.binary_params,
            "real_params": self.real_params,
            "training_only_params": self.training_only_params,
            "bops": self.bops,
            "flops": self.flops,
            "ops": self.ops,
            "elementwise_ops": self.elementwise_ops,
            "asd_gate_flops": self.asd_gate_flops,
            "size_bytes": self.size_bytes,
            "twin": self.twin,
            "twin_params": self.twin_params,
            "twin_flops": self.twin_flops,
            "twin_size_bytes": self.twin_size_bytes,
            "compression": self.compression,
            "speedup": self.speedup,
        }

    def to_dict(self) -> dict:
        rows = [{**dataclasses.asdict(row), "output_shape": list(row.output_shape)} for row in self.rows]
        return {**self.totals(), "rows": rows, "uncounted_ops": dict(self.uncounted_ops)}

    def table(self, *, all_rows: bool = False) -> str:
        """A readable table (like larq.models.summary): one row per module that holds parameters or does work."""
        header = ("layer", "kind", "output", "binary params", "real params", "BOPs", "FLOPs", "elementwise")
        lines = []
        for row in self.rows:
            if row.is_empty and not all_rows:
                continue
            lines.append((row.name or "(model)", row.kind, "×".join(map(str, row.output_shape)),
                          f"{row.binary_params:,}", f"{row.real_params:,}",
                          f"{row.bops:,}", f"{row.flops:,}", f"{row.elementwise_ops:,}"))
        total = ("total", "", "", f"{self.binary_params:,}", f"{self.real_params:,}", f"{self.bops:,}",
                 f"{self.flops:,}", f"{self.elementwise_ops:,}")
        widths = [max(len(line[i]) for line in [header, total, *lines]) for i in range(len(header))]

        def render(cells):
            left = [cells[i].ljust(widths[i]) for i in range(3)]
            right = [cells[i].rjust(widths[i]) for i in range(3, len(cells))]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(render(header))
        size = f"{_bytes(self.size_bytes)}"
        if self.compression is not None:
            size += f" vs {_bytes(self.twin_size_bytes)} for {self.twin} ({self.compression:.1f}× smaller)"
        gate_share = f" ({100 * self.asd_gate_flops / self.flops:.2f}% of FLOPs)" if self.flops else ""
        out = [
            f"{self.model}, input {'×'.join(map(str, self.input_size))}, counts per image",
            rule, render(header), rule, *map(render, lines), rule, render(total), rule,
            f"binary parameters     {self.binary_params:>15,}  (1 bit each)",
            f"real parameters       {self.real_params:>15,}  (32 bits each)",
            f"training-only params  {self.training_only_params:>15,}  (WSD alpha: folded into the signs at export)",
            f"BOPs                  {self.bops:>15,}  {_si(self.bops)}",
            f"FLOPs                 {self.flops:>15,}  {_si(self.flops)}",
            f"OPs = BOPs/64 + FLOPs {round(self.ops):>15,}  {_si(self.ops)}",
            f"  ASD gates           {self.asd_gate_flops:>15,}  FLOPs{gate_share}",
            f"element-wise ops      {self.elementwise_ops:>15,}  {_si(self.elementwise_ops)} (BN, activations, "
            "additions, pooling, sign; not in OPs)",
            f"model size            {size}",
        ]
        if self.speedup is not None:
            out.append(f"OPs vs twin           {_si(self.twin_flops)} FLOPs / {_si(self.ops)} OPs = "
                       f"{self.speedup:.1f}× fewer")
        if self.uncounted_ops:
            uncounted = ", ".join(f"{op}×{calls}" for op, calls in sorted(self.uncounted_ops.items()))
            out.append(f"not counted (no rule): {uncounted}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()


def _si(value: float) -> str:
    """Three significant digits in scientific notation, as the papers print them: 1.68e9."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _bytes(value: float) -> str:
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


# --- counting ------------------------------------------------------------------------------------------------


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


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module behind torch.compile and (Distributed)DataParallel wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _image_size(input_size: int | Sequence[int]) -> tuple[int, int, int]:
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
    return _summarize(model, _image_size(input_size), name, twin_label, twin_model)


def _registered() -> list[str]:
    from sdbnn.models import list_models

    return list_models()


def model_cost(model: nn.Module, input_size: int | Sequence[int], *, twin: nn.Module | str | None = None,
               name: str | None = None) -> dict:
    """Totals only, as JSON-able numbers: what a training run prints at its end and stores in summary.json.

    ``twin``: the full-precision twin (a module, or a registered name such as ``config.model + "_fp"``), for the
    size and FLOPs ratios; without it those entries are None."""
    return summary(model, input_size, twin=twin, name=name).totals()


def run_cost(model: nn.Module, config) -> dict:
    """`model_cost` for a training run (a TrainConfig): the run's evaluation input size, and the twin built with the
    run's options (its number of classes). What the Trainer prints at the end of a run and stores in summary.json."""
    twin = twin_name(config.model)
    twin_model = _twin_model(twin, config.model_options) if twin else None
    return _summarize(model, run_input_size(config), config.model, twin, twin_model).totals()


def default_input_size(model_name: str) -> tuple[int, int, int]:
    """The input the model was designed for: an ImageNet crop for the ImageNet models, CIFAR's 32×32 otherwise."""
    return IMAGENET_INPUT if "imagenet" in model_name or model_name == "resnet34" else CIFAR_INPUT


def summary_of_run(run_dir: str | Path, input_size: int | Sequence[int] | None = None) -> ModelSummary:
    """Summary of a finished run: the model of its config.yaml (loaded from its model.safetensors, which checks
    that they fit), against its twin built with the same number of classes, at the run's evaluation input size
    unless ``input_size`` is given."""
    from sdbnn.export import load_run

    config, model = load_run(run_dir)
    twin = twin_name(config.model)
    twin_model = _twin_model(twin, config.model_options) if twin else None
    return _summarize(model, _image_size(input_size or run_input_size(config)), config.model, twin, twin_model)


def run_input_size(config) -> tuple[int, int, int]:
    """A run's evaluation input: 224 crops on ImageNet, 32×32 for the CIFAR-sized datasets (digits included)."""
    return IMAGENET_INPUT if config.dataset == "imagenet" else default_input_size(config.model)


def markdown_table(summaries: Sequence[ModelSummary]) -> str:
    """One Markdown row per model: the table of the README's "Deploy" section."""
    lines = [
        "| model | input | binary params | real params | BOPs | FLOPs | OPs | ASD gates (FLOPs) | element-wise ops "
        "| size | twin size | compression |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for result in summaries:
        twin_size = "" if result.twin_size_bytes is None else _bytes(result.twin_size_bytes)
        compression = "" if result.compression is None else f"{result.compression:.1f}×"
        lines.append(
            f"| `{result.model}` | {'×'.join(map(str, result.input_size[1:]))} | {result.binary_params:,} "
            f"| {result.real_params:,} | {_si(result.bops)} | {_si(result.flops)} | {_si(result.ops)} "
            f"| {_si(result.asd_gate_flops)} | {_si(result.elementwise_ops)} | {_bytes(result.size_bytes)} "
            f"| {twin_size} | {compression} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from sdbnn.models import list_models

    parser = argparse.ArgumentParser(
        prog="python -m sdbnn.summary",
        description="Per-layer binary/real parameters, BOPs, FLOPs, OPs and size of models or finished runs.",
    )
    parser.add_argument("targets", nargs="+", metavar="MODEL_OR_RUN_DIR",
                        help=f"model names ({', '.join(list_models())}) or run directories")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="N",
                        help="C H W, or one side (default: 224 for ImageNet models and runs, else 32)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print rows and totals as JSON")
    output.add_argument("--markdown", action="store_true", help="print one Markdown table row per target")
    parser.add_argument("--all-rows", action="store_true", help="also list modules that hold and do nothing")
    args = parser.parse_args(argv)
    input_size = None
    if args.input_size:
        input_size = args.input_size[0] if len(args.input_size) == 1 else args.input_size
    results = []
    try:
        for target in args.targets:
            if Path(target).is_dir():
                results.append(summary_of_run(target, input_size))
            elif target in list_models():
                results.append(summary(target, input_size))
            else:
                raise ValueError(f"{target!r} is neither a run directory nor a model name ({', '.join(list_models())})")
    except (FileNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.markdown:
        print(markdown_table(results))
    elif args.json:
        documents = [result.to_dict() for result in results]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    else:
        print("\n\n".join(result.table(all_rows=args.all_rows) for result in results))
    return 0


class _CallableModule(types.ModuleType):
    """``sdbnn.summary`` is both this module and the function: once the module is imported, Python binds the
    package attribute to the module, so the module itself forwards calls to `summary`."""

    def __call__(self, *args, **kwargs) -> ModelSummary:
        return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())

"""The CUDA training graph compiled for sm_90 / sm_80 on a CPU-only machine, and the H100 step it predicts.

    python -m studies.cuda_graph                                        # 4 models × bf16, fp32 × sm_90, sm_80
    python -m studies.cuda_graph --arch 90 --models resnet20 --precision bf16 --out /tmp/cg

Each model at its recipe's per-device batch and image size, channels_last, compiled as the Trainer compiles it on
CUDA (`torch.compile(model, fullgraph=True)`, Inductor), forward and backward, Inductor's kernels compiled to cubin
for the target (`studies.cuda_offline` holds every patch of torch internals). The C++ autograd engine runs no
backward on fake CUDA tensors, so the step is traced on CPU (bf16: CPU autocast, checked against CUDA autocast by
`autocast_check`) up to AOTAutograd's partitioned graphs, each then moved to cuda:0 and lowered by Inductor for the
target. The predicted H100 time counts bytes, FLOPs and launches (`graph_cost`, `eager_cost`). Predictions, not
measurements: docs/benchmarks.md §The CUDA training graph, without a GPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from benchmarks.common import table
from benchmarks.kernel_resources import MODELS, recipe, recipe_batch, resources

ROOT = Path(__file__).resolve().parent.parent
HBM_BYTES_PER_S = 3.35e12  # H100 SXM HBM3
TENSOR_FLOPS = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 494e12}  # dense; fp32 convs run TF32
MM_FP32_FLOPS = 67e12  # fp32 mm without TF32 (torch's default for matmul)
LAUNCH_US = 4.0  # per kernel launch: host launch + the device's gap between kernels
EAGER_OP_US = 8.0  # per eager aten op: Python + dispatcher + launch (the eager reference is host-bound on small ops)
FOREACH_TENSORS_PER_LAUNCH = 64  # multi_tensor_apply's tensors per launch (depth 2-4 lists)
NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "lift_fresh"}


def build(model_name: str, fake_device: str | None = None) -> torch.nn.Module:
    """The model as `benchmarks.training` builds it for a GPU step: train mode, channels_last, EDE (k, t) set; or,
    with ``fake_device``, for use inside a FakeTensorMode: built on meta outside it, its parameters fake tensors on
    that device, left NCHW (a fake tensor cannot be swapped; the same bytes)."""
    import sdbnn
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily(), torch.device("meta" if fake_device else "cpu"):
        torch.manual_seed(0)
        model = sdbnn.create_model(model_name).train()
        if not model_name.endswith("_fp"):
            sdbnn.set_ede(model, 1.0, 1.0)
    return model.to_empty(device=fake_device) if fake_device else model.to(memory_format=torch.channels_last)


# --- compiling ---------------------------------------------------------------------------------------------------


def _retarget(gm: torch.fx.GraphModule, example_inputs, fake_mode):
    """``gm`` (traced on CPU) moved to cuda:0: device arguments rewritten, fake CUDA inputs, fake values
    propagated again."""
    from torch.fx.passes.fake_tensor_prop import FakeTensorProp

    cuda = torch.device("cuda:0")

    def swap(value):
        if isinstance(value, torch.device):
            return cuda if value.type == "cpu" else value
        if isinstance(value, (list, tuple)):
            return type(value)(swap(item) for item in value)
        return {key: swap(item) for key, item in value.items()} if isinstance(value, dict) else value

    for node in gm.graph.nodes:
        node.args, node.kwargs = swap(node.args), swap(node.kwargs)
    gm.recompile()
    with fake_mode:
        inputs = [torch.empty_strided(x.size(), x.stride(), dtype=x.dtype, device=cuda)
                  if isinstance(x, torch.Tensor) else x for x in example_inputs]
    FakeTensorProp(gm, mode=fake_mode).propagate_dont_convert_inputs(*inputs)
    return gm, inputs


def _placeholder_outputs(gm: torch.fx.GraphModule):
    """A boxed callable returning uninitialised CPU tensors shaped like ``gm``'s outputs: the step runs on CPU
    without computing anything, so that AOTAutograd reaches the backward."""
    outputs = next(node for node in gm.graph.nodes if node.op == "output").args[0]
    specs = [(node.meta["val"].size(), node.meta["val"].stride(), node.meta["val"].dtype)
             if isinstance(node, torch.fx.Node) and isinstance(node.meta.get("val"), torch.Tensor) else None
             for node in outputs]

    def run(args):
        args.clear()
        return [None if spec is None else torch.empty_strided(spec[0], spec[1], dtype=spec[2]) for spec in specs]

    run._boxed_call = True
    return run


def compile_step(model_name: str, batch: int, size: int, precision: str, arch: int, backend: str = "ops",
                 compile_kernels: bool = True) -> dict:
    """Forward and backward of one training step compiled for sm_<arch>: {"costs": {"forward", "backward"},
    "kernels": [compiled kernel configs], "dynamo_graphs", "graph_breaks"}."""
    import sdbnn
    from torch._dynamo.utils import counters
    from torch._guards import detect_fake_mode
    from torch._inductor.compile_fx import compile_fx, compile_fx_inner

    from studies import cuda_offline

    torch._dynamo.reset()
    counters.clear()
    cuda_offline.compiled_kernels.clear()
    costs, dynamo_graphs = {}, 0

    def inner(gm, example_inputs, **kwargs):
        placeholder = _placeholder_outputs(gm)
        with cuda_offline.cuda_target(arch, compile_kernels):  # fake CUDA values under the patched queries too
            cuda_gm, inputs = _retarget(copy.deepcopy(gm), example_inputs, detect_fake_mode(example_inputs))
            compiled = compile_fx_inner(cuda_gm, inputs, **kwargs)
        costs["backward" if kwargs.get("is_backward") else "forward"] = graph_cost(compiled.source_code, cuda_gm)
        return placeholder

    def backend_fn(gm, example_inputs):
        nonlocal dynamo_graphs
        dynamo_graphs += 1
        return compile_fx(gm, example_inputs, inner_compile=inner, decompositions=cuda_offline.cuda_decompositions())

    model = build(model_name)
    images = torch.empty(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, backend=backend_fn, fullgraph=True)
    with sdbnn.backend(backend), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        logits = compiled(images)
    logits.float().sum().backward()
    return {"costs": costs, "kernels": list(cuda_offline.compiled_kernels),
            "dynamo_graphs": dynamo_graphs, "graph_breaks": sum(counters["graph_break"].values())}


class Ops(TorchDispatchMode):
    """Records every op dispatched inside it: (op, its tensors' dtypes, their bytes, FLOPs, peak FLOP/s, launches),
    and keeps no tensor (a reference kept would stop autograd from stealing a gradient: a copy more)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [value for value in tree_leaves((args, kwargs, out)) if isinstance(value, torch.Tensor)]
        name = func.overloadpacket.__name__
        launches = math.ceil(len(args[0]) / FOREACH_TENSORS_PER_LAUNCH) if name.startswith("_foreach") else 1
        self.ops.append((func, tuple(str(tensor.dtype) for tensor in tensors), sum(map(_bytes, tensors)),
                         *flops(name, args, out), launches))
        return out


def autocast_check(model_name: str, batch: int, size: int) -> dict:
    """One forward under CUDA autocast on fake CUDA tensors vs under CPU autocast on CPU: the (op, dtypes) sequence
    must be the same, or the CPU-traced bf16 graph is not the one a GPU would build."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from studies import cuda_offline

    def trace(device: str) -> list:
        with FakeTensorMode(allow_non_fake_inputs=True):
            model = build(model_name, "cuda:0" if device == "cuda" else "cpu")
            images = torch.empty(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, torch.bfloat16), torch.no_grad(), Ops() as ops:
                model(images)
        return [(str(func), dtypes) for func, dtypes, *_ in ops.ops]

    with cuda_offline.cuda_target(90, compile_kernels=False):  # CUDA autocast and fake CUDA tensors need no driver
        cuda_ops = trace("cuda")
    cpu_ops = trace("cpu")
    differences = [(a, b) for a, b in zip(cuda_ops, cpu_ops) if a != b]
    return {"ops": len(cuda_ops), "same_ops": [a[0] for a in cuda_ops] == [b[0] for b in cpu_ops],
            "same": cuda_ops == cpu_ops, "differing": dict(Counter(a[0] for a, _ in differences)),
            "example": [list(map(str, pair)) for pair in differences[:1]] or None}


# --- the cost model ----------------------------------------------------------------------------------------------


def _bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_bytes(item) for item in value) if isinstance(value, (list, tuple)) else 0


def flops(name: str, args, out) -> tuple[float, float]:
    """(FLOPs, peak FLOP/s) of an aten op: convolutions on the tensor cores (fp32 as TF32), matmuls too unless fp32;
    no FLOPs for anything else (Inductor's kernels and the custom ops are timed by their bytes)."""
    if name == "convolution":
        return 2.0 * math.prod(out.shape) * math.prod(args[1].shape[1:]), TENSOR_FLOPS.get(args[0].dtype, math.inf)
    if name == "convolution_backward":  # input and weight gradients, as the output mask asks
        conv = 2.0 * math.prod(args[0].shape) * math.prod(args[2].shape[1:])
        return conv * sum(map(bool, args[-1][:2])), TENSOR_FLOPS.get(args[0].dtype, math.inf)
    if name in ("mm", "addmm", "bmm"):
        a, b = args[-2:]
        peak = MM_FP32_FLOPS if a.dtype == torch.float32 else TENSOR_FLOPS.get(a.dtype, math.inf)
        return 2.0 * math.prod(a.shape) * b.shape[-1], peak
    return 0.0, math.inf


EXTERN_OPS = {("aten", op) for op in ("convolution", "convolution_backward", "mm", "addmm", "bmm")}  # not Inductor's
_META = re.compile(r"'kernel_name': '(\w+)'.*?'kernel_num_gb': ([\d.e+-]+)")
_LAUNCH = re.compile(r"^\s+(triton_\w+)\.run\(", re.MULTILINE)
_EXTERN = re.compile(r"(extern_kernels\.(\w+)|torch\.ops\.(\w+)\.(\w+)\.\w+|aten\.(\w+)\.\w+)\(")


def graph_cost(code: str, gm: torch.fx.GraphModule) -> dict:
    """Launches, bytes, FLOPs and predicted time of one compiled graph: Triton kernels from Inductor's output code
    (its own `kernel_num_gb`; its `kernel_flop` counts every origin node's FLOPs, a convolution whose input a kernel
    only re-lays included, so it is not used), external calls from the graph's nodes (convolutions, mm, the custom
    ops: each input and output once, as the custom ops' kernels stream them), named as the output code calls them."""
    kernel_bytes = {name: float(gb) * 1e9 for name, gb in _META.findall(code)}
    call = code[code.rindex("def call(self, args)") if "def call(self, args)" in code else code.rindex("def call("):]
    launches = Counter(_LAUNCH.findall(call))
    extern_calls = Counter()
    for match in _EXTERN.finditer(call):
        name = match.group(2) or match.group(4) or match.group(5)
        extern_calls[f"sdbnn::{name}" if match.group(3) == "sdbnn" else name] += 1
    per_kernel = {name: {"launches": count, "bytes": kernel_bytes[name], "predicted_us": 1e6 * kernel_bytes[name]
                         / HBM_BYTES_PER_S} for name, count in launches.items()}
    time_s = sum(kernel["predicted_us"] * kernel["launches"] for kernel in per_kernel.values()) / 1e6
    externs, conv_dtypes = 0, Counter()
    extern_bytes = extern_flops = 0
    for node in gm.graph.nodes:
        op = node.target.overloadpacket.__name__ if isinstance(node.target, torch._ops.OpOverload) else None
        if op is None or not (node.target.namespace == "sdbnn" or (node.target.namespace, op) in EXTERN_OPS):
            continue
        args = torch.fx.node.map_arg(node.args, lambda arg: arg.meta.get("val"))
        nbytes = sum(_bytes(arg.meta.get("val")) for arg in node.all_input_nodes) + _bytes(node.meta.get("val"))
        node_flops, peak = flops(op, args, node.meta.get("val"))
        externs, extern_bytes, extern_flops = externs + 1, extern_bytes + nbytes, extern_flops + node_flops
        time_s += max(nbytes / HBM_BYTES_PER_S, node_flops / peak)
        if op == "convolution":
            conv_dtypes[str(args[0].dtype).removeprefix("torch.")] += 1
    n_launches = sum(launches.values()) + externs
    return {"triton_launches": sum(launches.values()), "per_kernel": per_kernel, "extern_calls": dict(extern_calls),
            "bytes": sum(kernel_bytes[name] * count for name, count in launches.items()) + extern_bytes,
            "flops": extern_flops, "launches": n_launches,
            "time_ms": 1e3 * time_s + n_launches * LAUNCH_US / 1e3, "conv_dtypes": dict(conv_dtypes)}


def eager_cost(model_name: str, step) -> dict:
    """Launches, bytes, FLOPs and predicted time of what ``step(model)`` returns, run eagerly on fake CPU tensors (the
    autograd engine runs no backward on fake CUDA ones; the ops and sizes are CUDA's, cuDNN's batch norm aside): each
    aten op that launches a kernel (not views, not allocations) its tensors' bytes, or its FLOPs at the peak
    (`flops`), foreach ops once per `FOREACH_TENSORS_PER_LAUNCH` tensors, `EAGER_OP_US` per launch."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        run = step(build(model_name, "cpu"))
        with Ops() as ops:
            run()
    launches, nbytes, total_flops, time_s = 0, 0, 0.0, 0.0
    for func, _, op_bytes, op_flops, peak, op_launches in ops.ops:
        if func.is_view or func.overloadpacket.__name__ in NO_KERNEL or func.namespace not in ("aten", "sdbnn"):
            continue
        launches, nbytes, total_flops = launches + op_launches, nbytes + op_bytes, total_flops + op_flops
        time_s += max(op_bytes / HBM_BYTES_PER_S, op_flops / peak)
    return {"launches": launches, "bytes": nbytes, "flops": total_flops,
            "time_ms": 1e3 * time_s + launches * EAGER_OP_US / 1e3}


def eager_rest(model_name: str, batch: int) -> dict:
    """What a compiled step runs outside the compiled graphs: cross-entropy forward and backward on the logits, and
    the recipe's optimizer step (foreach, as on CUDA) over the model's parameters."""
    def step(model):
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.empty_like(p)
        optimizer = (torch.optim.Adam(params, lr=1e-3, foreach=True) if recipe(model_name)["optimizer"] == "adam" else
                     torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True))
        logits = torch.empty(batch, 1000 if recipe(model_name)["dataset"] == "imagenet" else 10, requires_grad=True)
        labels = torch.zeros(batch, dtype=torch.long)
        return lambda: (torch.nn.functional.cross_entropy(logits, labels).backward(), optimizer.step())
    return eager_cost(model_name, step)


def eager_reference(model_name: str, batch: int, size: int) -> dict:
    """The eager fp32 reference step (reference backend, no autocast, channels_last input) op by op."""
    import sdbnn

    def step(model):
        images = torch.empty(batch, 3, size, size).contiguous(memory_format=torch.channels_last)

        def run():
            with sdbnn.backend("reference"):
                model(images).float().sum().backward()
        return run
    return eager_cost(model_name, step)


# --- one row: model × precision × arch ---------------------------------------------------------------------------


def spills(kernels: list[dict]) -> dict:
    """``spilling_kernels``: kernels whose every compiled config spills (Inductor's runtime autotuner picks one
    config per kernel on the GPU; a kernel with a config that does not spill need not spill); ``spilling_configs``:
    every config that spills, listed all the same."""
    configs = [kernel for kernel in kernels if kernel["spill_bytes"]]
    return {"spilling_kernels": sorted({kernel["name"] for kernel in configs
                                        if all(k["spill_bytes"] for k in kernels if k["name"] == kernel["name"])}),
            "spilling_configs": [{key: kernel.get(key) for key in ("name", "config", "num_warps", "registers",
                                                                   "spill_bytes")} for kernel in configs]}


def _total(costs: dict, rest: dict) -> dict:
    return {key: sum(cost[key] for cost in costs.values()) + rest[key]
            for key in ("launches", "time_ms", "bytes", "flops")}


def _summary(cost: dict) -> dict:
    return {"bytes": cost["bytes"], "launches": cost["launches"], "time_ms": round(cost["time_ms"], 4)}


def one_row(model: str, precision: str, arch: int, batch: int | None = None, extras: bool = True) -> dict:
    recipe_batch_size, size = recipe_batch(model)
    batch = batch or recipe_batch_size
    compiled = compile_step(model, batch, size, precision, arch)
    costs = compiled["costs"]
    kernels = [{"name": kernel["name"], "config": kernel["config"], "num_warps": kernel["num_warps"],
                **resources(kernel["cubin"], arch, kernel["num_warps"], kernel["shared"])}
               for kernel in compiled["kernels"]]
    rest = eager_rest(model, batch)
    step = _total(costs, rest)
    externs = sum((Counter(cost["extern_calls"]) for cost in costs.values()), Counter())
    row = {
        "model": model, "precision": precision, "arch": f"sm_{arch}", "batch": batch, "image_size": size,
        "layout": "channels_last", "compiled": {"forward": "forward" in costs, "backward": "backward" in costs},
        "graph_breaks": compiled["graph_breaks"], "graphs": compiled["dynamo_graphs"],
        "inductor_kernels": len({kernel["name"] for kernel in kernels}),
        "triton_launches": sum(cost["triton_launches"] for cost in costs.values()),
        "extern_calls": dict(externs), "conv_dtypes": costs.get("forward", {}).get("conv_dtypes"), **spills(kernels),
        "max_registers": max((kernel["registers"] for kernel in kernels), default=None),
        "min_occupancy": min((kernel["occupancy"] for kernel in kernels), default=None),
        "cubin_files": len(list(Path(os.environ.get("TRITON_CACHE_DIR", tempfile.gettempdir())).rglob("*.cubin"))),
        "bytes_per_step": step["bytes"], "flops_per_step": step["flops"], "launches_per_step": step["launches"],
        "predicted_step_ms": round(step["time_ms"], 4), "graph_costs": costs, "eager_rest": rest, "kernels": kernels,
    }
    if extras:  # the full-precision twin and the reference backend compiled (not to cubin), the eager reference
        row["autocast_check"] = autocast_check(model, min(batch, 8), size) if precision == "bf16" else None
        twin_costs = compile_step(f"{model}_fp", batch, size, precision, arch, compile_kernels=False)["costs"]
        twin = _total(twin_costs, eager_rest(f"{model}_fp", batch))
        reference = compile_step(model, batch, size, precision, arch, backend="reference", compile_kernels=False)
        eager = _total({"reference": eager_reference(model, batch, size)}, rest)
        row["fp_twin"] = {key: twin[key] for key in ("bytes", "launches", "time_ms")}
        row["eager_reference_fp32"] = eager
        row["predicted_vs_fp_twin"] = round(twin["time_ms"] / step["time_ms"], 3)
        row["predicted_vs_eager_reference"] = round(eager["time_ms"] / step["time_ms"], 3)
        row["ops_vs_inductor_reference"] = {name: {"ops": _summary(costs[name]), "reference": _summary(cost)}
                                            for name, cost in reference["costs"].items()}
    return row


# --- the command -------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    header = ["model", "precision", "arch", "batch", "fwd/bwd compiled", "graph breaks", "Inductor kernels (launches)",
              "convs", "act_sign (+bwd)", "weight_sign (+bwd)", "max regs", "spilling", "min occupancy", "GB/step",
              "predicted ms", "vs fp twin (≥ 0.9)", "vs eager fp32 ref (≥ 5)", "cubins"]
    rows, compared, borrowed, spilled, checks = [], [], [], [], []
    for row in result["rows"]:
        where = [row["model"], row["precision"], row["arch"]]
        if "error" in row:
            rows.append(where + ["", f"**failed**: {row['error'].splitlines()[-1][:150]}"] + [""] * 13)
            continue
        calls = lambda op: f"{row['extern_calls'].get(op, 0)}+{row['extern_calls'].get(op + '_backward', 0)}"  # noqa
        configs = f" ({len(row['spilling_configs'])} configs)" if row.get("spilling_configs") else ""
        rows.append(where + [
            row["batch"], "/".join("yes" if row["compiled"][graph] else "NO" for graph in ("forward", "backward")),
            row["graph_breaks"], f"{row['inductor_kernels']} ({row['triton_launches']})", calls("convolution"),
            calls("sdbnn::act_sign"), calls("sdbnn::weight_sign"), row["max_registers"],
            f"{len(row['spilling_kernels']) or 'none'}{configs}", f"{row['min_occupancy']:.0%}",
            f"{row['bytes_per_step'] / 1e9:.3f}", f"{row['predicted_step_ms']:.3f}",
            row.get("predicted_vs_fp_twin", "—"), row.get("predicted_vs_eager_reference", "—"), row["cubin_files"]])
        cell = lambda cost: f"{cost['bytes'] / 1e6:.1f} MB / {cost['launches']} / {cost['time_ms']:.3f}"  # noqa
        compared += [where + [graph, cell(pair["ops"]), cell(pair["reference"]),
                              f"{pair['ops']['bytes'] / pair['reference']['bytes']:.2f}"]
                     for graph, pair in row.get("ops_vs_inductor_reference", {}).items()]
        borrowed += [" ".join(where)] if "ratios_from" in row else []
        spilled += [f"{' '.join(where)}: {config['name']} {config['config']} num_warps={config['num_warps']}, "
                    f"{config['registers']} registers, {config['spill_bytes']} bytes"
                    for config in row.get("spilling_configs", [])]
        if (check := row.get("autocast_check")) and row["arch"] == "sm_90":
            checks.append(f"{row['model']}: {check['ops']} ops, " + ("all the same" if check["same"] else "differing: "
                          + ", ".join(f"{op} ×{count}" for op, count in check["differing"].items())))
    lines = [f"# CUDA training graph compiled without a GPU: PREDICTED H100 step ({result['date']})", "",
             f"torch {result['torch']}, triton {result['triton']}, commit {result.get('commit')}; "
             f"`{result['command']}`. Compiled on a CPU-only machine for the targets below; every time here is a "
             f"prediction from byte and FLOP counts (HBM {HBM_BYTES_PER_S / 1e12:.2f} TB/s, tensor cores "
             f"{TENSOR_FLOPS[torch.bfloat16] / 1e12:.0f} TFLOP/s bf16, {LAUNCH_US} µs per launch), not a measurement.",
             "", *table(header, rows).splitlines()]
    if borrowed:
        lines += ["", f"Ratios of {', '.join(sorted(borrowed))}: against the twin and eager reference predicted from "
                  "the sm_90 compiles (every prediction is for an H100)."]
    if spilled:
        lines += ["", "Spilling configs (cuobjdump's stack + local bytes): " + "; ".join(spilled) + "."]
    if compared:
        lines += ["", "Hand kernels (custom ops) vs Inductor fusing the reference math (`sdbnn.backend(\"reference\")` "
                  "compiled the same way), per graph: bytes moved / launches / predicted ms.", "",
                  *table(["model", "precision", "arch", "graph", "custom ops", "Inductor on reference",
                          "bytes ops ÷ reference"], compared).splitlines()]
    if checks:
        lines += ["", "Autocast check (bf16 forward under CUDA autocast on fake CUDA tensors vs CPU autocast on CPU, "
                  "op by op with dtypes): " + "; ".join(checks) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.cuda_graph", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=int, default=[90, 80], choices=[80, 90])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--batch", type=int, help="override the recipes' per-device batch (tests)")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the fp twin, the reference compile and the eager reference (no ratios)")
    parser.add_argument("--out", type=Path, default=ROOT / "studies" / "results" / "cuda-graph")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sdbnn-cuda-graph",
                        help="private Triton/Inductor caches, one folder per row (the cubins land there)")
    parser.add_argument("--resume", type=Path, help="a result JSON whose rows are kept (those rows are not redone)")
    parser.add_argument("--row", nargs=3, metavar=("MODEL", "PRECISION", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:  # one row, in its own process (its own caches and patches), as JSON on the last line of stdout
        model, precision, arch = args.row
        print(json.dumps(one_row(model, precision, int(arch), args.batch, extras=not args.no_extras), default=str))
        return 0
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    from studies import cuda_offline

    cuda_offline.check()
    rows = [row for row in json.loads(args.resume.read_text())["rows"] if "error" not in row] if args.resume else []
    extras_arch = 90 if 90 in args.arch else args.arch[0]  # the twin and reference predictions: one arch's compile
    for arch in sorted(args.arch, key=lambda arch: arch != extras_arch):
        for precision in args.precision:
            for model in args.models:
                if any((r["model"], r["precision"], r["arch"]) == (model, precision, f"sm_{arch}") for r in rows):
                    continue
                row = _run_row(args, model, precision, arch, extras=arch == extras_arch and not args.no_extras)
                base = next((other for other in rows if "fp_twin" in other and "error" not in row
                             and (other["model"], other["precision"]) == (model, precision)), None)
                if base is not None and "fp_twin" not in row:  # the twin and eager predictions of the other arch
                    row["ratios_from"] = base["arch"]
                    row["predicted_vs_fp_twin"] = round(base["fp_twin"]["time_ms"] / row["predicted_step_ms"], 3)
                    row["predicted_vs_eager_reference"] = round(
                        base["eager_reference_fp32"]["time_ms"] / row["predicted_step_ms"], 3)
                rows.append(row)
                _write(args, argv, rows)
    failures = [row for row in rows if "error" in row or not all(row["compiled"].values()) or row["graph_breaks"]
                or row["spilling_kernels"] or row["bytes_per_step"] <= 0]
    return 1 if failures else 0


def _run_row(args, model: str, precision: str, arch: int, extras: bool) -> dict:
    cache = args.cache / f"{model}-{precision}-sm{arch}"
    shutil.rmtree(cache, ignore_errors=True)  # empty caches: the cubins counted are this row's
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache / "triton"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    command = [sys.executable, "-m", "studies.cuda_graph", "--row", model, precision, str(arch)]
    command += (["--batch", str(args.batch)] if args.batch else []) + ([] if extras else ["--no-extras"])
    print(f"compiling {model} {precision} sm_{arch} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        print(done.stderr[-3000:], flush=True)
        return {"model": model, "precision": precision, "arch": f"sm_{arch}", "error": done.stderr[-2000:]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print("  " + ", ".join(f"{key} {row.get(key)}" for key in (
        "compiled", "graph_breaks", "inductor_kernels", "cubin_files", "spilling_kernels", "bytes_per_step",
        "predicted_step_ms", "predicted_vs_fp_twin", "predicted_vs_eager_reference")), flush=True)
    return row


def _write(args, argv, rows: list[dict]) -> None:
    import triton

    from benchmarks.common import write_named_results
    from sdbnn.provenance import commit

    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "triton": triton.__version__,
              **commit(), "command": " ".join(["python -m studies.cuda_graph", *(argv or sys.argv[1:])]),
              "constants": {"hbm_bytes_per_s": HBM_BYTES_PER_S, "launch_us": LAUNCH_US, "eager_op_us": EAGER_OP_US,
                            "tensor_flops": {str(k): v for k, v in TENSOR_FLOPS.items()}, "fp32_flops": MM_FP32_FLOPS},
              "rows": rows}
    write_named_results(args.out, f"cuda-graph-{result['date']}", result, markdown(result))


if __name__ == "__main__":
    sys.exit(main())

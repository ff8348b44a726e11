"""The cost model of `benchmarks.cuda_graph`: bytes, FLOPs, launches and the predicted H100 time of compiled graphs
(from Inductor's output code and the graph's extern nodes) and of eager steps (op by op on fake tensors). Predictions,
not measurements; the constants are an H100 SXM's."""

from __future__ import annotations

import contextlib
import math
import re
from collections import Counter

import torch

HBM_BYTES_PER_S = 3.35e12  # H100 SXM HBM3
TENSOR_FLOPS = {torch.bfloat16: 989e12, torch.float16: 989e12, torch.float32: 494e12}  # dense; fp32 convs run TF32
MM_FP32_FLOPS = 67e12  # fp32 mm without TF32 (torch's default for matmul), and Inductor's pointwise math
LAUNCH_US = 4.0  # per kernel launch: host launch + the device's gap between kernels
EAGER_OP_US = 8.0  # per eager aten op: Python + dispatcher + launch (the eager reference is host-bound on small ops)
FOREACH_TENSORS_PER_LAUNCH = 64  # multi_tensor_apply's tensors per launch (depth 2-4 lists)
OPTIMIZERS = {"resnet20": "sgd", "vgg_small": "sgd", "resnet18_cifar": "sgd", "resnet18_imagenet": "adam"}
CLASSES = {"resnet18_imagenet": 1000}
NO_KERNEL = {"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "detach", "lift_fresh"}


def build(model_name: str, channels_last: bool = True) -> torch.nn.Module:
    """The model as `benchmarks.training` builds it for a GPU step: train mode, channels_last, EDE (k, t) set."""
    import sdbnn

    torch.manual_seed(0)
    model = sdbnn.create_model(model_name).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if not model_name.endswith("_fp"):
        sdbnn.set_ede(model, 1.0, 1.0)
    return model


# --- reading the compiled graphs ---------------------------------------------------------------------------------


def _numel_bytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    return sum(_numel_bytes(item) for item in value) if isinstance(value, (list, tuple)) else 0


def _conv_flops(weight_shape, output_shape) -> float:
    return 2.0 * math.prod(output_shape) * math.prod(weight_shape[1:])


def extern_cost(node: torch.fx.Node) -> dict | None:
    """{op, bytes, flops, dtype} of a graph node that Inductor leaves to an external kernel (convolution, mm, the
    custom ops), or None. Bytes: the node's inputs and outputs, each once (the custom ops' kernels stream each
    tensor once: `benchmarks.kernel_resources`)."""
    target, aten = node.target, torch.ops.aten
    values = [arg.meta.get("val") for arg in node.all_input_nodes]
    out = node.meta.get("val")
    io = sum(_numel_bytes(value) for value in values) + _numel_bytes(out)
    if target is aten.convolution.default:
        return {"op": "convolution", "bytes": io, "flops": _conv_flops(values[1].shape, out.shape),
                "dtype": values[0].dtype}
    if target is aten.convolution_backward.default:
        grad, _, weight = values[:3]
        masks = node.args[-1]
        return {"op": "convolution_backward", "bytes": io, "dtype": grad.dtype,
                "flops": _conv_flops(weight.shape, grad.shape) * (int(masks[0]) + int(masks[1]))}
    if target in (aten.mm.default, aten.addmm.default, aten.bmm.default):
        a, b = values[-2:]
        return {"op": "mm", "bytes": io, "flops": 2.0 * math.prod(a.shape) * b.shape[-1], "dtype": a.dtype}
    if getattr(target, "namespace", None) == "sdbnn":
        return {"op": f"sdbnn::{target._opname}", "bytes": io, "flops": 0.0, "dtype": None}
    return None


_META = re.compile(r"'kernel_name': '(\w+)'.*?'kernel_num_gb': ([\d.e+-]+)(?:.*?'kernel_flop': ([\d.e+-]+))?")
_LAUNCH = re.compile(r"^\s+(triton_\w+)\.run\(", re.MULTILINE)
_EXTERN = re.compile(r"(extern_kernels\.(\w+)|torch\.ops\.(\w+)\.(\w+)\.\w+|aten\.(\w+)\.\w+)\(")


def graph_cost(code: str, gm: torch.fx.GraphModule) -> dict:
    """Launches, bytes and FLOPs of one compiled graph: Triton kernels from Inductor's output code (its own
    `kernel_num_gb`), external calls from the graph's nodes, counted against the calls in the output code."""
    meta = {name: (float(gb) * 1e9, float(flop or 0)) for name, gb, flop in _META.findall(code)}
    call = code[code.rindex("def call(self, args)") if "def call(self, args)" in code else code.rindex("def call("):]
    launches = Counter(_LAUNCH.findall(call))
    extern_calls = Counter()
    for match in _EXTERN.finditer(call):
        name = match.group(2) or match.group(4) or match.group(5)
        extern_calls[f"sdbnn::{name}" if match.group(3) == "sdbnn" else name] += 1
    externs = [cost for cost in map(extern_cost, gm.graph.nodes) if cost is not None]
    # Inductor's `kernel_flop` is not used: it counts every origin node's FLOPs, a convolution whose input a kernel
    # only re-lays included; its pointwise and reduction kernels are timed by their bytes
    per_kernel = {name: {"launches": count, "bytes": meta[name][0],
                         "predicted_us": 1e6 * meta[name][0] / HBM_BYTES_PER_S} for name, count in launches.items()}
    time_s = sum(kernel["predicted_us"] * kernel["launches"] for kernel in per_kernel.values()) / 1e6
    for cost in externs:
        peak = MM_FP32_FLOPS if cost["op"] == "mm" and cost["dtype"] == torch.float32 else TENSOR_FLOPS.get(
            cost["dtype"], math.inf)
        time_s += max(cost["bytes"] / HBM_BYTES_PER_S, cost["flops"] / peak)
    n_launches = sum(launches.values()) + len(externs)
    return {
        "triton_launches": sum(launches.values()), "triton_kernels": len(meta), "per_kernel": per_kernel,
        "extern_calls": dict(extern_calls), "extern_nodes": dict(Counter(cost["op"] for cost in externs)),
        "triton_bytes": sum(meta[name][0] * count for name, count in launches.items()),
        "extern_bytes": sum(cost["bytes"] for cost in externs),
        "flops": sum(cost["flops"] for cost in externs),
        "launches": n_launches, "time_ms": 1e3 * time_s + n_launches * LAUNCH_US / 1e3,
        "conv_dtypes": dict(Counter(str(cost["dtype"]).removeprefix("torch.") for cost in externs
                                    if cost["op"] == "convolution")),
    }


# --- eager costs: the rest of a compiled step, and the eager reference step ------------------------------------


class OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Each aten op that launches a kernel (not views, not allocations): bytes of its tensor inputs and outputs,
    FLOPs of convolutions and matmuls. Foreach ops launch once per `FOREACH_TENSORS_PER_LAUNCH` tensors."""

    def __init__(self):
        super().__init__()
        self.launches, self.bytes, self.flops, self.time_s = 0, 0, 0.0, 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.is_view or name in NO_KERNEL or func.namespace not in ("aten", "sdbnn"):
            return out
        flat = torch.utils._pytree.tree_leaves((args, kwargs, out))
        tensors = [value for value in flat if isinstance(value, torch.Tensor)]
        nbytes = sum(map(_numel_bytes, tensors))
        flops, peak = 0.0, MM_FP32_FLOPS
        if name == "convolution":
            flops, peak = _conv_flops(args[1].shape, out.shape), TENSOR_FLOPS[args[0].dtype]
        elif name == "convolution_backward":
            flops = _conv_flops(args[2].shape, args[0].shape) * sum(map(bool, args[-1][:2]))
            peak = TENSOR_FLOPS[args[0].dtype]
        elif name in ("mm", "addmm", "bmm"):
            flops = 2.0 * math.prod(args[-2].shape) * args[-1].shape[-1]
        launches = math.ceil(len(args[0]) / FOREACH_TENSORS_PER_LAUNCH) if name.startswith("_foreach") else 1
        self.launches += launches
        self.bytes += nbytes
        self.flops += flops
        self.time_s += max(nbytes / HBM_BYTES_PER_S, flops / peak)
        return out

    def result(self, per_launch_us: float) -> dict:
        return {"launches": self.launches, "bytes": self.bytes, "flops": self.flops,
                "time_ms": 1e3 * self.time_s + self.launches * per_launch_us / 1e3}


@contextlib.contextmanager
def fake_cuda():
    """A FakeTensorMode whose tensors are on cuda:0 (no driver needed), with the CUDA device queries patched."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from benchmarks import cuda_offline

    with cuda_offline.cuda_target(90, compile_kernels=False), FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


@contextlib.contextmanager
def fake_cpu():
    """Fake CPU tensors: the eager counts (the autograd engine runs no backward on fake CUDA tensors); the ops and
    their tensors' sizes are the same as on CUDA, cuDNN's batch norm aside (one kernel either way)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def _fake_model(model_name: str, device: str) -> torch.nn.Module:
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    # built on meta outside the fake mode; parameters left NCHW (a fake tensor cannot be swapped): the same bytes
    with unset_fake_temporarily(), torch.device("meta"):
        model = build(model_name, channels_last=False)
    return model.to_empty(device=device)


def eager_rest(model_name: str, batch: int) -> dict:
    """What a compiled step runs outside the compiled graphs: cross-entropy forward and backward on the logits, and
    the recipe's optimizer step (foreach, as on CUDA) over the model's parameters."""
    base = model_name.removesuffix("_fp")
    with fake_cpu():
        params = [p for p in _fake_model(model_name, "cpu").parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.empty_like(p)
        optimizer = (torch.optim.Adam(params, lr=1e-3, foreach=True) if OPTIMIZERS[base] == "adam" else
                     torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4, foreach=True))
        logits = torch.empty(batch, CLASSES.get(base, 10), requires_grad=True)
        labels = torch.zeros(batch, dtype=torch.long)
        counter = OpCounter()
        with counter:
            torch.nn.functional.cross_entropy(logits, labels).backward()
            optimizer.step()
    return counter.result(EAGER_OP_US)


def eager_reference(model_name: str, batch: int, size: int) -> dict:
    """The eager fp32 reference step (reference backend, no autocast, channels_last) op by op on fake tensors."""
    import sdbnn

    with fake_cpu():
        model = _fake_model(model_name, "cpu")
        images = torch.empty(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        counter = OpCounter()
        with sdbnn.backend("reference"), counter:
            model(images).float().sum().backward()
    return counter.result(EAGER_OP_US)

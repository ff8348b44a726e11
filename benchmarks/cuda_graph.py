"""The CUDA training graph compiled for sm_90 / sm_80 on a CPU-only machine, and the H100 step it predicts.

    python -m benchmarks.cuda_graph                                        # 4 models × bf16, fp32 × sm_90, sm_80
    python -m benchmarks.cuda_graph --arch 90 --models resnet20 --precision bf16 --out /tmp/cg

Each model at its recipe's per-device batch and image size, channels_last, compiled as the Trainer compiles it on
CUDA (`torch.compile(model, fullgraph=True)`, Inductor, default mode), forward and backward, with Inductor's Triton
kernels compiled to cubin for the target (`benchmarks.cuda_offline` holds every patch of torch internals).

How, without a GPU: the C++ autograd engine will not run a backward on fake CUDA tensors, so dynamo and AOTAutograd
trace the step on CPU tensors (bf16: under CPU autocast) up to the partitioned forward and backward graphs; each is
then moved to `cuda:0` (device arguments, fake inputs, fake values propagated again) and handed to Inductor's
`compile_fx_inner` for the CUDA target. What can differ from a GPU compile, in detail in
docs/benchmarks.md §The CUDA training graph, without a GPU: (1) autocast's CPU policy instead of CUDA's, checked
on every bf16 run (`autocast_check`: one forward on fake CUDA tensors under CUDA autocast against one on CPU under
CPU autocast, op by op with dtypes; only batch norm's saved statistics differ, fp32 on CUDA, bf16 on CPU, and the
batch-norm decomposition's CPU branch keeps them bf16 in the graph); (2) device-dependent decompositions: mm / addmm / bmm get their CUDA branches
(`cuda_offline.cuda_decompositions`); (3) convolutions report cuDNN's output layout (`cuda_offline`); (4) no
autotuning and no mm padding (both benchmark on the device): every autotune config is compiled, and a kernel spills
when all its configs do (`spills`).

Prediction (H100 SXM, the constants in `benchmarks.cuda_costs`): each Inductor kernel Inductor's own byte count /
HBM bandwidth, each convolution and mm max(bytes / bandwidth, FLOPs / tensor-core peak), each custom op its inputs'
and outputs' bytes / bandwidth, plus `LAUNCH_US` per launch; the eager rest of a step (cross-entropy and its
gradient, the optimizer's foreach step) is counted op by op on fake tensors, as is the whole eager fp32 reference
step (each aten op one kernel, `EAGER_OP_US` each). Predictions, not measurements.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

from benchmarks.cuda_costs import (EAGER_OP_US, HBM_BYTES_PER_S, LAUNCH_US, MM_FP32_FLOPS, TENSOR_FLOPS, _fake_model,
                                   build, eager_reference, eager_rest, fake_cuda, graph_cost)
from benchmarks.kernel_resources import MODELS, recipe_batch

ROOT = Path(__file__).resolve().parent.parent


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
    """Forward and backward of one training step compiled for sm_<arch>: {"graphs": [{backward, code, gm}],
    "kernels": [compiled kernel configs], "dynamo_graphs", "graph_breaks"}."""
    import sdbnn
    from torch._dynamo.utils import counters
    from torch._guards import detect_fake_mode
    from torch._inductor.compile_fx import compile_fx, compile_fx_inner

    from benchmarks import cuda_offline

    torch._dynamo.reset()
    counters.clear()
    cuda_offline.compiled_kernels.clear()
    graphs, dynamo_graphs = [], []

    def inner(gm, example_inputs, **kwargs):
        placeholder = _placeholder_outputs(gm)
        with cuda_offline.cuda_target(arch, compile_kernels):  # fake CUDA values under the patched queries too
            cuda_gm, inputs = _retarget(copy.deepcopy(gm), example_inputs, detect_fake_mode(example_inputs))
            compiled = compile_fx_inner(cuda_gm, inputs, **kwargs)
        graphs.append({"backward": bool(kwargs.get("is_backward")), "code": compiled.source_code, "gm": cuda_gm})
        return placeholder

    def backend_fn(gm, example_inputs):
        dynamo_graphs.append(gm)
        return compile_fx(gm, example_inputs, inner_compile=inner, decompositions=cuda_offline.cuda_decompositions())

    model = build(model_name)
    images = torch.empty(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, backend=backend_fn, fullgraph=True)
    with sdbnn.backend(backend), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
        logits = compiled(images)
    logits.float().sum().backward()
    return {"graphs": graphs, "kernels": list(cuda_offline.compiled_kernels), "dynamo_graphs": len(dynamo_graphs),
            "graph_breaks": sum(counters["graph_break"].values())}


def autocast_check(model_name: str, batch: int, size: int) -> dict:
    """One forward under CUDA autocast on fake CUDA tensors vs under CPU autocast on CPU: the (op, dtypes) sequence
    must be the same, or the CPU-traced bf16 graph is not the one a GPU would build."""
    def trace(device: str, context) -> list:
        class Record(torch.utils._python_dispatch.TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                leaves = torch.utils._pytree.tree_leaves((args, out))
                dtypes = [str(value.dtype) for value in leaves if isinstance(value, torch.Tensor)]
                ops.append((str(func), tuple(dtypes)))
                return out

        ops = []
        with context:
            model = _fake_model(model_name, "cuda:0" if device == "cuda" else "cpu")
            images = torch.empty(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, torch.bfloat16), torch.no_grad(), Record():
                model(images)
        return ops

    from torch._subclasses.fake_tensor import FakeTensorMode

    cuda_ops = trace("cuda", fake_cuda())
    cpu_ops = trace("cpu", FakeTensorMode(allow_non_fake_inputs=True))
    differences = [(a, b) for a, b in zip(cuda_ops, cpu_ops) if a != b]
    return {"ops": len(cuda_ops), "same_ops": [a[0] for a in cuda_ops] == [b[0] for b in cpu_ops],
            "same": cuda_ops == cpu_ops, "differing": dict(Counter(a[0] for a, _ in differences)),
            "example": [list(map(str, pair)) for pair in differences[:1]] or None}


# --- one row: model × precision × arch ---------------------------------------------------------------------------


def kernel_rows(kernels: list[dict], arch: int) -> list[dict]:
    """Registers, spills and occupancy of every compiled Triton kernel config (cuobjdump on its cubin)."""
    from benchmarks.kernel_resources import resource_usage
    from benchmarks.occupancy import occupancy

    rows = []
    for kernel in kernels:
        usage = resource_usage(kernel["cubin"])
        shared = kernel["shared"] + usage["static_shared"]
        fraction, _, limit = occupancy(arch, usage["registers"], kernel["num_warps"], shared)
        rows.append({"name": kernel["name"], "config": kernel.get("config"), "num_warps": kernel["num_warps"],
                     "registers": usage["registers"],
                     "spill_bytes": usage["stack"] + usage["local"], "shared_bytes": shared,
                     "occupancy": round(fraction, 4), "occupancy_limit": limit})
    return rows


def spills(kernels: list[dict]) -> dict:
    """``spilling_kernels``: kernels whose every compiled config spills (Inductor's runtime autotuner picks one
    config per kernel on the GPU; a kernel with a config that does not spill need not spill); ``spilling_configs``:
    every config that spills, listed all the same."""
    configs = [kernel for kernel in kernels if kernel["spill_bytes"]]
    names = {kernel["name"] for kernel in configs}
    return {"spilling_kernels": sorted(name for name in names
                                       if all(k["spill_bytes"] for k in kernels if k["name"] == name)),
            "spilling_configs": [{key: kernel.get(key) for key in ("name", "config", "num_warps", "registers",
                                                                   "spill_bytes")} for kernel in configs]}


def _codegen_digest(graphs: list[dict]) -> str:
    """A digest of the Triton kernels' source, device properties left out: equal digests = arch-independent code."""
    import hashlib

    drop = r"DeviceProperties\(.*?\)|'backend_hash': '\w+'|^# kernel path: .*$|filename=.*$|^.*Compiled module.*$"
    text = "".join(sorted(re.sub(drop, "", graph["code"], flags=re.MULTILINE) for graph in graphs))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _step(model: str, batch: int, size: int, precision: str, arch: int, **options) -> tuple[dict, dict]:
    compiled = compile_step(model, batch, size, precision, arch, **options)
    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:  # Inductor's output code beside the caches, for reading
        for graph in compiled["graphs"]:
            name = f"{model}-{options.get('backend', 'ops')}-{'backward' if graph['backward'] else 'forward'}.py"
            (Path(os.environ["TORCHINDUCTOR_CACHE_DIR"]).parent / name).write_text(graph["code"])
    costs = {("backward" if graph["backward"] else "forward"): graph_cost(graph["code"], graph["gm"])
             for graph in compiled["graphs"]}
    return compiled, costs


def _total(costs: dict, rest: dict) -> dict:
    keys = ("launches", "time_ms")
    total = {key: sum(cost[key] for cost in costs.values()) + rest[key] for key in keys}
    total["bytes"] = sum(cost["triton_bytes"] + cost["extern_bytes"] for cost in costs.values()) + rest["bytes"]
    total["flops"] = sum(cost["flops"] for cost in costs.values()) + rest["flops"]
    return total


def one_row(model: str, precision: str, arch: int, batch: int | None = None, extras: bool = True) -> dict:
    recipe, size = recipe_batch(model)
    batch = batch or recipe
    compiled, costs = _step(model, batch, size, precision, arch)
    kernels = kernel_rows(compiled["kernels"], arch)
    rest = eager_rest(model, batch)
    step = _total(costs, rest)
    cache = Path(os.environ.get("TRITON_CACHE_DIR", tempfile.gettempdir()))
    externs = Counter()
    for cost in costs.values():
        externs.update(cost["extern_calls"])
    row = {
        "model": model, "precision": precision, "arch": f"sm_{arch}", "batch": batch, "image_size": size,
        "layout": "channels_last",
        "compiled": {"forward": "forward" in costs, "backward": "backward" in costs},
        "graph_breaks": compiled["graph_breaks"], "graphs": compiled["dynamo_graphs"],
        "inductor_kernels": len({kernel["name"] for kernel in kernels}),
        "triton_launches": sum(cost["triton_launches"] for cost in costs.values()),
        "extern_calls": dict(externs), "conv_dtypes": costs.get("forward", {}).get("conv_dtypes"),
        **spills(kernels),
        "max_registers": max((kernel["registers"] for kernel in kernels), default=None),
        "min_occupancy": min((kernel["occupancy"] for kernel in kernels), default=None),
        "cubin_files": len(list(cache.rglob("*.cubin"))), "triton_cache": str(cache),
        "codegen_digest": _codegen_digest(compiled["graphs"]),
        "bytes_per_step": step["bytes"], "flops_per_step": step["flops"], "launches_per_step": step["launches"],
        "predicted_step_ms": round(step["time_ms"], 4),
        "graph_costs": costs,
        "eager_rest": rest, "kernels": kernels,
    }
    if extras:
        row["autocast_check"] = autocast_check(model, min(batch, 8), size) if precision == "bf16" else None
        _, twin_costs = _step(f"{model}_fp", batch, size, precision, arch, compile_kernels=False)
        twin = _total(twin_costs, eager_rest(f"{model}_fp", batch))
        _, reference_costs = _step(model, batch, size, precision, arch, backend="reference", compile_kernels=False)
        eager = _total({}, eager_reference(model, batch, size))
        eager = {key: eager[key] + rest[key] for key in ("launches", "time_ms", "bytes", "flops")}
        row["fp_twin"] = {key: twin[key] for key in ("bytes", "launches", "time_ms")}
        row["eager_reference_fp32"] = eager
        row["predicted_vs_fp_twin"] = round(twin["time_ms"] / step["time_ms"], 3)
        row["predicted_vs_eager_reference"] = round(eager["time_ms"] / step["time_ms"], 3)
        row["ops_vs_inductor_reference"] = {
            name: {"ops": {"bytes": costs[name]["triton_bytes"] + costs[name]["extern_bytes"],
                           "launches": costs[name]["launches"], "time_ms": round(costs[name]["time_ms"], 4)},
                   "reference": {"bytes": cost["triton_bytes"] + cost["extern_bytes"], "launches": cost["launches"],
                                 "time_ms": round(cost["time_ms"], 4)}}
            for name, cost in reference_costs.items()}
    return row


# --- the command -------------------------------------------------------------------------------------------------


def markdown(result: dict) -> str:
    lines = [f"# CUDA training graph compiled without a GPU: PREDICTED H100 step ({result['date']})", "",
             f"torch {result['torch']}, triton {result['triton']}, commit {result.get('commit')}; "
             f"`{result['command']}`. "
             "Compiled on a CPU-only machine for the targets below; every time here is a prediction from byte and "
             "FLOP counts (HBM {:.2f} TB/s, tensor cores {:.0f} TFLOP/s bf16, {} µs per launch), not a "
             "measurement.".format(HBM_BYTES_PER_S / 1e12, TENSOR_FLOPS[torch.bfloat16] / 1e12, LAUNCH_US), "",
             "| model | precision | arch | batch | fwd/bwd compiled | graph breaks | Inductor kernels (launches) | "
             "convs | act_sign (+bwd) | weight_sign (+bwd) | max regs | spilling | min occupancy | GB/step | "
             "predicted ms | vs fp twin (≥ 0.9) | vs eager fp32 ref (≥ 5) | cubins |", "|" + "---|" * 18]
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['precision']} | {row['arch']} | | **failed**: "
                         f"{row['error'].splitlines()[-1][:150]} |" + " |" * 13)
            continue
        calls = row["extern_calls"]
        spilled = f" ({len(row['spilling_configs'])} configs)" if row.get("spilling_configs") else ""
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['arch']} | {row['batch']} | "
            f"{'yes' if row['compiled']['forward'] else 'NO'}/{'yes' if row['compiled']['backward'] else 'NO'} | "
            f"{row['graph_breaks']} | {row['inductor_kernels']} ({row['triton_launches']}) | "
            f"{calls.get('convolution', 0)}+{calls.get('convolution_backward', 0)} | "
            f"{calls.get('sdbnn::act_sign', 0)}+{calls.get('sdbnn::act_sign_backward', 0)} | "
            f"{calls.get('sdbnn::weight_sign', 0)}+{calls.get('sdbnn::weight_sign_backward', 0)} | "
            f"{row['max_registers']} | {len(row['spilling_kernels']) or 'none'}{spilled} | "
            f"{row['min_occupancy']:.0%} | "
            f"{row['bytes_per_step'] / 1e9:.3f} | {row['predicted_step_ms']:.3f} | "
            f"{row.get('predicted_vs_fp_twin', '—')} | {row.get('predicted_vs_eager_reference', '—')} | "
            f"{row['cubin_files']} |")
    borrowed = sorted({f"{row['model']} {row['precision']} {row['arch']}" for row in result["rows"]
                       if "ratios_from" in row})
    if borrowed:
        lines += ["", "Ratios of " + ", ".join(borrowed) + ": against the twin and eager reference predicted from the "
                  "sm_90 compiles (every prediction is for an H100)."]
    spilled = [f"{row['model']} {row['precision']} {row['arch']}: {config['name']} {config['config']} "
               f"num_warps={config['num_warps']}, {config['registers']} registers, {config['spill_bytes']} bytes"
               for row in result["rows"] for config in row.get("spilling_configs", [])]
    if spilled:
        lines += ["", "Spilling configs (cuobjdump's stack + local bytes): " + "; ".join(spilled) + "."]
    compared = [row for row in result["rows"] if "ops_vs_inductor_reference" in row]
    if compared:
        lines += ["", "Hand kernels (custom ops) vs Inductor fusing the reference math (`sdbnn.backend(\"reference\")` "
                  "compiled the same way), per graph: bytes moved / launches / predicted ms.", "",
                  "| model | precision | arch | graph | custom ops | Inductor on reference | bytes ops ÷ reference |",
                  "|---|---|---|---|---|---|---|"]
        for row in compared:
            for graph, pair in row["ops_vs_inductor_reference"].items():
                ops, ref = pair["ops"], pair["reference"]
                lines.append(f"| {row['model']} | {row['precision']} | {row['arch']} | {graph} | "
                             f"{ops['bytes'] / 1e6:.1f} MB / {ops['launches']} / {ops['time_ms']:.3f} | "
                             f"{ref['bytes'] / 1e6:.1f} MB / {ref['launches']} / {ref['time_ms']:.3f} | "
                             f"{ops['bytes'] / ref['bytes']:.2f} |")
    checks = [f"{row['model']}: {check['ops']} ops, " + ("all the same" if check["same"] else "differing: " + ", ".join(
        f"{op} ×{count}" for op, count in check["differing"].items()))
        for row in result["rows"] if (check := row.get("autocast_check")) and row["arch"] == "sm_90"]
    if checks:
        lines += ["", "Autocast check (bf16 forward under CUDA autocast on fake CUDA tensors vs CPU autocast on CPU, "
                  "op by op with dtypes): " + "; ".join(checks) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda_graph", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=int, default=[90, 80], choices=[80, 90])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--precision", nargs="+", default=["bf16", "fp32"], choices=["bf16", "fp32"])
    parser.add_argument("--batch", type=int, help="override the recipes' per-device batch (tests)")
    parser.add_argument("--no-extras", action="store_true",
                        help="skip the fp twin, the reference compile and the eager reference (no ratios)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sdbnn-cuda-graph",
                        help="private Triton/Inductor caches, one folder per row (the cubins land there)")
    parser.add_argument("--resume", type=Path, help="a result JSON whose rows are kept (those rows are not redone)")
    parser.add_argument("--row", nargs=3, metavar=("MODEL", "PRECISION", "ARCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:  # one row, in its own process (its own caches and patches), as JSON on the last line of stdout
        model, precision, arch = args.row
        row = one_row(model, precision, int(arch), args.batch, extras=not args.no_extras)
        print(json.dumps(row, default=str))
        return 0
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    from benchmarks import cuda_offline

    cuda_offline.check()
    rows = [row | spills(row["kernels"]) for row in json.loads(args.resume.read_text())["rows"]
            if "error" not in row] if args.resume else []
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
    subprocess.run(["rm", "-rf", str(cache)], check=True)  # empty caches: the cubins counted are this row's
    env = {**os.environ, "TRITON_CACHE_DIR": str(cache / "triton"), "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    command = [sys.executable, "-m", "benchmarks.cuda_graph", "--row", model, precision, str(arch)]
    command += (["--batch", str(args.batch)] if args.batch else []) + ([] if extras else ["--no-extras"])
    print(f"compiling {model} {precision} sm_{arch} ...", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    if done.returncode:
        print(done.stderr[-3000:], flush=True)
        return {"model": model, "precision": precision, "arch": f"sm_{arch}", "error": done.stderr[-2000:]}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  fwd/bwd {row['compiled']}, {row['graph_breaks']} graph breaks, {row['inductor_kernels']} kernels, "
          f"{row['cubin_files']} cubins, spilling {row['spilling_kernels'] or 'none'}, "
          f"{row['bytes_per_step'] / 1e9:.3f} GB, predicted {row['predicted_step_ms']:.3f} ms, "
          f"vs twin {row.get('predicted_vs_fp_twin')}, vs eager {row.get('predicted_vs_eager_reference')}", flush=True)
    return row


def _write(args, argv, rows: list[dict]) -> None:
    import triton

    from sdbnn.io import atomic_write
    from sdbnn.provenance import commit

    result = {"date": datetime.date.today().isoformat(), "torch": torch.__version__, "triton": triton.__version__,
              **commit(), "command": " ".join(["python -m benchmarks.cuda_graph", *(argv or sys.argv[1:])]),
              "constants": {"hbm_bytes_per_s": HBM_BYTES_PER_S, "launch_us": LAUNCH_US, "eager_op_us": EAGER_OP_US,
                            "tensor_flops": {str(k): v for k, v in TENSOR_FLOPS.items()}, "fp32_flops": MM_FP32_FLOPS},
              "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"cuda-graph-{result['date']}"
    atomic_write(stem.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(result, indent=1, default=str)))
    atomic_write(stem.with_suffix(".md"), lambda tmp: tmp.write_text(markdown(result)))


if __name__ == "__main__":
    sys.exit(main())

"""The fused SD-BNN ops against the eager reference and torch.compile of it, per op, layer shape, layout and dtype:
times, GB/s against the bytes the op must move and against the measured copy bandwidth (docs/benchmarks.md)."""

from __future__ import annotations

import functools
import statistics
import time
import timeit
import types

import torch

import sdbnn.ops  # noqa: F401 - registers torch.ops.sdbnn
from benchmarks.common import Section, log, synchronize, table
from sdbnn import reference

K, T = 1.0, 2.5  # EDE mid-schedule; the cost does not depend on them

# (label, activation shape, weight shape, layout) of the layers the paper trains: 3×3 convolutions, C in and out
FULL_CASES = [(label, (batch, channels, size, size), (channels, channels, 3, 3), layout)
              for label, batch, channels, size, layout in [
                  ("resnet20.stage1", 128, 16, 32, "nchw"), ("resnet20.stage2", 128, 32, 16, "nchw"),
                  ("resnet20.stage3", 128, 64, 8, "nchw"), ("resnet18.stage1", 256, 64, 56, "nchw"),
                  ("resnet18.stage1", 256, 64, 56, "nhwc"), ("resnet18.stage2", 256, 128, 28, "nhwc"),
                  ("resnet18.stage3", 256, 256, 14, "nhwc"), ("resnet18.stage4", 256, 512, 7, "nchw"),
                  ("resnet18.stage4", 256, 512, 7, "nhwc")]]
QUICK_CASES = [("tiny.nchw", (2, 8, 9, 7), (8, 8, 3, 3), "nchw"), ("tiny.nhwc", (2, 8, 9, 7), (8, 8, 3, 3), "nhwc")]


def time_ms(fn, device: torch.device, quick: bool) -> float:
    """Median time of fn in milliseconds (CUDA: Triton's do_bench with L2 flushes; CPU: wall clock after one call)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()
    return statistics.median(timeit.repeat(fn, number=1, repeat=2 if quick else 10)) * 1e3


def copy_bandwidth_gbps(device: torch.device, quick: bool) -> float:
    """Measured copy bandwidth (read + write bytes per second): the floor for element-wise ops."""
    source = torch.empty((1 << 16) if quick else (1 << 28), dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    return 2 * source.numel() * source.element_size() / (time_ms(lambda: target.copy_(source), device, quick) * 1e6)


def own_code(fn):
    """A copy of ``fn`` with its own code object: Dynamo caches and counts recompilations per code object, so cases
    sharing one lambda would hit the recompile limit (a hard error under fullgraph=True)."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def measure(op: str, label: str, shape: tuple, layout: str, dtype, device, surrogate: str, quick: bool,
            copy_gbps: float, compile_backend: str) -> list[dict]:
    """One row per provider; the fused one, first, gets its share of the copy bandwidth and its fwd+bwd speed-ups."""
    if op == "act_sign":  # activations in [-1, 1) and a shift per (N, C)
        a, b = torch.rand(shape, device=device) * 2 - 1, torch.rand(shape[:2], device=device, dtype=dtype)
    else:  # weights and an alpha per filter
        a, b = torch.randn(shape, device=device) * 0.1, torch.randn(shape[0], device=device, dtype=dtype)
    a = a.to(dtype).to(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    grad, k, t = torch.randn_like(a), torch.tensor(K, device=device), torch.tensor(T, device=device)
    a_leaf, b_leaf = a.detach().requires_grad_(), b.detach().requires_grad_()
    # forward reads a, writes the sign; backward reads g and a, writes da (the per-channel tensors are negligible)
    bytes_forward, bytes_forward_backward = 2 * a.numel() * a.element_size(), 5 * a.numel() * a.element_size()
    fused_op, reference_op = getattr(torch.ops.sdbnn, op), getattr(reference, op)
    eager = lambda a, b, k, t: reference_op(a, b, k, t, surrogate)  # noqa: E731
    providers = {"fused": lambda a, b, k, t: fused_op(a, b, k, t, surrogate), "eager": eager,
                 "compiled": torch.compile(own_code(eager), fullgraph=True, backend=compile_backend)}
    rows = []
    for name, fn in providers.items():
        forward = functools.partial(fn, a, b, k, t)

        def forward_backward(fn=fn):
            return torch.autograd.grad(fn(a_leaf, b_leaf, k, t), (a_leaf, b_leaf), grad)

        started = time.perf_counter()
        forward()
        forward_backward()  # compiles both graphs of the compiled provider
        synchronize(device)
        first_call_s = time.perf_counter() - started
        forward_ms, forward_backward_ms = time_ms(forward, device, quick), time_ms(forward_backward, device, quick)
        rows.append({"op": op, "case": label, "shape": list(shape), "layout": layout,
                     "dtype": str(dtype).removeprefix("torch."), "provider": name, "forward_ms": forward_ms,
                     "forward_backward_ms": forward_backward_ms, "bytes_forward": bytes_forward,
                     "bytes_forward_backward": bytes_forward_backward, "first_call_s": first_call_s,
                     "gbps_forward": bytes_forward / (forward_ms * 1e6),
                     "gbps_forward_backward": bytes_forward_backward / (forward_backward_ms * 1e6),
                     "copy_fraction_forward_backward": None, "speedup_vs": {}})
    fused = rows[0]
    fused["copy_fraction_forward_backward"] = fused["gbps_forward_backward"] / copy_gbps
    for baseline in rows[1:]:
        fused["speedup_vs"][baseline["provider"]] = baseline["forward_backward_ms"] / fused["forward_backward_ms"]
    return rows


def markdown_table(result: dict) -> str:
    rows = [[row["op"], f"{row['case']} {tuple(row['shape'])}", row["layout"], row["dtype"],
             f"{row['bytes_forward'] / 2 / 1e6:.1f}",  # the input tensor
             f"{row['forward_ms']:.3f}", f"{row['forward_backward_ms']:.3f}", f"{row['gbps_forward_backward']:.3g}",
             f"{row['copy_fraction_forward_backward']:.0%}",
             *[f"{row['speedup_vs'][name]:.2f}" for name in ("eager", "compiled")]]  # measure always runs both
            for row in result["rows"] if row["provider"] == "fused"]
    return (f"Measured copy bandwidth {result['copy_bandwidth_gbps']:.3g} GB/s; reference compiled by "
            f"{result.get('compile_backend', 'inductor')}. Forward+backward (fwd+bwd) times; ratios are baseline "
            "time / fused time in this run.\n\n"
            + table(["op", "case", "layout", "dtype", "MB", "fused fwd ms", "fused fwd+bwd ms", "fwd+bwd GB/s",
                     "of copy BW", "× eager", "× compiled"], rows))


def run(quick: bool, device: torch.device, surrogate: str = "ede", *, jobs: list[tuple] | None = None,
        compile_backend: str = "inductor", job_estimate_s: float = 0.0, section: Section | None = None) -> dict:
    """Each (op, case, dtype) job (default: both ops × every case × dtype) the budget allows; saved after each."""
    section = section or Section("kernels")
    data = section.data
    data.update(surrogate=surrogate, quick=quick, compile_backend=compile_backend, rows=[],
                copy_bandwidth_gbps=copy_bandwidth_gbps(device, quick))
    section.save()
    dtypes = [torch.float32] if quick else [torch.bfloat16, torch.float32]
    jobs = jobs or [(op, case, dtype) for op in ("act_sign", "weight_sign")
                    for case in (QUICK_CASES if quick else FULL_CASES) for dtype in dtypes]
    for op, (label, act_shape, weight_shape, layout), dtype in jobs:
        shape = act_shape if op == "act_sign" else weight_shape
        job = f"{op} {label} {tuple(shape)} {layout} {str(dtype).removeprefix('torch.')}"
        if not section.allows(job, job_estimate_s):
            continue
        rows = measure(op, label, shape, layout, dtype, device, surrogate, quick, data["copy_bandwidth_gbps"],
                       compile_backend)
        data["rows"].extend(rows)
        fused = rows[0]
        log(f"{job}: fused fwd+bwd {fused['forward_backward_ms']:.3f} ms, {fused['copy_fraction_forward_backward']:.0%}"
            " of copy BW, " + ", ".join(f"{ratio:.2f}x {name}" for name, ratio in fused["speedup_vs"].items()))
        section.save()
    return data

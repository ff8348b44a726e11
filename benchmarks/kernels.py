"""Benchmark the fused SD-BNN ops against the eager reference and torch.compile of the reference.

    python -m benchmarks --only kernels            # CUDA: ResNet-20 (batch 128) and ResNet-18 (batch 256, 224 px) shapes
    python -m benchmarks --only kernels --quick    # CPU smoke run on tiny shapes (timings there mean nothing)

Per op, shape, layout and dtype: forward and forward+backward time for each provider, achieved GB/s against the
bytes the op must move, the fraction of the device's measured copy bandwidth, the ratio against each baseline
measured in the same run, and peak memory of forward+backward (CUDA): the "kernels" section of `python -m benchmarks`.
"""

from __future__ import annotations

import statistics
import time
import types

import torch

import sdbnn.ops  # noqa: F401 - registers torch.ops.sdbnn
from benchmarks.common import Section, log, synchronize, table
from sdbnn import reference

K, T = 1.0, 2.5  # EDE mid-schedule; the cost does not depend on them

# (label, activation shape, weight shape, layout) of the layers the paper trains.
FULL_CASES = [
    ("resnet20.stage1", (128, 16, 32, 32), (16, 16, 3, 3), "nchw"),
    ("resnet20.stage2", (128, 32, 16, 16), (32, 32, 3, 3), "nchw"),
    ("resnet20.stage3", (128, 64, 8, 8), (64, 64, 3, 3), "nchw"),
    ("resnet18.stage1", (256, 64, 56, 56), (64, 64, 3, 3), "nchw"),
    ("resnet18.stage1", (256, 64, 56, 56), (64, 64, 3, 3), "nhwc"),
    ("resnet18.stage2", (256, 128, 28, 28), (128, 128, 3, 3), "nhwc"),
    ("resnet18.stage3", (256, 256, 14, 14), (256, 256, 3, 3), "nhwc"),
    ("resnet18.stage4", (256, 512, 7, 7), (512, 512, 3, 3), "nchw"),
    ("resnet18.stage4", (256, 512, 7, 7), (512, 512, 3, 3), "nhwc"),
]
QUICK_CASES = [
    ("tiny.nchw", (2, 8, 9, 7), (8, 8, 3, 3), "nchw"),
    ("tiny.nhwc", (2, 8, 9, 7), (8, 8, 3, 3), "nhwc"),
]


def time_ms(fn, device: torch.device, quick: bool) -> float:
    """Median time of fn in milliseconds (CUDA: Triton's do_bench with L2 flushes; CPU: wall clock)."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()
    samples = []
    for _ in range(2 if quick else 10):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1e3)
    return statistics.median(samples)


def copy_bandwidth_gbps(device: torch.device, quick: bool) -> float:
    """Measured device copy bandwidth (read + write bytes per second): the floor for element-wise ops."""
    numel = (1 << 16) if quick else (1 << 28)
    source = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    target = torch.empty_like(source)
    ms = time_ms(lambda: target.copy_(source), device, quick)
    return 2 * source.numel() * source.element_size() / (ms * 1e6)


def peak_memory_mb(fn, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _inputs(op: str, shape, layout: str, dtype, device):
    """(a, b, incoming gradient): activations in [-1, 1) and a shift per (N, C), or weights and an alpha per filter."""
    if op == "act_sign":
        a, b = torch.rand(shape, device=device) * 2 - 1, torch.rand(shape[:2], device=device, dtype=dtype)
    else:
        a, b = torch.randn(shape, device=device) * 0.1, torch.randn(shape[0], device=device, dtype=dtype)
    a = a.to(dtype).to(memory_format=torch.channels_last if layout == "nhwc" else torch.contiguous_format)
    return a, b, torch.randn_like(a)


def own_code(fn):
    """A copy of ``fn`` with a code object of its own. Dynamo keeps compiled entries, and counts recompilations, per
    code object: every case compiling the same lambda would pile onto one cache until the recompile limit (which
    ``fullgraph=True`` turns into a hard error); a fresh code object gives each case its own cache."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def providers(surrogate: str, op: str, device: torch.device, compile_backend: str = "inductor") -> dict:
    """name -> function(a, b, k, t) of the op; "fused" is the custom op (Triton on CUDA); "compiled" is the reference
    compiled by ``compile_backend``, freshly for each call (one compiled function per case)."""
    fused_op, reference_op = getattr(torch.ops.sdbnn, op), getattr(reference, op)
    fused = lambda a, b, k, t: fused_op(a, b, k, t, surrogate)  # noqa: E731
    eager = lambda a, b, k, t: reference_op(a, b, k, t, surrogate)  # noqa: E731
    return {"fused": fused, "eager": eager,
            "compiled": torch.compile(own_code(eager), fullgraph=True, backend=compile_backend)}


def measure(op: str, case, dtype, device, surrogate: str, quick: bool, copy_gbps: float,
            compile_backend: str = "inductor") -> list[dict]:
    """One row per provider, the fused one first with its share of the copy bandwidth and its speed-up over each
    baseline (forward+backward)."""
    label, act_shape, weight_shape, layout = case
    shape = act_shape if op == "act_sign" else weight_shape
    a, b, grad = _inputs(op, shape, layout, dtype, device)
    k, t = torch.tensor(K, device=device), torch.tensor(T, device=device)
    a_leaf, b_leaf = a.detach().requires_grad_(), b.detach().requires_grad_()
    # forward reads a, writes the sign; backward reads g and a, writes da (the per-channel tensors are negligible)
    bytes_forward, bytes_forward_backward = 2 * a.numel() * a.element_size(), 5 * a.numel() * a.element_size()
    rows = []
    for name, fn in providers(surrogate, op, device, compile_backend).items():
        def forward():
            return fn(a, b, k, t)

        def forward_backward():
            out = fn(a_leaf, b_leaf, k, t)
            return torch.autograd.grad(out, (a_leaf, b_leaf), grad)

        started = time.perf_counter()
        forward()
        forward_backward()  # compiles both graphs of the compiled provider
        synchronize(device)
        first_call_s = time.perf_counter() - started  # includes compilation for the compiled provider
        forward_ms, forward_backward_ms = time_ms(forward, device, quick), time_ms(forward_backward, device, quick)
        rows.append({"op": op, "case": label, "shape": list(shape), "layout": layout,
                     "dtype": str(dtype).removeprefix("torch."), "provider": name, "forward_ms": forward_ms,
                     "forward_backward_ms": forward_backward_ms, "bytes_forward": bytes_forward,
                     "bytes_forward_backward": bytes_forward_backward,
                     "peak_memory_mb": peak_memory_mb(forward_backward, device), "first_call_s": first_call_s,
                     "gbps_forward": bytes_forward / (forward_ms * 1e6),
                     "gbps_forward_backward": bytes_forward_backward / (forward_backward_ms * 1e6),
                     "copy_fraction_forward_backward": None, "speedup_vs": {}})
    fused = rows[0]
    fused["copy_fraction_forward_backward"] = fused["gbps_forward_backward"] / copy_gbps
    for baseline in rows[1:]:
        fused["speedup_vs"][baseline["provider"]] = baseline["forward_backward_ms"] / fused["forward_backward_ms"]
    return rows


def markdown_table(result: dict) -> str:
    rows = []
    for row in result["rows"]:
        if row["provider"] != "fused":
            continue
        ratios = [f"{row['speedup_vs'][name]:.2f}" if name in row["speedup_vs"] else "—"
                  for name in ("eager", "compiled")]
        rows.append([row["op"], f"{row['case']} {tuple(row['shape'])}", row["layout"], row["dtype"],
                     f"{row['bytes_forward'] / 2 / 1e6:.1f}",  # the input tensor
                     f"{row['forward_ms']:.3f}", f"{row['forward_backward_ms']:.3f}",
                     f"{row['gbps_forward_backward']:.3g}", f"{row['copy_fraction_forward_backward']:.0%}", *ratios,
                     "n/a" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.0f}"])
    return (f"Measured copy bandwidth {result['copy_bandwidth_gbps']:.3g} GB/s; reference compiled by "
            f"{result.get('compile_backend', 'inductor')}. Forward+backward (fwd+bwd) times; ratios are baseline "
            "time / fused time in this run.\n\n"
            + table(["op", "case", "layout", "dtype", "MB", "fused fwd ms", "fused fwd+bwd ms", "fwd+bwd GB/s",
                     "of copy BW", "× eager", "× compiled", "peak MB"], rows))


def default_jobs(quick: bool) -> list[tuple]:
    """(op, case, dtype) for every op × case × dtype of the standalone benchmark."""
    cases = QUICK_CASES if quick else FULL_CASES
    dtypes = [torch.float32] if quick else [torch.bfloat16, torch.float32]
    return [(op, case, dtype) for op in ("act_sign", "weight_sign") for case in cases for dtype in dtypes]


def job_label(op: str, case, dtype) -> str:
    label, act_shape, weight_shape, layout = case
    shape = act_shape if op == "act_sign" else weight_shape
    return f"{op} {label} {tuple(shape)} {layout} {str(dtype).removeprefix('torch.')}"


def run(quick: bool, device: torch.device, surrogate: str = "ede", *, jobs: list[tuple] | None = None,
        compile_backend: str = "inductor", job_estimate_s: float = 0.0, section: Section | None = None) -> dict:
    """Each (op, case, dtype) job × provider, with the copy bandwidth as the floor. Jobs start while the section's
    budget allows (``job_estimate_s`` each); results are saved after every job."""
    section = section or Section("kernels")
    data = section.data
    data.update(surrogate=surrogate, quick=quick, compile_backend=compile_backend, rows=[])
    data["copy_bandwidth_gbps"] = copy_bandwidth_gbps(device, quick)
    section.save()
    for op, case, dtype in jobs or default_jobs(quick):
        label = job_label(op, case, dtype)
        if not section.allows(label, job_estimate_s):
            continue
        rows = measure(op, case, dtype, device, surrogate, quick, data["copy_bandwidth_gbps"], compile_backend)
        data["rows"].extend(rows)
        fused = rows[0]
        log(f"{label}: fused fwd+bwd {fused['forward_backward_ms']:.3f} ms, {fused['gbps_forward_backward']:.0f} GB/s "
            f"({fused['copy_fraction_forward_backward']:.0%} of copy), "
            + ", ".join(f"{ratio:.2f}x {name}" for name, ratio in fused["speedup_vs"].items()))
        section.save()
    return data

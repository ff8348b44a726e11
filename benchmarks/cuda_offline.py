"""Inductor lowering for a CUDA target on a machine without a GPU: the torch/triton internals patched for it, in one
place. Used by `benchmarks.cuda_graph` only; nothing here runs in training.

Tested with torch 2.14.1 + triton 3.8.0 (this project's CPU machine). Every patched name is checked before anything
is patched (`check`): a name that has moved stops the run with one message naming it.

What is patched, for the duration of `cuda_target(arch)` only:
- the device queries Inductor makes (properties, capability, count, current device, bf16 support) answer for one
  H100 (sm_90) or A100 (sm_80), through `torch.cuda` and Inductor's `CudaInterface` (and its `Worker`);
- Triton's target: `torch.utils._triton.triton_backend` → `make_backend(GPUTarget("cuda", arch, 32))` (Triton would
  ask the driver); `has_triton`'s cache is cleared so that it asks again;
- `CachingAutotuner.precompile` → its `_precompile_worker` (compile to PTX and cubin, never load: loading needs a
  driver), inside `skip_gpu_driver_setup()`; each compiled kernel is recorded (`compiled_kernels`);
- `torch._C._select_conv_backend` → cuDNN where it falls back to the slow native convolution (it does without a
  driver): the fake convolution's output layout follows the backend, and a GPU runs cuDNN, whose output is
  channels_last for a channels_last input (the fallback's is NCHW, and Inductor would add a copy after every conv);
- `amp_definitely_not_available` → False: CUDA autocast switches itself off without a driver (used only by the
  autocast check in `benchmarks.cuda_graph`, which runs the forward on fake CUDA tensors under CUDA autocast);
- not a patch but a replacement table (`cuda_decompositions`): Inductor's mm / addmm / bmm decompositions branch on
  the tensors' device, and the graphs are traced on CPU; the table gives them their CUDA branches;
- Inductor config: one compile thread, no autotuning or mm padding (they benchmark on the device), no CUDA graphs,
  no static launcher (it loads the cubin), and `benchmark_kernel` so that each kernel carries Inductor's byte
  count (`kernel_num_gb`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
from unittest import mock

TESTED_WITH = {"torch": "2.14.1", "triton": "3.8.0"}
# (module, attribute path) of every internal patched or called here
INTERNALS = [
    ("torch.cuda", "get_device_properties"), ("torch.cuda", "get_device_capability"), ("torch.cuda", "device_count"),
    ("torch.cuda", "current_device"), ("torch.cuda", "is_bf16_supported"),
    ("torch._dynamo.device_interface", "CudaInterface.is_available"),
    ("torch._dynamo.device_interface", "CudaInterface.get_compute_capability"),
    ("torch._dynamo.device_interface", "CudaInterface.get_device_properties"),
    ("torch._dynamo.device_interface", "CudaInterface.Worker.get_device_properties"),
    ("torch._dynamo.device_interface", "CudaInterface.is_bf16_supported"),
    ("torch._dynamo.device_interface", "caching_worker_device_properties"),
    ("torch.utils._triton", "triton_backend"), ("torch.utils._triton", "has_triton"),
    ("torch._inductor.runtime.triton_heuristics", "CachingAutotuner.precompile"),
    ("torch._inductor.runtime.triton_heuristics", "CachingAutotuner._precompile_worker"),
    ("torch._inductor.runtime.triton_helpers", "skip_gpu_driver_setup"),
    ("torch._inductor.runtime.hints", "DeviceProperties.create"),
    ("torch.cuda.amp.common", "amp_definitely_not_available"), ("torch._C", "_select_conv_backend"),
    ("torch._C", "_ConvBackend.Cudnn"), ("torch._C", "_ConvBackend.Slow2d"),
    ("torch._inductor.compile_fx", "compile_fx"), ("torch._inductor.compile_fx", "compile_fx_inner"),
    ("torch._inductor.decomposition", "select_decomp_table"), ("torch._inductor.decomposition", "pw_cast_for_opmath"),
    ("triton.compiler.compiler", "make_backend"), ("triton.backends.compiler", "GPUTarget"),
]
INDUCTOR_CONFIG = {"compile_threads": 1, "max_autotune": False, "max_autotune_gemm": False, "shape_padding": False,
                   "triton.cudagraphs": False, "benchmark_kernel": True, "fx_graph_cache": False,
                   "autotune_local_cache": False,
                   "use_static_cuda_launcher": False}

# What Inductor and Triton read from the device (CUDA C++ Programming Guide, the H100 SXM and A100 SXM data sheets)
DEVICES = {
    90: dict(name="NVIDIA H100 80GB HBM3 (emulated)", major=9, minor=0, multi_processor_count=132,
             total_memory=80 * 2**30, L2_cache_size=50 * 2**20, shared_memory_per_block_optin=227 * 1024),
    80: dict(name="NVIDIA A100-SXM4-80GB (emulated)", major=8, minor=0, multi_processor_count=108,
             total_memory=80 * 2**30, L2_cache_size=40 * 2**20, shared_memory_per_block_optin=163 * 1024),
}
COMMON = dict(regs_per_multiprocessor=65536, max_threads_per_multi_processor=2048, warp_size=32,
              shared_memory_per_block=48 * 1024, shared_memory_per_multiprocessor=228 * 1024, is_integrated=False,
              gcnArchName="", uuid="offline", pci_bus_id=0, pci_device_id=0, pci_domain_id=0)

compiled_kernels: list[dict] = []  # one entry per Triton kernel config compiled inside cuda_target


class InternalsMoved(RuntimeError):
    pass


def _resolve(module: str, path: str):
    owner = importlib.import_module(module)
    for part in path.split(".")[:-1]:
        owner = getattr(owner, part)
    return owner, path.split(".")[-1]


def check() -> None:
    """Raise InternalsMoved naming every patched internal that this torch/triton no longer has."""
    import torch
    import triton

    missing = []
    for module, path in INTERNALS:
        try:
            owner, name = _resolve(module, path)
            getattr(owner, name)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{path}")
    if missing:
        raise InternalsMoved(
            f"benchmarks/cuda_offline.py patches torch/triton internals that moved in torch {torch.__version__} / "
            f"triton {triton.__version__} (tested with {TESTED_WITH}): {', '.join(missing)}")


def properties(arch: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(**DEVICES[arch], **COMMON)


def _record_compile(autotuner, compile_kernels: bool) -> None:
    """The patched precompile: compile every config (PTX, cubin into the Triton cache), never load; or nothing
    (``compile_kernels`` False: Inductor's code and byte counts are all that is wanted)."""
    if not compile_kernels:
        return
    autotuner._precompile_worker()
    for result in autotuner.compile_results or []:
        kernel = result.kernel
        compiled_kernels.append({"name": kernel.name, "hash": kernel.hash, "num_warps": kernel.metadata.num_warps,
                                 "config": {key: value for key, value in result.config.kwargs.items()},
                                 "shared": kernel.metadata.shared, "cubin": kernel.asm["cubin"],
                                 "kernel_num_gb": autotuner.inductor_meta.get("kernel_num_gb"),
                                 "kernel_flop": autotuner.inductor_meta.get("kernel_flop")})


def _cudnn_where_a_gpu_has_it(select):
    import torch

    backends = torch._C._ConvBackend
    slow = {backends.Slow2d, backends.SlowDilated2d, backends.SlowTranspose2d, backends.SlowDilated3d,
            backends.Slow3d, backends.SlowTranspose3d}

    def select_conv_backend(input, weight, *args, **kwargs):
        backend = select(input, weight, *args, **kwargs)
        if input.device.type == "cuda" and backend in slow:
            return backends.CudnnTranspose if kwargs.get("transposed") else backends.Cudnn
        return backend

    return select_conv_backend


@contextlib.contextmanager
def cuda_target(arch: int, compile_kernels: bool = True):
    """Inside: Inductor lowers CUDA graphs for sm_<arch> and Triton compiles them to cubin, with no driver."""
    check()
    import torch
    import torch._inductor.config as inductor_config
    from torch._dynamo import device_interface
    from torch._inductor.runtime import hints, triton_heuristics, triton_helpers
    from torch.utils import _triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    props = properties(arch)
    interface = device_interface.CudaInterface
    stack = contextlib.ExitStack()
    patch = lambda owner, name, value: stack.enter_context(mock.patch.object(owner, name, value))  # noqa: E731
    with stack:
        for owner in (torch.cuda, interface, interface.Worker):
            patch(owner, "get_device_properties", staticmethod(lambda device=None: props))
        patch(torch.cuda, "get_device_capability", lambda device=None: (props.major, props.minor))
        patch(torch.cuda, "device_count", lambda: 1)
        patch(torch.cuda, "current_device", lambda: 0)
        patch(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
        patch(interface, "is_available", staticmethod(lambda: True))
        patch(interface, "is_bf16_supported", staticmethod(lambda *args, **kwargs: True))
        patch(interface, "get_compute_capability", staticmethod(lambda device=None: arch))
        stack.enter_context(mock.patch.dict(device_interface.caching_worker_device_properties, clear=True))
        patch(_triton, "triton_backend", functools.cache(lambda: make_backend(GPUTarget("cuda", arch, 32))))
        patch(triton_heuristics.CachingAutotuner, "precompile",
              lambda self, *args, **kwargs: _record_compile(self, compile_kernels))
        patch(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
        patch(torch._C, "_select_conv_backend", _cudnn_where_a_gpu_has_it(torch._C._select_conv_backend))
        stack.enter_context(inductor_config.patch(INDUCTOR_CONFIG))
        stack.enter_context(triton_helpers.skip_gpu_driver_setup())
        for cached in (_triton.has_triton, hints.DeviceProperties.create.__func__):  # answers of another target
            cached.cache_clear()
            stack.callback(cached.cache_clear)
        yield props


def cuda_decompositions() -> dict:
    """Inductor's decomposition table with the CUDA branches of its device-dependent mm / addmm / bmm rules (as in
    torch 2.14's torch/_inductor/decomposition.py, coordinate-descent tuning off): on CUDA an mm or addmm whose inner
    dimension is 1 becomes a broadcast product, and none of the CPU-only rules (small-tensor products, 1×K·K×1 sums)
    apply. The batch-norm decomposition's CPU branch (saved mean/rstd cast to the input dtype: C-element tensors)
    stays; `benchmarks.cuda_graph` reports it."""
    import torch
    from torch._inductor.decomposition import pw_cast_for_opmath, select_decomp_table
    from torch.fx.experimental.symbolic_shapes import statically_known_true as known

    aten = torch.ops.aten

    def outer(a, b) -> bool:  # [M, 1] x [1, N] with M, N != 1
        return known(a.size(-1) == 1) and known(a.size(0) != 1) and known(b.size(1) != 1)

    @pw_cast_for_opmath
    def mm(self, input2, out_dtype=None):
        return self * input2 if out_dtype is None and outer(self, input2) else NotImplemented

    @pw_cast_for_opmath
    def addmm(self, mat1, mat2, out_dtype=None, beta=1, alpha=1):
        if beta == 0 or out_dtype is not None or not outer(mat1, mat2):
            return NotImplemented
        out = mat1 * mat2 if alpha == 1 else alpha * (mat1 * mat2)
        return out + self if beta == 1 else out + beta * self

    def bmm(self, batch2, out_dtype=None):
        if out_dtype is None and known(self.shape[2] == 1) and known(batch2.shape[1] == 1):
            return (self * batch2).contiguous()
        return NotImplemented

    return {**select_decomp_table(), aten.mm.default: mm, aten.addmm.default: addmm, aten.bmm.default: bmm}

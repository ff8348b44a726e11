"""Inductor lowering for a CUDA target on a machine without a GPU: every torch/triton internal patched for it, in one
place (`_patches`, each with its reason). Used by `studies.cuda_graph` only; nothing here runs in training.

Tested with torch 2.14.1 + triton 3.8.0. `check` resolves every internal patched or used here before anything is
patched: one that has moved stops the run with one message naming it. Besides the patches, for the duration of
`cuda_target(arch)`: Triton's kernels are compiled to PTX and cubin and never loaded (loading needs a driver), inside
`skip_gpu_driver_setup()`, each compiled kernel recorded in `compiled_kernels`; Inductor runs with one compile thread,
no autotuning or mm padding (they benchmark on the device), no CUDA graphs, no static launcher (it loads the cubin),
and `benchmark_kernel` so that each kernel carries Inductor's byte count (`kernel_num_gb`). Not a patch but a
replacement table (`cuda_decompositions`): Inductor's mm / addmm / bmm decompositions branch on the tensors' device,
and the graphs are traced on CPU; the table gives them their CUDA branches.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import types
from unittest import mock

TESTED_WITH = {"torch": "2.14.1", "triton": "3.8.0"}
# (module, attribute path) of the internals used here besides those patched
USED = [("torch._dynamo.device_interface", "caching_worker_device_properties"), ("torch.utils._triton", "has_triton"),
        ("torch._inductor.runtime.triton_heuristics", "CachingAutotuner._precompile_worker"),
        ("torch._inductor.runtime.triton_helpers", "skip_gpu_driver_setup"),
        ("torch._inductor.runtime.hints", "DeviceProperties.create"), ("torch._C", "_ConvBackend.Cudnn"),
        ("torch._C", "_ConvBackend.CudnnTranspose"), ("torch._inductor.compile_fx", "compile_fx_inner"),
        ("torch._inductor.decomposition", "select_decomp_table"), ("triton.backends.compiler", "GPUTarget"),
        ("torch._inductor.decomposition", "pw_cast_for_opmath"), ("triton.compiler.compiler", "make_backend")]
INDUCTOR_CONFIG = {"compile_threads": 1, "max_autotune": False, "max_autotune_gemm": False, "shape_padding": False,
                   "triton.cudagraphs": False, "benchmark_kernel": True, "fx_graph_cache": False,
                   "autotune_local_cache": False, "use_static_cuda_launcher": False}

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


def _patches(arch: int = 90, compile_kernels: bool = True) -> list[tuple[str, str, object]]:
    """(module, attribute path, replacement) of every patch that `cuda_target` makes."""
    import torch

    props = types.SimpleNamespace(**DEVICES[arch], **COMMON)
    answer = lambda value: staticmethod(lambda *args, **kwargs: value)  # noqa: E731
    interface = "torch._dynamo.device_interface"

    def triton_backend():
        from triton.backends.compiler import GPUTarget
        from triton.compiler.compiler import make_backend

        return make_backend(GPUTarget("cuda", arch, 32))

    select = getattr(torch._C, "_select_conv_backend", None)  # torch's own (check() names it if it moved)

    def select_conv_backend(input, weight, *args, **kwargs):
        backend = select(input, weight, *args, **kwargs)
        if input.device.type == "cuda" and backend.name.startswith("Slow"):
            backends = torch._C._ConvBackend
            return backends.CudnnTranspose if kwargs.get("transposed") else backends.Cudnn
        return backend

    return [
        # the device queries Inductor makes answer for one H100 (sm_90) or A100 (sm_80)
        ("torch.cuda", "get_device_properties", answer(props)),
        (interface, "CudaInterface.get_device_properties", answer(props)),
        (interface, "CudaInterface.Worker.get_device_properties", answer(props)),
        ("torch.cuda", "get_device_capability", answer((props.major, props.minor))),
        ("torch.cuda", "device_count", answer(1)), ("torch.cuda", "current_device", answer(0)),
        (interface, "CudaInterface.is_available", answer(True)),
        (interface, "CudaInterface.get_compute_capability", answer(arch)),
        # Inductor skips bf16 graphs on a device without bf16
        ("torch.cuda", "is_bf16_supported", answer(True)), (interface, "CudaInterface.is_bf16_supported", answer(True)),
        # Triton's target (Triton would ask the driver); `has_triton`'s cache is cleared so that it asks again
        ("torch.utils._triton", "triton_backend", functools.cache(triton_backend)),
        # compile every config, never load
        ("torch._inductor.runtime.triton_heuristics", "CachingAutotuner.precompile",
         lambda self, *args, **kwargs: _record_compile(self, compile_kernels)),
        # CUDA autocast switches itself off without a driver (for `studies.cuda_graph.autocast_check`)
        ("torch.cuda.amp.common", "amp_definitely_not_available", answer(False)),
        # without a driver torch takes its slow native convolution, whose output is NCHW, and the fake convolution's
        # layout follows the backend: a GPU runs cuDNN, channels_last for a channels_last input (the fallback's
        # layout would make Inductor add a copy after every convolution)
        ("torch._C", "_select_conv_backend", select_conv_backend),
    ]


def check() -> None:
    """Raise InternalsMoved naming every patched or used internal that this torch/triton no longer has."""
    import torch
    import triton

    missing = []
    for module, path, *_ in _patches() + USED:
        try:
            getattr(*_resolve(module, path))
        except (ImportError, AttributeError):
            missing.append(f"{module}.{path}")
    if missing:
        raise InternalsMoved(
            f"studies/cuda_offline.py patches torch/triton internals that moved in torch {torch.__version__} / "
            f"triton {triton.__version__} (tested with {TESTED_WITH}): {', '.join(missing)}")


def _record_compile(autotuner, compile_kernels: bool) -> None:
    """The patched precompile: compile every config (PTX, cubin into the Triton cache), never load; or nothing
    (``compile_kernels`` False: Inductor's code and byte counts are all that is wanted)."""
    if not compile_kernels:
        return
    autotuner._precompile_worker()
    for result in autotuner.compile_results or []:
        kernel = result.kernel
        compiled_kernels.append({"name": kernel.name, "num_warps": kernel.metadata.num_warps,
                                 "config": dict(result.config.kwargs), "shared": kernel.metadata.shared,
                                 "cubin": kernel.asm["cubin"]})


@contextlib.contextmanager
def cuda_target(arch: int, compile_kernels: bool = True):
    """Inside: Inductor lowers CUDA graphs for sm_<arch> and Triton compiles them to cubin, with no driver."""
    check()
    import torch._inductor.config as inductor_config
    from torch._dynamo import device_interface
    from torch._inductor.runtime import hints, triton_helpers
    from torch.utils import _triton

    with contextlib.ExitStack() as stack:
        for module, path, value in _patches(arch, compile_kernels):
            stack.enter_context(mock.patch.object(*_resolve(module, path), value))
        stack.enter_context(mock.patch.dict(device_interface.caching_worker_device_properties, clear=True))
        stack.enter_context(inductor_config.patch(INDUCTOR_CONFIG))
        stack.enter_context(triton_helpers.skip_gpu_driver_setup())
        for cached in (_triton.has_triton, hints.DeviceProperties.create.__func__):  # answers of another target
            cached.cache_clear()
            stack.callback(cached.cache_clear)
        yield


def cuda_decompositions() -> dict:
    """Inductor's decomposition table with the CUDA branches of its device-dependent mm / addmm / bmm rules (as in
    torch 2.14's torch/_inductor/decomposition.py, coordinate-descent tuning off): on CUDA an mm or addmm whose inner
    dimension is 1 becomes a broadcast product, and none of the CPU-only rules (small-tensor products, 1×K·K×1 sums)
    apply. The batch-norm decomposition's CPU branch (saved mean/rstd cast to the input dtype: C-element tensors)
    stays; `studies.cuda_graph` reports it."""
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

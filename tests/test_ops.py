"""Fused kernels and the op layer against the reference math (CPU, Triton interpreter)."""

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import sdbnn
from sdbnn import ops, reference
from sdbnn.kernels import act_sign as act_kernels
from sdbnn.kernels import surrogates, tiles
from sdbnn.kernels import weight_sign as weight_kernels
from sdbnn.testing import (
    ACT_SHAPES,
    DTYPES,
    EDE_POINTS,
    SURROGATE_CASE_IDS,
    SURROGATE_CASES,
    WEIGHT_CASES,
    check_act_sign,
    check_act_sign_kernel,
    check_weight_sign,
    check_weight_sign_kernel,
    nonzero_random,
    poisoned_allocations,
)
from helpers import cpu_env


# float64 runs in float64 (what proves the fused path equal to the official code, tests/test_official.py)
KERNEL_DTYPES = DTYPES + [torch.float64]


@pytest.mark.parametrize("surrogate,ede", SURROGATE_CASES, ids=SURROGATE_CASE_IDS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape", ACT_SHAPES, ids=str)
def test_act_sign_kernel_matches_reference(shape, channels_last, dtype, surrogate, ede):
    check_act_sign_kernel(shape, channels_last, dtype, surrogate, ede=ede)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_act_sign_kernel_without_shift_and_multi_block(channels_last):
    k, t = EDE_POINTS[0]
    x = nonzero_random((2, 6, 11, 9), torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    grad = torch.randn(x.shape)
    shift = torch.rand(2, 6)
    # walk H·W in several blocks; channels_last: H·W split over programs
    small_tiles = tiles.use(forward_block=64, elements_per_program=64, plane_block=64, target_programs=64)
    with small_tiles, poisoned_allocations():
        assert torch.equal(act_kernels.forward(x, None), torch.sign(x))
        # programs of 64 elements start mid-plane (NCHW) and mid-sample (channels_last)
        assert torch.equal(act_kernels.forward(x, shift), torch.sign(x + shift[:, :, None, None]))
        dx, dshift = act_kernels.backward(grad, x, None, k, t, "ede")
        dx_shifted, dshift_shifted = act_kernels.backward(grad, x, shift, k, t, "ede")
    assert dshift is None
    torch.testing.assert_close(dx, grad * reference.surrogate_derivative(x, "ede", k, t))
    expected = grad * reference.surrogate_derivative(x + shift[:, :, None, None], "ede", k, t)
    torch.testing.assert_close(dx_shifted, expected)
    torch.testing.assert_close(dshift_shifted, expected.sum(dim=(2, 3)), rtol=1e-5, atol=1e-4)


def test_act_sign_kernel_accepts_other_grad_layout_and_strided_views():
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 8, 6, 6), torch.float32).to(memory_format=torch.channels_last)
    grad = torch.randn(x.shape)  # NCHW gradient for an NHWC input
    shift = torch.rand(2, 8)
    dx, _ = act_kernels.backward(grad, x, shift, k, t, "approx")
    torch.testing.assert_close(dx, grad * reference.surrogate_derivative(x + shift[:, :, None, None], "approx"))
    view = nonzero_random((2, 8, 12, 6), torch.float32)[:, :, ::2]  # neither NCHW- nor NHWC-dense
    assert torch.equal(act_kernels.forward(view, shift), torch.sign(view + shift[:, :, None, None]))


@pytest.mark.parametrize("surrogate,ede", SURROGATE_CASES, ids=SURROGATE_CASE_IDS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("shape,channels_last", WEIGHT_CASES, ids=str)
def test_weight_sign_kernel_matches_reference(shape, channels_last, dtype, surrogate, ede):
    check_weight_sign_kernel(shape, channels_last, dtype, surrogate, ede=ede)


def test_weight_sign_kernel_long_rows_and_no_alpha():
    k, t = EDE_POINTS[1]
    w = nonzero_random((7, 5, 3, 3), torch.float32, scale=0.3)
    alpha, grad = torch.randn(7), torch.randn(7, 5, 3, 3)
    with tiles.use(weight_tile=32), poisoned_allocations():  # rows of 45 walked in two blocks, one row per program
        out = weight_kernels.forward(w, alpha)
        dw, dalpha = weight_kernels.backward(grad, w, alpha, k, t, "ede")
        plain = weight_kernels.forward(w, None)
        dw_plain, none = weight_kernels.backward(grad, w, None, k, t, "clip")
    w_ref, a_ref = w.clone().requires_grad_(), alpha.clone().requires_grad_()
    expected = reference.weight_sign(w_ref, a_ref, k, t, "ede")
    expected.backward(grad)
    assert torch.equal(out, expected.detach())
    torch.testing.assert_close(dw, w_ref.grad)
    torch.testing.assert_close(dalpha, a_ref.grad, rtol=1e-5, atol=1e-9)
    assert torch.equal(plain, torch.sign(w)) and none is None
    torch.testing.assert_close(dw_plain, grad * (w.abs() <= 1))


def tiling(config, shape):
    """What a launch configuration walks: passes per plane / split / row, splits, channel blocks, rows per program."""
    facts = {"num_warps": config.num_warps}
    constexprs = config.constexprs
    if config.name == "act_sign.backward_planes":
        facts |= {"planes_per_program": constexprs["BLOCK_P"],
                  "passes": -(-shape[2] * shape[3] // constexprs["BLOCK_HW"])}
    elif config.name == "act_sign.backward_channels_last":
        facts |= {"channel_blocks": config.grid[1], "splits": config.grid[2],
                  "passes": -(-config.runtime["ROWS_PER_SPLIT"] // constexprs["BLOCK_HW"])}
    elif config.name.startswith("weight_sign"):
        row = 1
        for size in shape[1:]:
            row *= size
        facts |= {"rows_per_program": constexprs["BLOCK_R"], "passes": -(-row // constexprs["BLOCK"])}
    return facts


# The GPU's tile sizes, run under the interpreter: the launch paths only a GPU takes with the default sizes. Each case
# asserts the tiling it is named for, so a change of the GPU sizes cannot silently drop a path.
GPU_ACT_CASES = [
    # (shape, channels_last, tile changes, what it covers, the tiling that shows it)
    ((1, 3, 33, 33), False, {}, "nchw-hw1089-two-passes-per-plane", {"passes": 2}),
    ((3, 24, 8, 8), False, {}, "nchw-32-small-planes-per-program", {"planes_per_program": 32, "passes": 1}),
    ((3, 24, 7, 7), False, {}, "nchw-16-unaligned-planes-per-program", {"planes_per_program": 16, "num_warps": 8}),
    ((2, 8, 33, 33), True, {}, "nhwc-5-splits-one-pass-each", {"splits": 5, "passes": 1}),
    ((1, 136, 5, 5), True, {}, "nhwc-c136-masked-second-channel-block", {"channel_blocks": 2}),
    ((2, 8, 33, 33), True, {"target_programs": 4}, "nhwc-2-splits-up-to-3-passes-last-short",
     {"splits": 2, "passes": 3}),
    ((2, 8, 33, 33), True, {"target_programs": 2}, "nhwc-1-split-walking-5-row-blocks", {"splits": 1, "passes": 5}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape,channels_last,changes,covers,expected", GPU_ACT_CASES,
                         ids=[c[3] for c in GPU_ACT_CASES])
def test_act_sign_kernel_with_gpu_tiles(shape, channels_last, changes, covers, expected, dtype):
    with tiles.use(tiles.GPU, **changes):
        config = act_kernels.backward_config(shape, dtype, channels_last, True, "ede")
        assert tiling(config, shape).items() >= expected.items()
        check_act_sign_kernel(shape, channels_last, dtype, "ede")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("shape,expected", [((3, 512, 3, 3), {"rows_per_program": 1, "passes": 5}),
                                            ((6, 20, 3, 3), {"rows_per_program": 4, "passes": 1})],
                         ids=["row4608-five-blocks", "rows-packed-last-program-short"])
def test_weight_sign_kernel_with_gpu_tiles(shape, expected, channels_last, dtype):
    with tiles.use(tiles.GPU):
        for config in (weight_kernels.forward_config(shape, dtype, True),
                       weight_kernels.backward_config(shape, dtype, True, "ede")):
            assert tiling(config, shape).items() >= expected.items()
        check_weight_sign_kernel(shape, channels_last, dtype, "ede")


def test_gpu_launches_pass_num_warps_for_8_elements_per_thread():
    # one fp32 value per thread and element; the 16-bit forward holds twice as many elements (the same bytes),
    # unaligned NCHW planes (H·W not a multiple of 16) half as many
    with tiles.use(tiles.GPU):
        configs = [act_kernels.forward_config((2, 8, 33, 33), torch.float32, False, True),
                   act_kernels.backward_config((2, 8, 32, 32), torch.float32, False, True, "ede"),
                   act_kernels.backward_config((2, 8, 33, 33), torch.float32, True, True, "ede"),
                   weight_kernels.forward_config((64, 64, 3, 3), torch.float32, True),
                   weight_kernels.backward_config((64, 64, 3, 3), torch.float32, True, "ede")]
        for config in configs:
            elements = 1
            for name, value in config.constexprs.items():
                if name.startswith("BLOCK"):
                    elements *= value
            assert elements == config.num_warps * 32 * tiles.ELEMENTS_PER_THREAD, config.describe()
        half = act_kernels.forward_config((2, 8, 33, 33), torch.bfloat16, False, True)
        assert half.constexprs["BLOCK"] == 2 * configs[0].constexprs["BLOCK"] and half.num_warps == configs[0].num_warps
        unaligned = act_kernels.backward_config((2, 8, 33, 33), torch.float32, False, True, "ede")
        elements = unaligned.constexprs["BLOCK_P"] * unaligned.constexprs["BLOCK_HW"]
        assert elements == unaligned.num_warps * 32 * tiles.ELEMENTS_PER_THREAD // 2


def test_tile_sizes_are_checked_and_restored():
    before = tiles.current()
    with pytest.raises(ValueError, match="power of two"):
        with tiles.use(plane_block=1000):
            pass
    with tiles.use(tiles.GPU, weight_tile=64) as sizes:
        assert tiles.current() == sizes and sizes.weight_tile == 64 and sizes.plane_block == tiles.GPU.plane_block
    assert tiles.current() == before


def test_kernels_reject_k_and_t_on_another_device():
    # Copying k and t to the input's device would synchronise the host each step and break CUDA-graph capture.
    on_meta = torch.tensor(1.0, device="meta")
    k, t = EDE_POINTS[1]
    x, w = torch.randn(2, 3, 4, 4), torch.randn(4, 3, 3, 3)
    with pytest.raises(ValueError, match=r"act_sign: k must be a one-element tensor on the input's device \(cpu\)"):
        act_kernels.backward(torch.randn(x.shape), x, None, on_meta, t, "ede")
    with pytest.raises(ValueError, match=r"weight_sign: t must be a one-element tensor on the input's device"):
        weight_kernels.backward(torch.randn(w.shape), w, None, k, on_meta, "ede")
    with pytest.raises(ValueError, match=r"got shape \(2,\)"):
        act_kernels.backward(torch.randn(x.shape), x, None, k, torch.ones(2), "ede")


def test_kernels_reject_bad_shapes():
    with pytest.raises(ValueError, match="shift has shape"):
        act_kernels.forward(torch.randn(2, 3, 4, 4), torch.rand(3, 2))
    with pytest.raises(ValueError, match="alpha has shape"):
        weight_kernels.forward(torch.randn(4, 3, 3, 3), torch.rand(3))


# --- the tests catch a wrong kernel -------------------------------------------------------------------------------

ACT_STORE = "\n        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)\n        "
# Each mutant is a kernel file with one fault (old -> new, each occurring once), loaded as a module of its own and
# swapped into the launchers' module for one test: the checks the suite runs must fail on it.
MUTANTS = {
    "drops-k": (surrogates, [("derivative = k * t * (", "derivative = t * (")],
                [(act_kernels, "surrogate_derivative"), (weight_kernels, "surrogate_derivative")]),
    "act-drops-shift-from-derivative": (act_kernels, [
        (f"surrogate_derivative(v, k, t, SURROGATE), 0.0){ACT_STORE}dshift += tl.sum(dx, axis={axis})",
         f"surrogate_derivative(v - shift[{index}], k, t, SURROGATE), 0.0){ACT_STORE}dshift += tl.sum(dx, axis={axis})")
        for axis, index in ((1, ":, None"), (0, "None, :"))  # NCHW planes, channels_last
    ], [(act_kernels, "_backward_planes_kernel"), (act_kernels, "_backward_channels_last_kernel")]),
    "weight-drops-shift-from-derivative": (weight_kernels, [
        ("g * surrogate_derivative(v, k, t, SURROGATE)",
         "g * surrogate_derivative(v - shift[:, None], k, t, SURROGATE)"),
    ], [(weight_kernels, "_backward_kernel")]),
    "loses-sigmoid-slope-in-dalpha": (weight_kernels, [("gate * (1.0 - gate) * scaled_mean", "gate * scaled_mean")],
                                      [(weight_kernels, "_backward_kernel")]),
}
# What each mutant must fail: the suite's own checks (test_*_kernel_matches_reference), where the fault shows.
MUTANT_CHECKS = {
    "drops-k": [lambda: check_act_sign_kernel((3, 24, 7, 7), False, torch.float32, "ede", ede=EDE_POINTS[0]),
                lambda: check_weight_sign_kernel((16, 16, 3, 3), False, torch.float32, "ede", ede=EDE_POINTS[2])],
    "act-drops-shift-from-derivative": [lambda: check_act_sign_kernel((3, 24, 7, 7), False, torch.float32, "approx"),
                                        lambda: check_act_sign_kernel((3, 24, 7, 7), True, torch.float32, "approx")],
    "weight-drops-shift-from-derivative": [
        lambda: check_weight_sign_kernel((16, 16, 3, 3), False, torch.float32, "ede")],
    "loses-sigmoid-slope-in-dalpha": [lambda: check_weight_sign_kernel((16, 16, 3, 3), True, torch.float32, "ste")],
}


def load_mutant(module, replacements, tmp_path):
    source = Path(module.__file__).read_text()
    for old, new in replacements:
        assert source.count(old) == 1, f"{old!r} is not once in {module.__name__}: update the mutant to the kernel"
        source = source.replace(old, new)
    path = tmp_path / f"mutant_{module.__name__.rsplit('.', 1)[-1]}.py"
    path.write_text(source)  # a file, so that Triton can read the mutant's source
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mutant = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mutant)
    return mutant


@pytest.mark.parametrize("name", MUTANTS)
def test_kernel_mutants_are_caught(name, tmp_path, monkeypatch):
    module, replacements, swaps = MUTANTS[name]
    for check in MUTANT_CHECKS[name]:
        check()  # the real kernels pass
    mutant = load_mutant(module, replacements, tmp_path)
    for target, attribute in swaps:
        monkeypatch.setattr(target, attribute, getattr(mutant, attribute))
    for check in MUTANT_CHECKS[name]:
        with pytest.raises(AssertionError):
            check()


# --- the op layer ---------------------------------------------------------------------------------------------


@pytest.fixture(params=["triton", "ops"])
def op_path(request):
    """The custom ops on CPU through each setting that reaches them: "triton" runs the interpreted kernels, "ops"
    (the default) the CPU math. Returns the setting."""
    with sdbnn.backend(request.param):
        assert ops.implementation(torch.zeros(1)) == ("triton" if request.param == "triton" else "cpu")
        yield request.param


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("with_shift", [True, False], ids=["shift", "no-shift"])
def test_ops_autograd_matches_reference_backend(op_path, channels_last, with_shift):
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 6, 5, 3), torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    shift = torch.rand(2, 6) if with_shift else None
    w, alpha = nonzero_random((4, 6, 3, 3), torch.float32, 0.3), torch.randn(4)
    results = {}
    for backend in (op_path, "reference"):
        leaves = [tensor.clone().requires_grad_() if tensor is not None else None for tensor in (x, shift, w, alpha)]
        xl, sl, wl, al = leaves
        with sdbnn.backend(backend):
            a = ops.act_sign(xl, sl, k, t, "ede")
            b = ops.weight_sign(wl, al, k, t, "clip")
        (torch.nn.functional.conv2d(a, b, padding=1) ** 2).sum().backward()
        results[backend] = [a, b] + [leaf.grad for leaf in leaves if leaf is not None]
        assert a.stride() == x.stride()
    # The reference evaluates the official 1 − tanh² in fp32, which cancels where tanh → 1 (relative error up to
    # ~1e-4 there); the kernels' exp form does not. Per element, both are checked against float64 above.
    for got, expected in zip(results[op_path], results["reference"]):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_opcheck(op_path, channels_last):
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 5, 3, 4), torch.float32)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    shift = torch.rand(2, 5, requires_grad=True)
    w = nonzero_random((4, 5, 3, 3), torch.float32, 0.3)
    if channels_last:
        w = w.to(memory_format=torch.channels_last)
    w.requires_grad_()
    alpha = torch.randn(4, requires_grad=True)
    grad = torch.randn(x.shape)
    cases = [
        (torch.ops.sdbnn.act_sign.default, (x, shift, k, t, "ede")),
        (torch.ops.sdbnn.act_sign.default, (x, None, k, t, "approx")),
        (torch.ops.sdbnn.act_sign_backward.default, (grad, x.detach(), shift.detach(), k, t, "ede")),
        (torch.ops.sdbnn.weight_sign.default, (w, alpha, k, t, "clip")),
        (torch.ops.sdbnn.weight_sign.default, (w, None, k, t, "ede")),
        (torch.ops.sdbnn.weight_sign_backward.default, (torch.randn(w.shape), w.detach(), alpha.detach(), k, t, "ede")),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)


def test_backend_switch_picks_one_implementation_per_device():
    cpu, meta = torch.zeros(1), torch.empty(1, device="meta")
    assert ops.current_backend() == "ops" and ops.implementation(cpu) == "cpu"
    with sdbnn.backend("reference"):
        assert ops.current_backend() == "reference" and ops.implementation(cpu) == "reference"
    with sdbnn.backend("triton"):  # this process defined the kernels for the interpreter (conftest)
        assert ops.implementation(cpu) == "triton"
    assert ops.current_backend() == "ops" and ops.implementation(meta) == "cpu"
    assert set(ops.BACKENDS) == {"ops", "triton", "reference"} and set(ops.IMPLEMENTATIONS) == {"reference", "cpu", "triton"}
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        with sdbnn.backend("cuda"):
            pass


def test_triton_backend_without_the_interpreter_is_a_clear_error():
    code = ("import sdbnn, pytest\n"
            "with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):\n"
            "    with sdbnn.backend('triton'):\n"
            "        pass\n")
    subprocess.run([sys.executable, "-c", code], env=cpu_env(), check=True, timeout=120)  # cpu_env: no interpreter


# --- autocast and float64 -------------------------------------------------------------------------------------


class CastCounter(TorchDispatchMode):
    """Counts dtype casts (aten._to_copy) of tensors shaped like ``shape``."""

    def __init__(self, shape):
        super().__init__()
        self.shape, self.casts = tuple(shape), 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default and tuple(args[0].shape) == self.shape:
            self.casts += 1
        return func(*args, **(kwargs or {}))


def _autocast_conv_step(w, alpha, x, k, t):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        binary = ops.weight_sign(w, alpha, k, t, "ede")
        return binary, F.conv2d(x, binary, padding=1)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_weight_sign_returns_the_autocast_dtype(op_path, compiled):
    k, t = EDE_POINTS[1]
    x = nonzero_random((2, 4, 6, 6), torch.float32)
    w, alpha = nonzero_random((5, 4, 3, 3), torch.float32, 0.3), torch.randn(5)
    grad = torch.randn(2, 5, 6, 6)
    results, casts = {}, {}
    for backend in (op_path, "reference"):
        torch._dynamo.reset()
        w_leaf, alpha_leaf = w.clone().requires_grad_(), alpha.clone().requires_grad_()
        step = _autocast_conv_step
        if compiled and backend == op_path:
            step = torch.compile(_autocast_conv_step, fullgraph=True)
        counter = CastCounter(w.shape)
        # dynamo does not trace under a dispatch mode: the casts are counted in eager runs
        with sdbnn.backend(backend), counter if step is _autocast_conv_step else contextlib.nullcontext():
            binary, out = step(w_leaf, alpha_leaf, x, k, t)
            out.backward(grad)
        results[backend], casts[backend] = (binary, out, w_leaf.grad, alpha_leaf.grad), counter.casts
    (binary, out, dw, dalpha), (ref_binary, ref_out, ref_dw, ref_dalpha) = results[op_path], results["reference"]
    assert binary.dtype == torch.bfloat16 and ref_binary.dtype == torch.float32  # the reference leaves it to conv2d
    assert torch.equal(binary.float(), ref_binary) and torch.equal(out, ref_out) and out.dtype == torch.bfloat16
    assert dw.dtype == torch.float32 and dalpha.dtype == torch.float32  # gradients of fp32 parameters stay fp32
    torch.testing.assert_close(dw, ref_dw, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dalpha, ref_dalpha, rtol=1e-4, atol=1e-9)
    # The reference casts the sign forward and its gradient backward; the fused op neither.
    assert casts["reference"] == 2 and (compiled or casts[op_path] == 0)


def test_weight_sign_dtype_outside_autocast_and_for_float64():
    k, t = EDE_POINTS[1]
    w = nonzero_random((3, 2, 3, 3), torch.float32, 0.3)
    assert ops.weight_sign(w, None, k, t, "ede").dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ops.weight_sign(w.double(), None, k.double(), t.double(), "ede").dtype == torch.float64
        assert ops.autocast_dtype(w) == torch.bfloat16 and ops.autocast_dtype(w.bfloat16()) is None
        assert ops.autocast_dtype(torch.empty(3, device="meta")) is None
    # the fake agrees with the real op on the requested dtype (and the layout), forward and backward
    torch.library.opcheck(torch.ops.sdbnn.weight_sign.default, (w.requires_grad_(), None, k, t, "ede", torch.bfloat16))


def test_float64_gradients_match_closed_forms(op_path):
    # Both CPU paths keep float64 in float64: the reference math, and the Triton kernels (COMPUTE = float64).
    k, t = torch.tensor(1.0, dtype=torch.float64), torch.tensor(2.5, dtype=torch.float64)
    x = nonzero_random((2, 3, 5, 4), torch.float64).requires_grad_()
    shift = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    w = nonzero_random((4, 3, 3, 3), torch.float64, 0.3).requires_grad_()
    alpha = torch.randn(4, dtype=torch.float64, requires_grad=True)
    g_act, g_weight = torch.randn(x.shape, dtype=torch.float64), torch.randn(w.shape, dtype=torch.float64)
    ops.act_sign(x, shift, k, t, "ede").backward(g_act)
    ops.weight_sign(w, alpha, k, t, "ede").backward(g_weight)
    shifted = x.detach() + shift.detach()[:, :, None, None]
    dx = g_act * k * t * (1 - torch.tanh(t * shifted) ** 2)
    torch.testing.assert_close(x.grad, dx, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(shift.grad, dx.sum(dim=(2, 3)), rtol=1e-12, atol=1e-14)
    gate, signed_mean = torch.sigmoid(alpha.detach()), 0.01 * w.detach().flatten(1).mean(1)
    dw = g_weight * k * t * (1 - torch.tanh(t * (w.detach() + (gate * signed_mean)[:, None, None, None])) ** 2)
    torch.testing.assert_close(w.grad, dw, rtol=1e-12, atol=1e-14)
    dalpha = gate * (1 - gate) * signed_mean * dw.flatten(1).sum(1)
    torch.testing.assert_close(alpha.grad, dalpha, rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize("through", ["kernel", "op"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_weight_sign_stores_the_autocast_dtype(channels_last, through):
    # fp32 weights, bf16 sign (what the convolution uses under autocast) and bf16 incoming gradient; fp32 dW, d(alpha)
    check_weight_sign((6, 5, 3, 3), channels_last, torch.float32, "ede", through=through, out_dtype=torch.bfloat16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_op_level_checks_used_by_the_gpu_session(op_path, channels_last, dtype):
    # The GPU session checks the ops through autograd; on CPU they take the interpreter or the reference math.
    check_act_sign((2, 5, 3, 4), channels_last, dtype, "approx", through="op")
    check_weight_sign((4, 5, 3, 3), channels_last, dtype, "approx", through="op")

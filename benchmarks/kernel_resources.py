"""What the Triton kernels compile to on each GPU target, without a GPU: registers, spills, shared memory, occupancy.

    python -m benchmarks.kernel_resources                      # sm_80, sm_90, sm_100
    python -m benchmarks.kernel_resources --arch 75 80 86 89 90 100 120 --out /tmp/results

Every kernel specialization the four paper models launch: each binary layer's activation and weight shape (found
by running the models on the meta device at their recipes' batch and image size), stored in fp32, bf16 and fp16 (and
fp32 weights with a bf16/fp16 sign, as under autocast), NCHW and channels_last, with and without shift / alpha, every
surrogate. The launchers run on meta tensors inside `sdbnn.kernels.launches.recording()`, so the tiles, grids,
num_warps and arguments compiled here are exactly theirs. Identical specializations compile once per target, with
Triton's compiler for an explicit `GPUTarget`; the triton wheel's `cuobjdump -res-usage` reads registers and spills.

Writes ``kernel-resources-triton<version>-<date>.{json,md}`` (rows: kernel, arch, constexprs, num_warps, registers,
spill_bytes, shared_bytes, occupancy, compiled, ...); exits 1 unless every row compiles, no row spills, every
act_sign row reaches ≥ 50% theoretical occupancy on sm_90 and no weight_sign row needs 255 registers (the most a
thread can have: the compiler would spill next).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml

from benchmarks.occupancy import ARCHS, OCCUPANCY_ARCH, occupancy, targets

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ARCHS = (80, 90, 100)
MODELS = ("resnet20", "vgg_small", "resnet18_cifar", "resnet18_imagenet")
# model -> (recipe, accelerate config its batch is split over or None, image size)
RECIPES = {
    "resnet20": ("cifar10_resnet20.yaml", None, 32),
    "vgg_small": ("cifar10_vgg_small.yaml", None, 32),
    "resnet18_cifar": ("cifar10_resnet18_cifar.yaml", None, 32),
    "resnet18_imagenet": ("imagenet_stage2.yaml", "accelerate_2gpu.yaml", 224),
}
STORAGE = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# weight dtype -> sign dtype: the same dtype, plus fp32 weights signed into autocast's bf16/fp16
WEIGHT_STORAGE = [("fp32", "fp32"), ("bf16", "bf16"), ("fp16", "fp16"), ("fp32", "bf16"), ("fp32", "fp16")]
TRITON_TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


# --- which launches the models make --------------------------------------------------------------------------


def recipe_batch(model: str) -> tuple[int, int]:
    """(per-device batch, image size) of ``model``'s training recipe."""
    recipe, accelerate, size = RECIPES[model]
    batch = yaml.safe_load((ROOT / "launch/configs" / recipe).read_text())["batch_size"]
    if accelerate:  # the recipe's batch is global, split over the accelerate config's processes
        batch //= yaml.safe_load((ROOT / "launch/configs" / accelerate).read_text())["num_processes"]
    return batch, size


def layer_shapes(model_name: str) -> list[dict]:
    """Every SDConv2d of the model: its name, input (B, C, H, W) and weight shape, from a meta-device forward."""
    import sdbnn

    recipe, _, _ = RECIPES[model_name]
    options = yaml.safe_load((ROOT / "launch/configs" / recipe).read_text()).get("model_options") or {}
    batch, size = recipe_batch(model_name)
    with torch.device("meta"):
        model = sdbnn.create_model(model_name, **options)
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, sdbnn.SDConv2d):
            def record(module, inputs, name=name):
                layers.append({"layer": name, "input": tuple(inputs[0].shape), "weight": tuple(module.weight.shape),
                               "binary_weights": module.binary_weights})
            module.register_forward_pre_hook(record)
    with torch.no_grad():
        model(torch.empty(batch, 3, size, size, device="meta"))
    return layers


def layer_uses(layers_by_model: dict[str, list[dict]]) -> tuple[dict, dict]:
    """({activation shape: layers}, {binary weight shape: layers}) over all models."""
    activations, weights = defaultdict(list), defaultdict(list)
    for model, layers in layers_by_model.items():
        for layer in layers:
            activations[layer["input"]].append(f"{model}.{layer['layer']}")
            if layer["binary_weights"]:
                weights[layer["weight"]].append(f"{model}.{layer['layer']}")
    return activations, weights


def recorded_launches(activation_shapes: dict, weight_shapes: dict, act_storage=tuple(STORAGE),
                      weight_storage=tuple(WEIGHT_STORAGE), channels_last=(False, True), optional=(False, True),
                      surrogates=None):
    """Yield (launch, what it is for) for every launch the launchers make over the sweep, from meta tensors.
    ``optional``: without / with shift and alpha; ``surrogates``: the backward's (default all)."""
    from sdbnn import reference
    from sdbnn.kernels import act_sign, launches, weight_sign

    surrogates = surrogates or reference.SURROGATES
    meta = torch.device("meta")
    k = t = torch.empty((), device=meta)

    def run(call, use, inputs):
        with launches.recording() as recorded:
            call()
        for item in recorded:
            yield item, {**use, "read_bytes": streamed_read_bytes(item, inputs)}

    for shape, used_by in activation_shapes.items():
        for dtype_name in act_storage:
            for layout in channels_last:
                x = torch.empty(shape, dtype=STORAGE[dtype_name], device=meta)
                if layout:
                    x = x.to(memory_format=torch.channels_last)
                grad = torch.empty_like(x)
                for with_shift in optional:
                    shift = torch.empty(shape[:2], dtype=x.dtype, device=meta) if with_shift else None
                    use = {"shape": shape, "dtype": dtype_name, "layout": "channels_last" if layout else "nchw",
                           "used_by": used_by}
                    yield from run(lambda: act_sign.forward(x, shift), use, [x])
                    for surrogate in surrogates:
                        yield from run(lambda: act_sign.backward(grad, x, shift, k, t, surrogate), use, [grad, x])
    for shape, used_by in weight_shapes.items():
        for weight_name, sign_name in weight_storage:
            w = torch.empty(shape, dtype=STORAGE[weight_name], device=meta)
            grad = torch.empty(shape, dtype=STORAGE[sign_name], device=meta)
            for with_alpha in optional:
                alpha = torch.empty(shape[0], dtype=w.dtype, device=meta) if with_alpha else None
                dtype_name = weight_name if weight_name == sign_name else f"{weight_name}->{sign_name}"
                use = {"shape": shape, "dtype": dtype_name, "layout": "any", "used_by": used_by}
                yield from run(lambda: weight_sign.forward(w, alpha, grad.dtype), use, [w])
                for surrogate in surrogates:
                    yield from run(lambda: weight_sign.backward(grad, w, alpha, k, t, surrogate), use, [grad, w])


def specialization(recorded) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of a launch as Triton's JIT specializes it on a GPU: tensors are typed pointers
    aligned to 16 bytes (torch's allocations are), ints are i32 (i64 past 2^31), the int 1 becomes a constant and
    multiples of 16 are marked divisible by 16."""
    config = recorded.config
    values = dict(zip(config.kernel.arg_names, recorded.args)) | dict(config.runtime)
    signature, constexprs, attrs = {}, dict(config.constexprs), {}
    for index, name in enumerate(config.kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        value = values[name]
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + TRITON_TYPES[value.dtype]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif value == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


# --- compiling and reading resources -------------------------------------------------------------------------


def tool(name: str) -> Path:
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: this triton install has no NVIDIA backend tools")
    return path


def nvidia_backend_available() -> str | None:
    """None when kernels can be compiled for NVIDIA targets here, else why not."""
    try:
        import triton.backends

        if "nvidia" not in triton.backends.backends:
            return "triton has no NVIDIA backend"
        tool("ptxas"), tool("cuobjdump")
    except (ImportError, FileNotFoundError) as error:
        return str(error)
    return None


def resource_usage(cubin: bytes) -> dict[str, int]:
    """REG, STACK, SHARED (static) and LOCAL of the one kernel in ``cubin``, from `cuobjdump -res-usage`."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([str(tool("cuobjdump")), "-res-usage", file.name], capture_output=True, text=True,
                              check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage from:\n{text}")
    return dict(zip(("registers", "stack", "static_shared", "local"), map(int, match.groups())))


def ptxas_usage(ptx: str, arch: int) -> dict[str, int]:
    """Registers and stack that `ptxas -v` reports for Triton's PTX: a second reading of what cuobjdump reads from
    Triton's cubin (Triton's metadata has no register count without a GPU)."""
    target = re.search(r"^\.target (\S+)", ptx, re.MULTILINE).group(1)  # sm_90a where Triton asks for it
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as file:
        file.write(ptx)
        file.flush()
        log = subprocess.run([str(tool("ptxas-blackwell" if arch >= 100 else "ptxas")), "-v", f"--gpu-name={target}",
                              file.name, "-o", os.devnull], capture_output=True, text=True, check=True).stderr
    return {"registers": int(re.search(r"Used (\d+) registers", log).group(1)),
            "stack": int(re.search(r"(\d+) bytes stack frame", log).group(1))}


def compile_for(recorded, arch: int) -> dict[str, Any]:
    import triton
    import triton.compiler
    from triton.backends.compiler import GPUTarget

    signature, constexprs, attrs = specialization(recorded)
    source = triton.compiler.ASTSource(fn=recorded.config.kernel, signature=signature, constexprs=constexprs,
                                       attrs=attrs)
    compiled = triton.compiler.compile(source, target=GPUTarget("cuda", arch, 32),
                                       options={"num_warps": recorded.config.num_warps})
    usage = resource_usage(compiled.asm["cubin"])
    return {**usage, "dynamic_shared": compiled.metadata.shared, "ptx": compiled.asm["ptx"]}


def launch_key(recorded) -> str:
    signature, constexprs, attrs = specialization(recorded)
    attrs = {str(key): value for key, value in attrs.items()}
    return json.dumps([recorded.config.name, signature, {k: str(v) for k, v in constexprs.items()}, attrs,
                       recorded.config.num_warps], sort_keys=True)


def streamed_read_bytes(recorded, inputs: list[torch.Tensor]) -> int:
    """Bytes read per element from the full-size input tensors (x and g, or w and g)."""
    largest = max(arg.numel() for arg in recorded.args if isinstance(arg, torch.Tensor))
    seen = []
    for arg in recorded.args:
        if isinstance(arg, torch.Tensor) and arg.numel() == largest and not any(arg is s for s in seen):
            seen.append(arg)
    return sum(arg.element_size() for arg in seen if any(arg is given for given in inputs))


CROSS_CHECK_EVERY = 25  # specializations: cuobjdump's registers and stack against ptxas -v's


def compile_rows(launches, archs: list[int], log=print, cross_check: list[bool] | None = None,
                 cross_check_every: int = CROSS_CHECK_EVERY) -> list[dict]:
    """One row per distinct specialization among ``launches`` ((launch, use) pairs) and target. ``cross_check``
    collects, for every ``cross_check_every``-th specialization, whether `ptxas -v` agrees with cuobjdump."""
    cross_check = [] if cross_check is None else cross_check
    from sdbnn.kernels.launches import json_value

    unique: dict[str, dict] = {}
    for recorded, use in launches:
        entry = unique.setdefault(launch_key(recorded), {"recorded": recorded, "use": use, "used_by": set()})
        entry["used_by"].update(use["used_by"])
    log(f"{len(unique)} distinct kernel specializations; compiling for sm_{', sm_'.join(map(str, archs))}")
    rows = []
    for number, entry in enumerate(unique.values(), 1):
        recorded, use = entry["recorded"], entry["use"]
        config = recorded.config
        tile_elements = math.prod(value for name, value in config.constexprs.items() if name.startswith("BLOCK"))
        signature, constexprs, attrs = specialization(recorded)
        names = config.kernel.arg_names
        base = {
            "kernel": config.name,
            "constexprs": {name: json_value(value) for name, value in constexprs.items()},
            "num_warps": config.num_warps,
            "signature": {name: kind for name, kind in signature.items() if kind != "constexpr"},
            "divisible_by_16": [names[index] for (index,) in attrs if not signature[names[index]].startswith("*")],
            "example": {"shape": list(use["shape"]), "dtype": use["dtype"], "layout": use["layout"],
                        "grid": list(config.grid), **({"runtime": dict(config.runtime)} if config.runtime else {})},
            "tile_elements": tile_elements,
            "layers": len(entry["used_by"]),
        }
        for arch in archs:
            row = {**base, "arch": f"sm_{arch}"}
            try:
                usage = compile_for(recorded, arch)
            except Exception as error:  # noqa: BLE001 - a failed compile is a result row
                rows.append({**row, "compiled": False, "error": f"{type(error).__name__}: {error}"[:2000]})
                continue
            if (number - 1) % cross_check_every == 0:
                second = ptxas_usage(usage["ptx"], arch)
                cross_check.append(second["registers"] == usage["registers"] and second["stack"] == usage["stack"])
            shared = usage["dynamic_shared"] + usage["static_shared"]
            fraction, blocks, limit = occupancy(arch, usage["registers"], config.num_warps, shared)
            rows.append({
                **row, "compiled": True, "registers": usage["registers"],
                "spill_bytes": usage["stack"] + usage["local"], "stack_bytes": usage["stack"],
                "local_bytes": usage["local"], "shared_bytes": shared, "occupancy": round(fraction, 4),
                "resident_blocks": blocks, "occupancy_limit": limit,
                "read_bytes_in_flight_per_sm": blocks * tile_elements * use["read_bytes"],
            })
        if number % 50 == 0:
            log(f"  {number}/{len(unique)} specializations")
    return rows


# A small and a large layer in the dtypes a GPU trains with (bf16 activations; fp32 weights signed into bf16), with
# shift/alpha and EDE: ResNet-18 ImageNet's last stage (7×7 planes, which start unaligned) and first, at batch 256;
# ResNet-20's 16-channel weights (4 rows to a program) and ResNet-18's 512-channel ones (rows walked in blocks). The
# default test suite compiles these (tests/test_kernel_resources.py); the full sweep stays here.
REPRESENTATIVE = {"activations": [(256, 512, 7, 7), (256, 64, 56, 56)], "weights": [(16, 16, 3, 3), (512, 512, 3, 3)]}


def representative_rows(arch: int = OCCUPANCY_ARCH) -> tuple[list[dict], list[bool]]:
    """(rows, whether ptxas -v agreed with cuobjdump on each) for the REPRESENTATIVE layers."""
    launches = recorded_launches(
        {shape: ["representative"] for shape in REPRESENTATIVE["activations"]},
        {shape: ["representative"] for shape in REPRESENTATIVE["weights"]},
        act_storage=("bf16",), weight_storage=(("fp32", "bf16"),), optional=(True,), surrogates=("ede",),
    )
    cross_check: list[bool] = []
    rows = compile_rows(launches, [arch], log=lambda message: None, cross_check=cross_check, cross_check_every=1)
    return rows, cross_check


def json_text(result: dict) -> str:
    """The result as JSON with one row per line (the file stays readable and diffable at ~1,500 rows)."""
    head = json.dumps({key: value for key, value in result.items() if key != "rows"}, indent=1)
    rows = ",\n".join("  " + json.dumps(row, separators=(",", ":")) for row in result["rows"])
    return f'{head[:-2]},\n "rows": [\n{rows}\n ]\n}}\n'


def result_of(rows: list[dict], archs: list[int], layers: int, cross_check: list[bool], command: str) -> dict:
    """The result file's content: provenance, what was swept, the target misses and the rows."""
    import triton

    from sdbnn.provenance import commit

    failures = targets(rows)
    if not all(cross_check):
        failures.append(f"ptxas -v disagrees with cuobjdump on {cross_check.count(False)} of {len(cross_check)} "
                        "cross-checked specializations")
    return {
        "triton": triton.__version__, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        **commit(), "command": command,
        "pythonpath": os.environ.get("PYTHONPATH"),  # e.g. another triton than the installed one
        "archs": [f"sm_{arch}" for arch in archs],
        "inputs": {model: recipe_batch(model) for model in MODELS},
        "layers": layers,
        "specializations": len(rows) // len(archs),
        "arch_limits": {f"sm_{arch}": dataclasses.asdict(limits) for arch, limits in ARCHS.items()},
        "ptxas_cross_check": {"checked": len(cross_check), "agreed": sum(cross_check)},
        "target_misses": failures,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=int, default=list(DEFAULT_ARCHS), choices=sorted(ARCHS),
                        help="compute capabilities to compile for (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for JSON + markdown")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    problem = nvidia_backend_available()
    if problem:
        parser.error(f"cannot compile for NVIDIA targets: {problem}")

    import triton

    from benchmarks.kernel_resources_report import markdown
    from sdbnn.io import atomic_write

    log = lambda message: print(message, flush=True)  # noqa: E731
    layers_by_model = {model: layer_shapes(model) for model in MODELS}
    log(f"{sum(len(layers) for layers in layers_by_model.values())} binary layers in {len(MODELS)} models")
    cross_check: list[bool] = []
    rows = compile_rows(recorded_launches(*layer_uses(layers_by_model)), args.arch, log, cross_check)
    command = " ".join(["python -m benchmarks.kernel_resources", *(argv if argv is not None else sys.argv[1:])])
    result = result_of(rows, args.arch, sum(len(layers) for layers in layers_by_model.values()), cross_check, command)
    failures = result["target_misses"]
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"kernel-resources-triton{triton.__version__}-{result['date']}"
    atomic_write(args.out / f"{stem}.json", lambda tmp: tmp.write_text(json_text(result)))
    atomic_write(args.out / f"{stem}.md", lambda tmp: tmp.write_text(markdown(result)))
    print(f"wrote {args.out / stem}.json and .md: {len(rows)} rows, "
          + (f"{len(failures)} target misses" if failures else "every target met"))
    for line in failures[:20]:
        print("  " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

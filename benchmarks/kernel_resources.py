"""What the Triton kernels compile to on each GPU target, without a GPU: registers, spills, shared memory, occupancy.

    python -m benchmarks.kernel_resources                      # sm_80, sm_90, sm_100
    python -m benchmarks.kernel_resources --arch 75 80 86 89 90 100 120 --out /tmp/results

Every kernel specialization the four paper models launch (each binary layer at its recipe's batch and image size,
every dtype, layout, surrogate, with and without shift / alpha), as the launchers configure it on meta tensors, compiled
for an explicit `GPUTarget`, read by triton's `cuobjdump`: ``kernel-resources-triton<version>-<date>.{json,md}``. Exits
1 unless all compile without spills, act_sign keeps ≥ 50% occupancy on sm_90, weight_sign < 255 registers (`targets`).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch
import yaml

from benchmarks.common import table

ROOT = Path(__file__).resolve().parent.parent
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

# Per-SM limits (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"): resident warps and
# blocks, shared memory (the largest carve-out) and the driver's reserve of it per block. All: 65,536 registers per SM
# in 4 sub-partitions (a warp's in one), per warp in units of 256, ≤ 255 a thread; shared memory in units of 128 B.
ARCHS = {
    75: dict(max_warps=32, max_blocks=16, shared_bytes=64 * 1024, reserved_shared=0),  # Turing
    80: dict(max_warps=64, max_blocks=32, shared_bytes=164 * 1024, reserved_shared=1024),  # A100
    86: dict(max_warps=48, max_blocks=16, shared_bytes=100 * 1024, reserved_shared=1024),  # GA10x
    89: dict(max_warps=48, max_blocks=24, shared_bytes=100 * 1024, reserved_shared=1024),  # Ada
    90: dict(max_warps=64, max_blocks=32, shared_bytes=228 * 1024, reserved_shared=1024),  # H100, H200
    100: dict(max_warps=64, max_blocks=32, shared_bytes=228 * 1024, reserved_shared=1024),  # B200
    120: dict(max_warps=48, max_blocks=32, shared_bytes=128 * 1024, reserved_shared=1024),  # RTX 50xx
}
REGISTERS_PER_SM, SUB_PARTITIONS, REGISTER_UNIT, MAX_REGISTERS, SHARED_UNIT = 65536, 4, 256, 255, 128
ACT_SIGN_MIN_OCCUPANCY, OCCUPANCY_ARCH = 0.5, 90  # the act_sign kernels' target, on sm_90


def recipe(model: str) -> dict:
    return yaml.safe_load((ROOT / "launch/configs" / RECIPES[model.removesuffix("_fp")][0]).read_text())


def recipe_batch(model: str) -> tuple[int, int]:
    """(per-device batch, image size) of ``model``'s training recipe."""
    _, accelerate, size = RECIPES[model]
    batch = recipe(model)["batch_size"]
    if accelerate:  # the recipe's batch is global, split over the accelerate config's processes
        batch //= yaml.safe_load((ROOT / "launch/configs" / accelerate).read_text())["num_processes"]
    return batch, size


def layer_uses(models=MODELS) -> tuple[dict, dict]:
    """({activation shape: layers}, {binary weight shape: layers}) of the models' SDConv2d layers, on meta tensors."""
    import sdbnn

    activations, weights = defaultdict(list), defaultdict(list)
    for model_name in models:
        with torch.device("meta"):
            model = sdbnn.create_model(model_name, **(recipe(model_name).get("model_options") or {}))
        for name, module in model.named_modules():
            if isinstance(module, sdbnn.SDConv2d):
                def record(module, inputs, name=f"{model_name}.{name}"):
                    activations[tuple(inputs[0].shape)].append(name)
                    if module.binary_weights:
                        weights[tuple(module.weight.shape)].append(name)
                module.register_forward_pre_hook(record)
        batch, size = recipe_batch(model_name)
        with torch.no_grad():
            model(torch.empty(batch, 3, size, size, device="meta"))
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

    def run(call, use, inputs):  # read_bytes: bytes read per element of the streamed inputs (x and g, or w and g)
        with launches.recording() as recorded:
            call()
        for item in recorded:
            yield item, {**use, "read_bytes": sum(tensor.element_size() for tensor in inputs)}

    for shape, used_by in activation_shapes.items():
        for dtype_name, layout, with_shift in itertools.product(act_storage, channels_last, optional):
            x = torch.empty(shape, dtype=STORAGE[dtype_name], device=meta)
            x = x.to(memory_format=torch.channels_last) if layout else x
            shift = torch.empty(shape[:2], dtype=x.dtype, device=meta) if with_shift else None
            grad, layout_name = torch.empty_like(x), "channels_last" if layout else "nchw"
            use = {"shape": shape, "dtype": dtype_name, "layout": layout_name, "used_by": used_by}
            yield from run(lambda: act_sign.forward(x, shift), use, [x])
            for surrogate in surrogates:
                yield from run(lambda: act_sign.backward(grad, x, shift, k, t, surrogate), use, [grad, x])
    for shape, used_by in weight_shapes.items():
        for (weight_name, sign_name), with_alpha in itertools.product(weight_storage, optional):
            w = torch.empty(shape, dtype=STORAGE[weight_name], device=meta)
            grad = torch.empty(shape, dtype=STORAGE[sign_name], device=meta)
            alpha = torch.empty(shape[0], dtype=w.dtype, device=meta) if with_alpha else None
            dtype_name = weight_name if weight_name == sign_name else f"{weight_name}->{sign_name}"
            use = {"shape": shape, "dtype": dtype_name, "layout": "any", "used_by": used_by}
            yield from run(lambda: weight_sign.forward(w, alpha, grad.dtype), use, [w])
            for surrogate in surrogates:
                yield from run(lambda: weight_sign.backward(grad, w, alpha, k, t, surrogate), use, [grad, w])


def specialization(recorded) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of a launch as Triton's JIT specializes it on a GPU: 16-byte-aligned typed
    pointers (torch allocates so), i32 ints (i64 past 2^31), the int 1 a constant, multiples of 16 marked so."""
    config = recorded.config
    values = dict(zip(config.kernel.arg_names, recorded.args)) | dict(config.runtime)
    signature, constexprs, attrs = {}, dict(config.constexprs), {}
    for index, name in enumerate(config.kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif isinstance(value := values[name], torch.Tensor):
            signature[name] = "*" + TRITON_TYPES[value.dtype]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif value == 1:
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


def tool(name: str) -> Path:
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name


def nvidia_backend_available() -> str | None:
    """None when kernels can be compiled for NVIDIA targets here, else why not."""
    try:
        import triton.backends
    except ImportError as error:
        return str(error)
    if "nvidia" not in triton.backends.backends:
        return "triton has no NVIDIA backend"
    missing = [str(tool(name)) for name in ("ptxas", "cuobjdump") if not tool(name).exists()]
    return f"{', '.join(missing)} missing: this triton install has no NVIDIA backend tools" if missing else None


def occupancy(arch: int, registers: int, num_warps: int, shared_bytes: int) -> tuple[float, int, str]:
    """(resident warps ÷ the SM's maximum, resident blocks, the limiting resource) for blocks of that size."""
    sm = ARCHS[arch]
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_UNIT) * REGISTER_UNIT
    warps_by_registers = (REGISTERS_PER_SM // SUB_PARTITIONS // per_warp) * SUB_PARTITIONS
    shared = math.ceil((shared_bytes + sm["reserved_shared"]) / SHARED_UNIT) * SHARED_UNIT
    limits = {"warps": sm["max_warps"] // num_warps, "registers": warps_by_registers // num_warps,
              "blocks": sm["max_blocks"], "shared": sm["shared_bytes"] // shared if shared else sm["max_blocks"]}
    limit = min(limits, key=limits.get)
    return limits[limit] * num_warps / sm["max_warps"], limits[limit], limit


def resources(cubin: bytes, arch: int, num_warps: int, dynamic_shared: int) -> dict:
    """Registers, spills, shared memory and occupancy of ``cubin``'s kernel by `cuobjdump` (Triton has none offline)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as file:
        file.write(cubin)
        file.flush()
        text = subprocess.run([str(tool("cuobjdump")), "-res-usage", file.name], capture_output=True, text=True,
                              check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cannot read cuobjdump's resource usage from:\n{text}")
    registers, stack, static_shared, local = map(int, match.groups())
    shared = dynamic_shared + static_shared
    fraction, blocks, limit = occupancy(arch, registers, num_warps, shared)
    return {"registers": registers, "spill_bytes": stack + local, "stack_bytes": stack, "local_bytes": local,
            "shared_bytes": shared, "occupancy": round(fraction, 4), "resident_blocks": blocks,
            "occupancy_limit": limit}


def compile_launch(recorded, arch: int):
    """Triton's compiled kernel (asm, metadata) of one recorded launch, for sm_<arch>."""
    import triton.compiler
    from triton.backends.compiler import GPUTarget

    signature, constexprs, attrs = specialization(recorded)
    source = triton.compiler.ASTSource(fn=recorded.config.kernel, signature=signature, constexprs=constexprs,
                                       attrs=attrs)
    return triton.compiler.compile(source, target=GPUTarget("cuda", arch, 32),
                                   options={"num_warps": recorded.config.num_warps})


def compile_rows(launches, archs: list[int], log=print) -> list[dict]:
    """One row per distinct specialization among ``launches`` ((launch, use) pairs) and target."""
    from sdbnn.kernels.launches import json_value

    unique: dict[str, dict] = {}
    for recorded, use in launches:
        signature, constexprs, attrs = spec = specialization(recorded)
        key = json.dumps([recorded.config.name, signature, {k: str(v) for k, v in constexprs.items()},
                          {str(k): v for k, v in attrs.items()}, recorded.config.num_warps], sort_keys=True)
        entry = unique.setdefault(key, {"recorded": recorded, "use": use, "spec": spec, "used_by": set()})
        entry["used_by"].update(use["used_by"])
    log(f"{len(unique)} distinct kernel specializations; compiling for sm_{', sm_'.join(map(str, archs))}")
    rows = []
    for number, entry in enumerate(unique.values(), 1):
        recorded, use, (signature, constexprs, attrs) = entry["recorded"], entry["use"], entry["spec"]
        config, names = recorded.config, recorded.config.kernel.arg_names
        tile_elements = math.prod(value for name, value in config.constexprs.items() if name.startswith("BLOCK"))
        base = {"kernel": config.name, "constexprs": {name: json_value(value) for name, value in constexprs.items()},
                "num_warps": config.num_warps,
                "signature": {name: kind for name, kind in signature.items() if kind != "constexpr"},
                "divisible_by_16": [names[index] for (index,) in attrs if not signature[names[index]].startswith("*")],
                "example": {"shape": list(use["shape"]), "dtype": use["dtype"], "layout": use["layout"],
                            "grid": list(config.grid), **({"runtime": dict(config.runtime)} if config.runtime else {})},
                "tile_elements": tile_elements, "layers": len(entry["used_by"])}
        for arch in archs:
            row = {**base, "arch": f"sm_{arch}"}
            try:
                compiled = compile_launch(recorded, arch)
                usage = resources(compiled.asm["cubin"], arch, config.num_warps, compiled.metadata.shared)
            except Exception as error:  # noqa: BLE001 - a failed compile is a result row
                rows.append({**row, "compiled": False, "error": f"{type(error).__name__}: {error}"[:2000]})
                continue
            # a Little's-law estimate of the reads that keep HBM busy: resident blocks × tile × bytes per element
            rows.append({**row, "compiled": True, **usage,
                         "read_bytes_in_flight_per_sm": usage["resident_blocks"] * tile_elements * use["read_bytes"]})
        if number % 50 == 0:
            log(f"  {number}/{len(unique)} specializations")
    return rows


def targets(rows: list[dict]) -> list[str]:
    """What misses the targets, one line each (empty: all met)."""
    failures = []
    for row in rows:
        what = f"{row['arch']} {row['kernel']} {row['constexprs']} num_warps={row['num_warps']}"
        if not row["compiled"]:
            failures.append(f"{what}: did not compile: {row['error'].splitlines()[0]}")
            continue
        if row["spill_bytes"]:
            failures.append(f"{what}: {row['spill_bytes']} bytes of spills")
        if (row["kernel"].startswith("act_sign") and row["arch"] == f"sm_{OCCUPANCY_ARCH}"
                and row["occupancy"] < ACT_SIGN_MIN_OCCUPANCY):
            failures.append(f"{what}: occupancy {row['occupancy']:.0%} < {ACT_SIGN_MIN_OCCUPANCY:.0%}")
        if row["kernel"].startswith("weight_sign") and row["registers"] >= MAX_REGISTERS:
            failures.append(f"{what}: {row['registers']} registers (the limit)")
    return failures


def result_of(rows: list[dict], archs: list[int], layers: int, command: str) -> dict:
    """The result file's content: provenance, what was swept, the target misses and the rows."""
    import triton

    from sdbnn.provenance import commit

    return {
        "triton": triton.__version__, "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        **commit(), "command": command, "pythonpath": os.environ.get("PYTHONPATH"),  # e.g. another triton
        "archs": [f"sm_{arch}" for arch in archs], "inputs": {model: recipe_batch(model) for model in MODELS},
        "layers": layers, "specializations": len(rows) // len(archs),
        "arch_limits": {f"sm_{arch}": limits for arch, limits in ARCHS.items()},
        "target_misses": targets(rows), "rows": rows,
    }


def _span(values: list, fmt: str = "{}") -> str:
    low, high = (fmt.format(min(values)), fmt.format(max(values))) if values else ("", "")
    return low if low == high else f"{low}–{high}"


def markdown(result: dict) -> str:
    """Targets, then each tile the launchers choose on each target, with one layer that gets it."""
    rows, failures, arch = result["rows"], result["target_misses"], f"sm_{OCCUPANCY_ARCH}"
    inputs = "; ".join(f"{model}: {batch}×{size}²" for model, (batch, size) in result["inputs"].items())
    lines = [
        f"# Kernel resources: triton {result['triton']}, {', '.join(result['archs'])}", "",
        f"Compiled without a GPU on {result['date']} by `{result['command']}` at commit {result['commit']}"
        f"{' (with uncommitted changes)' if result['uncommitted_changes'] else ''}; torch {result['torch']}. "
        f"{result['layers']} binary layers at their recipes' per-device batch and image size ({inputs}): "
        f"{result['specializations']} specializations, {len(rows)} rows.", "",
        "Registers, spills (stack + local): `cuobjdump -res-usage`. Reads in flight per SM = resident blocks × tile × "
        "bytes read per element (Little's law: an H200 wants 4.8 TB/s × ~1 µs ÷ 132 SMs ≈ 36 KB). Predictions: only "
        "a GPU measures bandwidth.", "", "## Targets", ""]
    lines += ([f"**{len(failures)} missed:**", ""] + [f"- {line}" for line in failures] if failures else
              [f"All met: every row compiled without spills, every act_sign row ≥ {ACT_SIGN_MIN_OCCUPANCY:.0%} "
               f"occupancy on {arch}, every weight_sign row below {MAX_REGISTERS} registers."])
    groups = defaultdict(list)
    for row in rows:
        tile = ", ".join(f"{k}={v}" for k, v in row["constexprs"].items() if k.startswith(("BLOCK", "CHANNELS")))
        groups[(row["kernel"], tile, row["num_warps"], int(row["arch"][3:]))].append(row)
    lines += ["", "## Per tile and target", "", *table(
        ["kernel", "tile", "num_warps", "arch", "specializations", "compiled", "registers", "spill bytes",
         "shared bytes", "occupancy", "reads in flight per SM", "example layer, grid"],
        [[kernel, tile, warps, f"sm_{target}", len(group), len(done := [row for row in group if row["compiled"]])]
         + [_span([row[key] for row in done]) for key in ("registers", "spill_bytes", "shared_bytes")]
         + [_span([row["occupancy"] for row in done], "{:.0%}"),
            _span([row["read_bytes_in_flight_per_sm"] / 1024 for row in done], "{:.0f} KB"),
            f"{'×'.join(map(str, ex['shape']))} {ex['layout']} {ex['dtype']}, grid {ex['grid']}"
            f"{' ' + str(ex['runtime']) if 'runtime' in ex else ''}"]
         for (kernel, tile, warps, target), group in sorted(groups.items()) for ex in [group[0]["example"]]]
    ).splitlines()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=int, default=[80, 90, 100], choices=sorted(ARCHS),
                        help="compute capabilities to compile for (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for JSON + markdown")
    args = parser.parse_args(argv)
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if problem := "TRITON_INTERPRET=1 (unset it)" if interpreted else nvidia_backend_available():
        parser.error(f"cannot compile for NVIDIA targets: {problem}")

    from sdbnn.io import atomic_write

    activations, weights = layer_uses()
    rows = compile_rows(recorded_launches(activations, weights), args.arch, lambda message: print(message, flush=True))
    command = " ".join(["python -m benchmarks.kernel_resources", *(argv if argv is not None else sys.argv[1:])])
    result = result_of(rows, args.arch, sum(map(len, activations.values())), command)
    stem = args.out / f"kernel-resources-triton{result['triton']}-{result['date']}"
    # one row a line: the file stays readable and diffable at ~1,500 rows
    head = json.dumps({key: value for key, value in result.items() if key != "rows"}, indent=1)[:-2]
    rows_text = ",\n".join("  " + json.dumps(row, separators=(",", ":")) for row in rows)
    atomic_write(Path(f"{stem}.json"), lambda tmp: tmp.write_text(f'{head},\n "rows": [\n{rows_text}\n ]\n}}\n'))
    atomic_write(Path(f"{stem}.md"), lambda tmp: tmp.write_text(markdown(result)))
    failures = result["target_misses"]
    print(f"wrote {stem}.json and .md: {len(rows)} rows, {len(failures) or 'no'} target misses", *failures[:20],
          sep="\n  ")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""What the Triton kernels compile to on each GPU target, without a GPU: registers, spills, shared memory, occupancy.

    python -m benchmarks.kernel_resources                      # sm_80, sm_90, sm_100
    python -m benchmarks.kernel_resources --arch 75 80 86 89 90 100 120 --out /tmp/results

Every kernel specialization the four paper models launch (each binary layer at its recipe's batch and image size,
every storage dtype, layout, surrogate, with and without shift / alpha), configured by the launchers themselves on meta
tensors, compiled by Triton for an explicit `GPUTarget`, read by the triton wheel's `cuobjdump` (`resources`, also
used by `benchmarks.cuda_graph`). Writes ``kernel-resources-triton<version>-<date>.{json,md}``; exits 1 unless every
row compiles without spilling, every act_sign row keeps ≥ 50% of an sm_90 SM's warps resident and no weight_sign row
needs 255 registers (the most a thread can have: the compiler would spill next).
See docs/benchmarks.md §Kernel resources, without a GPU.
"""

from __future__ import annotations

import argparse
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
# blocks, shared memory (the largest carve-out) and what the driver reserves of it per block. All of them: 65,536
# 32-bit registers per SM in 4 sub-partitions (a warp's registers live in one), allocated per warp in units of 256,
# at most 255 per thread; shared memory allocated in units of 128 bytes.
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


# --- which launches the models make --------------------------------------------------------------------------


def recipe(model: str) -> dict:
    return yaml.safe_load((ROOT / "launch/configs" / RECIPES[model.removesuffix("_fp")][0]).read_text())


def recipe_batch(model: str) -> tuple[int, int]:
    """(per-device batch, image size) of ``model``'s training recipe."""
    _, accelerate, size = RECIPES[model]
    batch = recipe(model)["batch_size"]
    if accelerate:  # the recipe's batch is global, split over the accelerate config's processes
        batch //= yaml.safe_load((ROOT / "launch/configs" / accelerate).read_text())["num_processes"]
    return batch, size


def layer_uses(models=MODELS) -> tuple[dict, dict, int]:
    """({activation shape: layers}, {binary weight shape: layers}, number of layers) of every SDConv2d of the models,
    from a meta-device forward at their recipes' batch and image size."""
    import sdbnn

    activations, weights, layers = defaultdict(list), defaultdict(list), 0
    for model_name in models:
        with torch.device("meta"):
            model = sdbnn.create_model(model_name, **(recipe(model_name).get("model_options") or {}))
        for name, module in model.named_modules():
            if isinstance(module, sdbnn.SDConv2d):
                def record(module, inputs, name=f"{model_name}.{name}"):
                    nonlocal layers
                    layers += 1
                    activations[tuple(inputs[0].shape)].append(name)
                    if module.binary_weights:
                        weights[tuple(module.weight.shape)].append(name)
                module.register_forward_pre_hook(record)
        batch, size = recipe_batch(model_name)
        with torch.no_grad():
            model(torch.empty(batch, 3, size, size, device="meta"))
    return activations, weights, layers


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


def occupancy(arch: int, registers: int, num_warps: int, shared_bytes: int) -> tuple[float, int, str]:
    """(resident warps ÷ the SM's maximum, resident blocks, the limiting resource) for one block of ``num_warps``
    warps using ``registers`` per thread and ``shared_bytes`` of shared memory."""
    sm = ARCHS[arch]
    per_warp = math.ceil(max(registers, 1) * 32 / REGISTER_UNIT) * REGISTER_UNIT
    warps_by_registers = (REGISTERS_PER_SM // SUB_PARTITIONS // per_warp) * SUB_PARTITIONS
    shared = math.ceil((shared_bytes + sm["reserved_shared"]) / SHARED_UNIT) * SHARED_UNIT
    limits = {"warps": sm["max_warps"] // num_warps, "registers": warps_by_registers // num_warps,
              "blocks": sm["max_blocks"], "shared": sm["shared_bytes"] // shared if shared else sm["max_blocks"]}
    limit = min(limits, key=limits.get)
    return limits[limit] * num_warps / sm["max_warps"], limits[limit], limit


def resources(cubin: bytes, arch: int, num_warps: int, dynamic_shared: int) -> dict:
    """Registers, spill bytes (stack + local), shared memory and theoretical occupancy of the one kernel in
    ``cubin``, from `cuobjdump -res-usage` (Triton's metadata has no register count without a GPU)."""
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


def ptxas_agrees(ptx: str, arch: int, usage: dict) -> bool:
    """Whether `ptxas -v` on Triton's PTX reports the registers and stack that cuobjdump read from its cubin."""
    target = re.search(r"^\.target (\S+)", ptx, re.MULTILINE).group(1)  # sm_90a where Triton asks for it
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as file:
        file.write(ptx)
        file.flush()
        log = subprocess.run([str(tool("ptxas-blackwell" if arch >= 100 else "ptxas")), "-v", f"--gpu-name={target}",
                              file.name, "-o", os.devnull], capture_output=True, text=True, check=True).stderr
    return (int(re.search(r"Used (\d+) registers", log).group(1)) == usage["registers"]
            and int(re.search(r"(\d+) bytes stack frame", log).group(1)) == usage["stack_bytes"])


CROSS_CHECK_EVERY = 25  # specializations: cuobjdump's registers and stack against ptxas -v's


def compile_rows(launches, archs: list[int], log=print, cross_check_every: int = CROSS_CHECK_EVERY
                 ) -> tuple[list[dict], list[bool]]:
    """(one row per distinct specialization among ``launches`` ((launch, use) pairs) and target, whether `ptxas -v`
    agreed with cuobjdump on every ``cross_check_every``-th specialization)."""
    import triton.compiler
    from triton.backends.compiler import GPUTarget

    from sdbnn.kernels.launches import json_value

    unique: dict[str, dict] = {}
    for recorded, use in launches:
        signature, constexprs, attrs = specialization(recorded)
        key = json.dumps([recorded.config.name, signature, {k: str(v) for k, v in constexprs.items()},
                          {str(k): v for k, v in attrs.items()}, recorded.config.num_warps], sort_keys=True)
        entry = unique.setdefault(key, {"recorded": recorded, "use": use, "used_by": set()})
        entry["used_by"].update(use["used_by"])
    log(f"{len(unique)} distinct kernel specializations; compiling for sm_{', sm_'.join(map(str, archs))}")
    rows, cross_check = [], []
    for number, entry in enumerate(unique.values(), 1):
        recorded, use, config = entry["recorded"], entry["use"], entry["recorded"].config
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
        source = triton.compiler.ASTSource(fn=config.kernel, signature=signature, constexprs=constexprs, attrs=attrs)
        for arch in archs:
            row = {**base, "arch": f"sm_{arch}"}
            try:
                compiled = triton.compiler.compile(source, target=GPUTarget("cuda", arch, 32),
                                                   options={"num_warps": config.num_warps})
                usage = resources(compiled.asm["cubin"], arch, config.num_warps, compiled.metadata.shared)
            except Exception as error:  # noqa: BLE001 - a failed compile is a result row
                rows.append({**row, "compiled": False, "error": f"{type(error).__name__}: {error}"[:2000]})
                continue
            if (number - 1) % cross_check_every == 0:
                cross_check.append(ptxas_agrees(compiled.asm["ptx"], arch, usage))
            # a Little's-law estimate of the reads that keep HBM busy: resident blocks × tile × bytes per element
            rows.append({**row, "compiled": True, **usage,
                         "read_bytes_in_flight_per_sm": usage["resident_blocks"] * tile_elements * use["read_bytes"]})
        if number % 50 == 0:
            log(f"  {number}/{len(unique)} specializations")
    return rows, cross_check


# --- the result ----------------------------------------------------------------------------------------------


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
        "arch_limits": {f"sm_{arch}": limits for arch, limits in ARCHS.items()},
        "ptxas_cross_check": {"checked": len(cross_check), "agreed": sum(cross_check)},
        "target_misses": failures,
        "rows": rows,
    }


def json_text(result: dict) -> str:
    """The result as JSON with one row per line (the file stays readable and diffable at ~1,500 rows)."""
    head = json.dumps({key: value for key, value in result.items() if key != "rows"}, indent=1)
    rows = ",\n".join("  " + json.dumps(row, separators=(",", ":")) for row in result["rows"])
    return f'{head[:-2]},\n "rows": [\n{rows}\n ]\n}}\n'


def _span(values: list[float], fmt: str = "{}") -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    return fmt.format(low) if low == high else f"{fmt.format(low)}–{fmt.format(high)}"


def markdown(result: dict) -> str:
    """Targets, then each kernel per target, then each launch configuration the launchers choose (on sm_90)."""
    rows, failures, arch = result["rows"], result["target_misses"], f"sm_{OCCUPANCY_ARCH}"
    lines = [
        f"# Kernel resources: triton {result['triton']}, {', '.join(result['archs'])}", "",
        f"Compiled without a GPU on {result['date']} by `{result['command']}` at commit {result['commit']}"
        f"{' (with uncommitted changes)' if result['uncommitted_changes'] else ''}; torch {result['torch']}, "
        f"triton {result['triton']}. {result['layers']} binary layers at their recipes' per-device batch and image "
        f"size ({'; '.join(f'{m}: {b}×{s}²' for m, (b, s) in result['inputs'].items())}): "
        f"{result['specializations']} distinct specializations, {len(rows)} rows "
        f"({sum(row['compiled'] for row in rows)} compiled).", "",
        "Registers, stack and local memory from `cuobjdump -res-usage` on Triton's cubin (`ptxas -v` on its PTX agreed "
        f"on {result['ptxas_cross_check']['agreed']} of {result['ptxas_cross_check']['checked']} specializations "
        "cross-checked); spill bytes = stack + local. Occupancy: `occupancy` in benchmarks/kernel_resources.py. "
        "Reads in flight per SM = resident blocks × tile elements × bytes read per element, a Little's-law estimate "
        "of what keeps HBM busy (an H200 wants 4.8 TB/s × ~1 µs ÷ 132 SMs ≈ 36 KB per SM). Predictions; only a GPU "
        "measures the bandwidth they reach.", "",
        "## Targets", ""]
    if failures:
        lines += [f"**{len(failures)} missed:**", ""] + [f"- {line}" for line in failures]
    else:
        lines.append(f"All met: every row compiled, 0 spill bytes on every target, every act_sign specialization ≥ "
                     f"{ACT_SIGN_MIN_OCCUPANCY:.0%} theoretical occupancy on {arch}, every weight_sign "
                     f"specialization below {MAX_REGISTERS} registers.")
    per_kernel, tiles = defaultdict(list), defaultdict(list)
    for row in rows:
        per_kernel[(row["kernel"], row["arch"])].append(row)
        if row["arch"] == arch and row["compiled"]:
            tile = ", ".join(f"{k}={v}" for k, v in row["constexprs"].items() if k.startswith(("BLOCK", "CHANNELS")))
            tiles[(row["kernel"], tile, row["num_warps"])].append(row)
    lines += ["", "## Per kernel and target", "", *table(
        ["kernel", "arch", "specializations", "compiled", "num_warps", "registers", "spill bytes", "shared bytes",
         "occupancy", "reads in flight per SM"],
        [[kernel, target, len(group), len(done := [row for row in group if row["compiled"]])]
         + [_span([row[key] for row in done]) for key in ("num_warps", "registers", "spill_bytes", "shared_bytes")]
         + [_span([row["occupancy"] for row in done], "{:.0%}"),
            _span([row["read_bytes_in_flight_per_sm"] / 1024 for row in done], "{:.0f} KB")]
         for (kernel, target), group in sorted(per_kernel.items(), key=lambda kv: (kv[0][0], int(kv[0][1][3:])))]
    ).splitlines()]
    lines += ["", "## Launch configurations the launchers choose", "",
              f"Per kernel, each distinct tile and num_warps: one layer shape that gets it (its dtype, grid), and the "
              f"{arch} registers and occupancy over every specialization with that tile (dtypes, surrogates, with "
              "and without shift/alpha).", "", *table(
                  ["kernel", "tile", "num_warps", "example", "grid", "specializations", f"{arch} registers",
                   f"{arch} occupancy"],
                  [[kernel, tile, warps, f"{'×'.join(map(str, ex['shape']))} {ex['layout']} {ex['dtype']}",
                    f"{ex['grid']} {ex.get('runtime', '')}".strip(), len(group),
                    _span([row["registers"] for row in group]), _span([row["occupancy"] for row in group], "{:.0%}")]
                   for (kernel, tile, warps), group in tiles.items() for ex in [group[0]["example"]]]
              ).splitlines()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.kernel_resources", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", type=int, default=[80, 90, 100], choices=sorted(ARCHS),
                        help="compute capabilities to compile for (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for JSON + markdown")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        parser.error("unset TRITON_INTERPRET: the kernels must be compiled, not interpreted")
    if problem := nvidia_backend_available():
        parser.error(f"cannot compile for NVIDIA targets: {problem}")

    from sdbnn.io import atomic_write

    activations, weights, layers = layer_uses()
    print(f"{layers} binary layers in {len(MODELS)} models", flush=True)
    rows, cross_check = compile_rows(recorded_launches(activations, weights), args.arch,
                                     lambda message: print(message, flush=True))
    command = " ".join(["python -m benchmarks.kernel_resources", *(argv if argv is not None else sys.argv[1:])])
    result = result_of(rows, args.arch, layers, cross_check, command)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernel-resources-triton{result['triton']}-{result['date']}"
    atomic_write(Path(f"{stem}.json"), lambda tmp: tmp.write_text(json_text(result)))
    atomic_write(Path(f"{stem}.md"), lambda tmp: tmp.write_text(markdown(result)))
    failures = result["target_misses"]
    print(f"wrote {stem}.json and .md: {len(rows)} rows, "
          + (f"{len(failures)} target misses" if failures else "every target met"))
    for line in failures[:20]:
        print("  " + line)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

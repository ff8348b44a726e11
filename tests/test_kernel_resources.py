"""The kernels compile for an H100/H200 (sm_90) without spilling and the act_sign kernels keep half the SM's warps
resident, at the configurations the launchers choose for a small and a large layer (no GPU needed: Triton compiles
for an explicit target). The full sweep over every model layer, dtype and target is `python -m
benchmarks.kernel_resources`; this is its fast subset, plus the occupancy arithmetic it relies on."""

import json
import subprocess
import sys

import pytest

from benchmarks import kernel_resources
from helpers import ROOT, cpu_env

# A small and a large layer in the dtypes a GPU trains with (bf16 activations; fp32 weights signed into bf16), with
# shift/alpha and EDE: ResNet-18 ImageNet's last stage (7×7 planes, which start unaligned) and first, at batch 256;
# ResNet-20's 16-channel weights (4 rows to a program) and ResNet-18's 512-channel ones (rows walked in blocks).
REPRESENTATIVE = {"activations": [(256, 512, 7, 7), (256, 64, 56, 56)], "weights": [(16, 16, 3, 3), (512, 512, 3, 3)]}
# Compiling needs the kernels as JIT functions, so it runs in a process without TRITON_INTERPRET. It also checks
# the cuobjdump reading against `ptxas -v` on the same PTX, for every launch.
SUBSET_SCRIPT = """
import json, os, re, subprocess, sys, tempfile
from benchmarks import kernel_resources
problem = kernel_resources.nvidia_backend_available()
if problem:
    print(json.dumps({"skip": problem}))
    sys.exit()
shapes = json.loads(sys.argv[1])
launches = list(kernel_resources.recorded_launches(
    {tuple(shape): ["representative"] for shape in shapes["activations"]},
    {tuple(shape): ["representative"] for shape in shapes["weights"]},
    act_storage=("bf16",), weight_storage=(("fp32", "bf16"),), optional=(True,), surrogates=("ede",)))
rows = kernel_resources.compile_rows(launches, [90], log=lambda message: None)
report = kernel_resources.markdown(kernel_resources.result_of(rows, [90], 4, "subset"))
cross_check = []
for recorded, _ in launches:
    compiled = kernel_resources.compile_launch(recorded, 90)
    usage = kernel_resources.resources(compiled.asm["cubin"], 90, recorded.config.num_warps, compiled.metadata.shared)
    target = re.search(r"^\\.target (\\S+)", compiled.asm["ptx"], re.MULTILINE).group(1)  # sm_90a where Triton asks
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as file:
        file.write(compiled.asm["ptx"])
        file.flush()
        log = subprocess.run([str(kernel_resources.tool("ptxas")), "-v", f"--gpu-name={target}", file.name, "-o",
                              os.devnull], capture_output=True, text=True, check=True).stderr
    cross_check.append([int(re.search(r"Used (\\d+) registers", log).group(1)),
                        int(re.search(r"(\\d+) bytes stack frame", log).group(1))]
                       == [usage["registers"], usage["stack_bytes"]])
print(json.dumps({"rows": rows, "cross_check": cross_check, "markdown": report}))
"""


@pytest.fixture(scope="module")
def sm90_rows():
    done = subprocess.run([sys.executable, "-c", SUBSET_SCRIPT, json.dumps(REPRESENTATIVE)], capture_output=True,
                          text=True, timeout=300, env=cpu_env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"cannot compile for NVIDIA targets here: {result['skip']}")
    assert result["cross_check"] and all(result["cross_check"]), "ptxas -v disagrees with cuobjdump"
    assert "All met" in result["markdown"]
    # the table's rows add up: every weight_sign.backward specialization (two layers) on sm_90, each compiled
    table_rows = [line.split(" | ") for line in result["markdown"].splitlines()
                  if line.startswith("| weight_sign.backward |") and " | sm_90 | " in line]
    assert sum(int(cells[4]) for cells in table_rows) == 2 and all(cells[4] == cells[5] for cells in table_rows)
    return result["rows"]


def test_kernels_compile_for_sm90_without_spills_at_the_launchers_configurations(sm90_rows):
    kernels = {row["kernel"] for row in sm90_rows}
    assert kernels == {"act_sign.forward", "act_sign.backward_planes", "act_sign.backward_channels_last",
                       "weight_sign.forward", "weight_sign.backward"}
    # every configuration the launchers choose for the two layers was compiled (identical ones compile once)
    import torch

    from sdbnn.kernels import act_sign, tiles, weight_sign

    compiled = [(row["kernel"], row["constexprs"], row["num_warps"]) for row in sm90_rows]
    with tiles.use(tiles.GPU):
        configs = [config for shape in REPRESENTATIVE["activations"] for layout in (False, True)
                   for config in (act_sign.forward_config(shape, torch.bfloat16, layout, True),
                                  act_sign.backward_config(shape, torch.bfloat16, layout, True, "ede"))]
        configs += [config for shape in REPRESENTATIVE["weights"]
                    for config in (weight_sign.forward_config(shape, torch.float32, True, torch.bfloat16),
                                   weight_sign.backward_config(shape, torch.float32, True, "ede"))]
    for config in configs:
        chosen = config.describe()
        assert any(name == chosen["kernel"] and constexprs.items() >= chosen["constexprs"].items()
                   and warps == chosen["num_warps"] for name, constexprs, warps in compiled), chosen
    assert all(row["arch"] == "sm_90" for row in sm90_rows)
    assert kernel_resources.targets(sm90_rows) == []  # compiled, 0 spill bytes, act_sign ≥ 50% occupancy


def test_targets_report_each_kind_of_miss():
    good = {"kernel": "act_sign.forward", "arch": "sm_90", "constexprs": {}, "num_warps": 8, "compiled": True,
            "registers": 32, "spill_bytes": 0, "occupancy": 1.0}
    assert kernel_resources.targets([good]) == []
    misses = kernel_resources.targets([
        {**good, "compiled": False, "error": "CompilationError: boom"},
        {**good, "spill_bytes": 8},
        {**good, "occupancy": 0.375},
        {**good, "arch": "sm_80", "occupancy": 0.375},  # the occupancy target is sm_90's
        {**good, "kernel": "weight_sign.backward", "registers": 255, "occupancy": 0.125},
    ])
    assert len(misses) == 4
    assert "did not compile" in misses[0] and "8 bytes of spills" in misses[1] and "occupancy 38%" in misses[2]
    assert "255 registers" in misses[3]


@pytest.mark.parametrize("arch,registers,warps,shared,expected", [
    (90, 32, 8, 0, (1.0, 8, "warps")),  # 64 warps fit
    (90, 40, 8, 0, (0.75, 6, "registers")),  # 40·32 = 1280 per warp: 12 per sub-partition, 48 warps, 6 blocks
    (90, 255, 4, 0, (0.125, 2, "registers")),  # 256·32 = 8192 per warp: 2 per sub-partition
    (90, 16, 1, 0, (0.5, 32, "blocks")),  # 32 one-warp blocks
    (80, 48, 8, 100 * 1024, (0.125, 1, "shared")),  # 101 KB per block: one block in 164 KB
    (86, 32, 8, 0, (1.0, 6, "warps")),  # 48 warps on GA10x
])
def test_occupancy_arithmetic(arch, registers, warps, shared, expected):
    fraction, blocks, limit = kernel_resources.occupancy(arch, registers, warps, shared)
    assert (round(fraction, 4), blocks, limit) == expected


def test_specialization_follows_tritons_rules():
    # what a GPU launch specializes on: typed 16-byte-aligned pointers, i32/i64 ints, 1 as a constant, ÷16 marked
    import torch

    from sdbnn.kernels import act_sign, launches

    x = torch.empty(2, 3, 4, 4, device="meta")
    with launches.recording() as recorded:
        act_sign.forward(x, torch.empty(2, 3, device="meta", dtype=torch.bfloat16))
    signature, constexprs, attrs = kernel_resources.specialization(recorded[0])
    assert signature["x_ptr"] == "*fp32" and signature["shift_ptr"] == "*bf16"
    assert signature["n_elements"] == "i32" and signature["C"] == "i32" and signature["HW"] == "i32"
    names = recorded[0].config.kernel.arg_names
    assert attrs[(names.index("HW"),)] == [["tt.divisibility", 16]] and (names.index("C"),) not in attrs
    assert constexprs["BLOCK"] == recorded[0].config.constexprs["BLOCK"]
    assert [kind for kind in signature.values()].count("constexpr") == len(recorded[0].config.constexprs)

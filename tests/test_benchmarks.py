"""The kernel benchmark runs end to end (CPU smoke) and writes its JSON and markdown."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_kernel_benchmark_quick(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kernels.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    (json_file,) = tmp_path.glob("kernels-*.json")
    report = json.loads(json_file.read_text())
    assert report["copy_bandwidth_gbps"] > 0
    providers = {(row["op"], row["case"], row["provider"]) for row in report["rows"]}
    for op in ("act_sign", "weight_sign"):
        for case in ("tiny.nchw", "tiny.nhwc"):
            assert {(op, case, p) for p in ("fused", "eager", "compiled")} <= providers
    fused = [row for row in report["rows"] if row["provider"] == "fused"]
    assert all(row["forward_backward_ms"] > 0 and set(row["speedup_vs"]) == {"eager", "compiled"} for row in fused)
    assert "| act_sign |" in json_file.with_suffix(".md").read_text()


def test_one_command_runs_every_benchmark_quick(tmp_path):
    # Without the interpreter the fused ops take their CPU path (the reference math): a smoke run of every section.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=900, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    (json_file,) = tmp_path.glob("cpu-*.json")
    report = json.loads(json_file.read_text())
    assert {"device", "date", "torch", "kernels", "training", "loaders"} <= set(report)
    rows = {row["variant"]: row for row in report["training"]["rows"] if row["model"] == "resnet20"}
    assert set(rows) == {"sdbnn", "reference_fp32", "full_precision"}
    assert all(row["train_images_per_s"] > 0 for row in rows.values())
    sd = rows["sdbnn"]
    assert sd["speedup_vs_reference_fp32"] == sd["train_images_per_s"] / rows["reference_fp32"]["train_images_per_s"]
    assert sd["ratio_to_full_precision"] == sd["train_images_per_s"] / rows["full_precision"]["train_images_per_s"]
    epoch_seconds = 50_000 / sd["train_images_per_s"] + 10_000 / sd["eval_images_per_s"]
    assert sd["recipe_epochs"] == 500 and abs(sd["projected_schedule_min"] - 500 * epoch_seconds / 60) < 1e-6
    loaders = report["loaders"]
    assert loaders["cifar_device_over_torchvision"] == (loaders["cifar_device_resident_images_per_s"]
                                                       / loaders["cifar_torchvision_images_per_s"])
    markdown = json_file.with_suffix(".md").read_text()
    assert all(f"## {section}" in markdown for section in ("Kernels", "Training", "Loaders"))
    assert "| resnet20 | 16 × 32 |" in markdown

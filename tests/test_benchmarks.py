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

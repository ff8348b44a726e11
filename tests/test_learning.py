"""It learns: SD-BNN ResNet-20 with the EDE schedule on real handwritten digits, through the demo command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

import sdbnn
from sdbnn.engine import evaluate
from sdbnn.pipelines import load_digits_split

ROOT = Path(__file__).resolve().parent.parent


def test_resnet20_learns_digits(tmp_path):
    # 1,400 train / 397 held out, 32×32×3; 15 epochs, SGD lr 0.11 cosine, batch 64, Tmin 1e-3 (the defaults).
    # Training on CPU runs the ops' reference path: the interpreted Triton kernels are for the kernel tests.
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "digits.py"), "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == list(range(15))
    assert records[0]["t"] == 1e-3 and records[0]["k"] == 1000.0
    best = max(r["val_accuracy"] for r in records)
    assert best >= 0.80, f"best held-out accuracy {best:.3f}; per epoch {[r['val_accuracy'] for r in records]}"
    assert records[0]["val_accuracy"] < 0.5  # it really learned, from chance

    # The saved weights reproduce the last epoch's held-out accuracy.
    model = sdbnn.create_model("resnet20")
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    data = load_digits_split()
    _, accuracy = evaluate(model, data.val_images, data.val_labels)
    assert abs(accuracy - records[-1]["val_accuracy"]) < 1e-9


def test_demo_rejects_unknown_model(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "launch" / "digits.py"), "--model", "resnet21", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "unknown model 'resnet21'" in result.stderr
    assert not (tmp_path / "model.safetensors").exists()

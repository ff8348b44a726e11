"""It learns: SD-BNN ResNet-20 with the EDE schedule on real handwritten digits, through the training launcher."""

import pytest
import torch
from helpers import LAUNCH, run_script

from sdbnn.engine.runs import Run
from sdbnn.pipelines.digits import load_digits
from sdbnn.pipelines.transforms import normalize


@pytest.mark.slow  # 15 epochs on 1,400 digits: ~5 minutes on 2 cores (test_training.py checks the plumbing quickly)
def test_resnet20_learns_digits(tmp_path):
    # 1,400 train / 397 held out, 32×32×3; 15 epochs, SGD lr 0.11 cosine, batch 64, Tmin 1e-3.
    # Training on CPU runs the ops' reference path: the interpreted Triton kernels are for the kernel tests.
    result = run_script(LAUNCH / "cifar.py", "--model", "resnet20", "--dataset", "digits", "--epochs", "15",
                        "--batch-size", "64", "--lr", "0.11", "--t-min", "1e-3", "--output-dir", str(tmp_path),
                        timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    records = Run(tmp_path).records()
    assert [r["epoch"] for r in records] == list(range(15))
    assert records[0]["t"] == 1e-3 and records[0]["k"] == 1000.0
    best = max(r["val_top1"] for r in records)
    assert best >= 0.80, f"best held-out accuracy {best:.3f}; per epoch {[r['val_top1'] for r in records]}"
    assert records[0]["val_top1"] < 0.5  # it really learned, from chance

    # The saved weights reproduce the last epoch's held-out accuracy.
    model = Run(tmp_path).model()
    _, held_out = load_digits()
    with torch.no_grad():
        predictions = model.eval()(normalize(held_out.images)).argmax(1)
    accuracy = (predictions == held_out.labels).float().mean().item()
    assert abs(accuracy - records[-1]["val_top1"]) < 1e-6

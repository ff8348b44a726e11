"""--precision: the config's choice, the emulated bf16 convolutions on CPUs without bf16 kernels, and a bf16 run."""

import json

import pytest
import torch
import torch.nn.functional as F

import sdbnn
from sdbnn.engine.config import TrainConfig
from sdbnn.engine.precision import emulated_bf16_convolutions, native_bf16_convolutions
from sdbnn.engine.runs import Run

from helpers import LAUNCH, run_script


def test_auto_precision_is_bf16_on_cuda_and_fp32_on_cpu():
    assert TrainConfig().resolved_precision(cuda=True) == "bf16"
    assert TrainConfig().resolved_precision(cuda=False) == "fp32"
    assert TrainConfig(precision="bf16").resolved_precision(cuda=False) == "bf16"
    assert TrainConfig(precision="fp32").resolved_precision(cuda=True) == "fp32"
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        TrainConfig(precision="fp16")


def test_native_bf16_convolutions_is_a_question_about_the_device():
    assert native_bf16_convolutions(torch.device("cuda")) is True
    assert native_bf16_convolutions(torch.device("cpu")) == torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _forward_backward(model, images, labels, emulate):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        if emulate:
            with emulated_bf16_convolutions():
                logits = model(images)
        else:
            logits = model(images)
    F.cross_entropy(logits.float(), labels).backward()
    return logits, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_emulated_convolutions_compute_what_cpu_autocast_computes():
    # CPU autocast's own bf16 convolutions (slow without bf16 hardware, fine at this size) against the emulation:
    # the same bf16 operands and bf16 results; only the order of the fp32 sums may differ.
    torch.manual_seed(0)
    model = sdbnn.create_model("resnet20")
    sdbnn.set_ede(model, 1.0, 2.0)
    images, labels = torch.randn(4, 3, 16, 16), torch.randint(0, 10, (4,))
    with sdbnn.backend("reference"):
        native_logits, native_grads = _forward_backward(model, images, labels, emulate=False)
        emulated_logits, emulated_grads = _forward_backward(model, images, labels, emulate=True)
        fp32_logits = model(images)
    assert native_logits.dtype == emulated_logits.dtype == torch.bfloat16
    relative = lambda a, b: ((a.float() - b.float()).norm() / b.float().norm()).item()  # noqa: E731
    assert relative(emulated_logits, native_logits) <= 1e-2
    assert relative(emulated_grads, native_grads) <= 0.1
    # and bf16 is visibly not fp32 (the emulation really rounds)
    assert relative(emulated_logits, fp32_logits) > 10 * relative(emulated_logits, native_logits)


def test_emulation_rounds_operands_and_result_of_a_convolution():
    torch.manual_seed(0)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16), emulated_bf16_convolutions():
        out = F.conv2d(x, w, padding=1)
        outside = torch.relu(x)  # other ops are untouched
    expected = F.conv2d(x.bfloat16().float(), w.bfloat16().float(), padding=1).bfloat16()
    assert out.dtype == torch.bfloat16 and torch.equal(out, expected)
    assert torch.equal(outside, torch.relu(x))
    # without autocast the mode changes nothing
    with emulated_bf16_convolutions():
        assert torch.equal(F.conv2d(x, w), F.conv2d(x, w))


def test_a_bf16_run_trains_and_says_how(tmp_path):
    out = tmp_path / "run"
    result = run_script(LAUNCH / "cifar.py", "--dataset", "digits", "--epochs", "1", "--batch-size", "64",
                        "--max-images", "128", "--precision", "bf16", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    summary = Run(out).summary()
    assert summary["precision"].startswith("bf16")
    emulated = not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert ("emulated" in summary["precision"]) == emulated
    assert summary["environment"]["torch"] == torch.__version__
    assert 0.0 <= summary["final"]["val_top1"] <= 1.0


def test_one_process_trains_runs_of_different_precisions(tmp_path):
    # the ablation runner trains its variants in one process; Accelerate's state is process-wide
    from sdbnn.engine.trainer import Trainer

    def trainer(precision):
        config = TrainConfig(dataset="digits", epochs=1, batch_size=32, max_images=64, precision=precision,
                             output_dir=str(tmp_path / precision))
        return Trainer(config)

    assert trainer("fp32").accelerator.mixed_precision == "no"
    assert trainer("bf16").accelerator.mixed_precision == "bf16"
    assert trainer("fp32").accelerator.mixed_precision == "no"


@pytest.mark.slow  # native CPU bf16 convolutions are slow here (no bf16 instructions)
def test_precision_emulation_benchmark_reports_agreement_and_speed(tmp_path):
    from studies import precision_emulation

    assert precision_emulation.main(["--batch-size", "2", "--rounds", "1", "--steps", "1", "--out", str(tmp_path)]) == 0
    (written,) = tmp_path.glob("precision-emulation-resnet20-*.json")
    result = json.loads(written.read_text())
    assert set(result["median_images_per_s"]) == {"fp32", "bf16_native", "bf16_emulated"}
    assert result["speed_vs_fp32"]["fp32"] == 1.0
    # the emulation is CPU autocast's arithmetic up to the order of fp32 sums; bf16 is far from fp32
    assert result["emulated_vs_native"]["gradients_relative_difference"] <= 0.1
    assert result["native_bf16_vs_fp32"]["logits_relative_difference"] > 1e-3

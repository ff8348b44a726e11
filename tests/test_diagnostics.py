"""Training diagnostics on tiny models where each number can be worked out by hand, and the late-epoch stability
options: they round-trip through a recipe, the resolved config and --resume, and leave the paper recipes alone."""

import math

import pytest
import torch
import yaml
from helpers import LAUNCH, cpu_env, run_script, torch_threads
from torch import nn

import sdbnn
from sdbnn.engine import cli
from sdbnn.engine.config import load_recipe
from sdbnn.engine.diagnostics import TrainingDiagnostics, band_fraction, batchnorm_gap, flip_fraction
from sdbnn.engine.runs import Run


class ChannelVote(nn.Module):
    """BatchNorm, then each channel's spatial mean is a class logit."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(2)

    def forward(self, x):
        return self.bn(x).mean(dim=(2, 3))


def test_band_fraction_and_flip_fraction_by_hand():
    values = torch.tensor([-1.0, -0.1, 0.0, 0.05, 0.5, 2.0])
    assert band_fraction(values, 5.0).item() == pytest.approx(3 / 6)  # |5x| < 1 for -0.1, 0, 0.05
    before = torch.tensor([1, -1, 1, 1, -1, 0], dtype=torch.int8)
    after = torch.tensor([1, 1, 1, -1, -1, 0], dtype=torch.int8)
    assert flip_fraction(before, after).item() == pytest.approx(2 / 6)


def test_batchnorm_gap_by_hand():
    bn = nn.BatchNorm2d(2, eps=0.0)  # running mean 0, running var 1
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[1.0, 3.0]], [[0.0, 0.0]]]])  # channel 0: mean 2, var 1
    x[:, 1] = torch.tensor([[-1.0, 1.0]]) * 2  # channel 1: mean 0, var 4
    mean_gap, var_ratio = batchnorm_gap(x, bn)
    assert mean_gap.item() == pytest.approx((2 + 0) / 2)
    assert var_ratio.item() == pytest.approx((abs(math.log(1.0)) + math.log(4.0)) / 2)


def test_known_weight_flips_and_gradient_norms():
    conv = sdbnn.SDConv2d(2, 4, 3, padding=1, asd="off", wsd=False)
    model = nn.Sequential(conv, nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        conv.weight.copy_(torch.arange(1, 73, dtype=torch.float32).view(4, 2, 3, 3) / 100)  # all positive
    diagnostics = TrainingDiagnostics(model)
    diagnostics.start_epoch()
    for p in model.parameters():  # a step whose gradient norm is known: every gradient entry 0.5
        p.grad = torch.full_like(p, 0.5)
    diagnostics.after_backward()
    with torch.no_grad():
        conv.weight.view(-1)[[0, 10, 50]] *= -1  # exactly 3 of 72 binary weights flip
    record = diagnostics.end_epoch(torch.randn(4, 2, 5, 5), torch.zeros(4, dtype=torch.long), t=1.0)
    assert record["weight_flip_fraction"] == pytest.approx(3 / 72)
    assert record["weight_flip_top_layers"][0][0] == "0"
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)  # alpha does not train without WSD
    assert record["grad_norm_median"] == pytest.approx(0.5 * math.sqrt(trainable))
    assert record["weight_band_fraction"] == pytest.approx(1.0)  # every |w| ≤ 0.72 < 1 at t = 1


def test_train_mode_and_eval_mode_accuracy_on_the_same_batch():
    model = ChannelVote()
    model.bn.running_mean.copy_(torch.tensor([10.0, -10.0]))  # stale statistics: eval mode always says class 1
    images = torch.zeros(4, 2, 1, 1)
    images[[0, 2], 0], images[[1, 3], 1] = 1.0, 1.0
    labels = torch.tensor([0, 1, 0, 1])
    before = {name: value.clone() for name, value in model.state_dict().items()}
    record = TrainingDiagnostics(model).end_epoch(images, labels, t=1.0)
    assert record["train_mode_top1"] == 1.0 and record["eval_mode_top1"] == 0.5
    assert record["bn_mean_gap"] == pytest.approx((9.5 + 10.5) / 2, rel=1e-4)  # |0.5 − (±10)| / 1
    assert all(torch.equal(before[name], value) for name, value in model.state_dict().items())  # nothing moved


def test_paper_recipes_resolve_to_exactly_their_yaml():
    for model in ("resnet20", "vgg_small", "resnet18_cifar"):
        recipe = load_recipe(cli.recipe_path(f"cifar10_{model}"))
        config, _ = cli.cifar_config(["--model", model])
        assert {key: getattr(config, key) for key in recipe} == recipe
        assert (config.t_cap, config.grad_clip_norm, config.bn_recalibration) == (None, None, False)
    configs, _ = cli.imagenet_configs(["--data-dir", "/data", "--teacher-weights", "t.pth"])
    for stage, config in zip((1, 2), configs):
        recipe = load_recipe(cli.recipe_path(f"imagenet_stage{stage}"))
        assert {key: getattr(config, key) for key in recipe} == recipe
        assert (config.t_cap, config.grad_clip_norm, config.bn_recalibration) == (None, None, False)


def test_stability_options_round_trip_through_recipe_config_and_resume(tmp_path, capsys):
    recipe = tmp_path / "stable.yaml"
    options = {"t_cap": 0.5, "grad_clip_norm": 2.0, "bn_recalibration": True}
    recipe.write_text(yaml.safe_dump({**load_recipe(cli.recipe_path("cifar10_resnet20")), **options}))
    # 128 digits, 2 steps an epoch: the options' round trip and an exact resume need steps, not learning
    common = ["--recipe", str(recipe), "--dataset", "digits", "--batch-size", "64", "--max-images", "128",
              "--epochs", "3", "--t-min", "0.1"]  # t reaches the cap (0.1 → 0.46 → 2.2) in the last epoch
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # An exact comparison: one thread on each side (the thread count changes float sums). The first two runs call
    # the launcher's main in this process (launch/cifar.py is `sys.exit(cifar_main())`); the resume starts a fresh
    # process, as a user's does, so nothing this process still holds can stand in for the checkpoint.
    with torch_threads(1):
        assert cli.cifar_main([*common, "--output-dir", str(straight)]) == 0, capsys.readouterr().err[-2000:]
        assert cli.cifar_main([*common, "--output-dir", str(stopped), "--stop-after-epoch", "2"]) == 0
    resumed = run_script(LAUNCH / "cifar.py", *common, "--output-dir", str(stopped), "--resume",
                         env=cpu_env(OMP_NUM_THREADS="1"))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    saved = Run(straight).config_values()
    assert {key: saved[key] for key in options} == options
    assert Run(straight).config() == cli.cifar_config([*common, "--output-dir", str(straight)])[0]
    records = Run(straight).records()
    assert [r["t"] for r in records][-1] == 0.5 and records[-1]["k"] == 2.0  # capped
    a, b = Run(straight).weights(), Run(stopped).weights()
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    resumed_records = Run(stopped).records()
    assert [r["val_top1"] for r in records] == [r["val_top1"] for r in resumed_records]


def test_the_stable_recipe_is_the_paper_recipe_plus_the_cap_and_the_demo_uses_it():
    paper = load_recipe(cli.recipe_path("cifar10_resnet20"))
    stable = load_recipe(cli.recipe_path("cifar10_resnet20_stable"))
    assert stable == {**paper, "t_cap": 1.0}
    config, _ = cli.cifar_config(["--recipe", str(cli.recipe_path("cifar10_resnet20_stable"))])
    assert config.t_cap == 1.0 and config.model == "resnet20"
    assert "--t-cap 1 " in (LAUNCH / "demo.sh").read_text()

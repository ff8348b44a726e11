"""sdbnn.summary (sdbnn.deploy.cost): hand-counted toy, agreement with torch's FlopCounterMode and torchvision's published GFLOPs,
Bi-Real Net 18's structure, the four paper models, the ASD gates' share, and the command line."""

import json
import subprocess
import sys

import pytest
import torch
import torchvision
from helpers import ROOT, cpu_env
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import sdbnn
from sdbnn.deploy.cost import model_cost, run_cost
from sdbnn.engine.config import TrainConfig

PAPER_MODELS = ["resnet20", "vgg_small", "resnet18_cifar", "resnet18_imagenet"]


class Toy(nn.Module):
    """One SD conv (4 → 6 channels, 3×3, padding 1, SE gate with 2 hidden units) and a linear head."""

    def __init__(self, binary_weights: bool = True):
        super().__init__()
        self.conv = sdbnn.SDConv2d(4, 6, 3, padding=1, se_reduction=2, binary_weights=binary_weights)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_toy_counts_match_hand_counts():
    # Input 4×8×8, so the conv output is 6×8×8 = 384 elements.
    #   binary conv: 384 outputs × (4 × 3 × 3 = 36) inputs each          = 13,824 BOPs
    #   ASD gate:    global-pool adds 4·8·8 = 256, FC 4→2 = 8 MACs, FC 2→4 = 8 MACs, ReLU 2, sigmoid 4 = 278 FLOPs
    #   linear head: 6 × 10 = 60 MACs                                      = 60 FLOPs   → FLOPs 338
    #   element-wise: shift addition 256 + sign 256 (conv input), mean over the conv output 384, fc bias 10 = 906
    #   parameters:  binary 6·4·3·3 = 216; real: gate 4·2 + 2·4 = 16, fc 60 + 10 = 70 → 86; WSD alpha 6
    #   OPs = 13,824 / 64 + 338 = 216 + 338 = 554; size = 216 bits / 8 + 86 × 4 bytes = 27 + 344 = 371 bytes
    result = sdbnn.summary(Toy(), (4, 8, 8))
    totals = result.totals()
    counts = (totals["bops"], totals["flops"], totals["asd_gate_flops"], totals["elementwise_ops"])
    assert counts == (13_824, 338, 278, 906)
    assert (totals["binary_params"], totals["real_params"], totals["training_only_params"]) == (216, 86, 6)
    assert totals["ops"] == 554 and totals["size_bytes"] == 371
    rows = {row.name: row for row in result.rows}
    assert rows["conv"].bops == 13_824 and rows["conv"].output_shape == (6, 8, 8)
    assert rows["conv.gate"].flops == 278 and rows["fc"].flops == 60 and rows[""].elementwise_ops == 384
    assert result.uncounted_ops == {}

    # W32/A1 (ImageNet stage 1): the same MACs are real, and the weights count as real parameters
    real = sdbnn.summary(Toy(binary_weights=False), (1, 4, 8, 8)).totals()  # a batch dimension is per image too
    assert (real["bops"], real["flops"], real["binary_params"], real["real_params"]) == (0, 13_824 + 338, 0, 216 + 86)


@pytest.mark.parametrize("name, published_macs", [("resnet34", 3.66e9), ("torchvision_resnet18", 1.81e9)])
def test_flops_agree_with_flop_counter_and_torchvision(name, published_macs):
    model = torchvision.models.resnet18() if name == "torchvision_resnet18" else sdbnn.create_model(name)
    result = sdbnn.summary(model, 224)
    meta_model = model.to("meta").eval()
    with FlopCounterMode(display=False) as counter:
        meta_model(torch.empty(1, 3, 224, 224, device="meta"))
    independent_macs = counter.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-accumulate
    assert result.bops == 0 and result.uncounted_ops == {}
    assert abs(result.flops - independent_macs) / independent_macs < 0.02
    assert result.flops == independent_macs  # in fact identical: both count conv + linear MACs
    assert abs(result.flops - published_macs) / published_macs < 0.003


def test_resnet18_imagenet_without_asd_has_bi_real_net_18_structure():
    off = sdbnn.summary(sdbnn.create_model("resnet18_imagenet", asd="off"), 224, twin="resnet18_imagenet_fp")
    # Bi-Real Net 18 (Liu et al. 2018; ReActNet's table): 1.68e9 BOPs, 1.39e8 FLOPs, 1.63e8 OPs
    assert abs(off.bops - 1.68e9) / 1.68e9 < 0.02
    assert abs(off.flops - 1.39e8) / 1.39e8 < 0.02
    assert abs(off.ops - 1.63e8) / 1.63e8 < 0.02
    assert off.asd_gate_flops == 0
    # every MAC of the full-precision ResNet-18 is either binary or real here
    assert off.bops + off.flops == off.twin_flops == sdbnn.summary(torchvision.models.resnet18(), 224).flops
    # what the ASD gates add on top: exactly the gate column, about 1.4% of the FLOPs
    dynamic = sdbnn.summary("resnet18_imagenet")
    assert dynamic.bops == off.bops
    assert dynamic.flops - off.flops == dynamic.asd_gate_flops == 1_968_360
    assert 0.01 < dynamic.asd_gate_flops / dynamic.flops < 0.02


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_models_totals_are_consistent(name):
    model = sdbnn.create_model(name)
    result = sdbnn.summary(name)
    assert result.input_size == ((3, 224, 224) if "imagenet" in name else (3, 32, 32))
    assert result.uncounted_ops == {}
    all_params = sum(p.numel() for p in model.parameters())
    assert result.binary_params + result.real_params + result.training_only_params == all_params
    assert result.binary_params == sum(m.weight.numel() for m in model.modules() if isinstance(m, sdbnn.SDConv2d))
    assert result.ops == result.bops / 64 + result.flops
    assert result.size_bytes == result.binary_params / 8 + result.real_params * 4
    assert result.twin == f"{name}_fp" and result.compression > 8 and result.speedup > 10
    totals = model_cost(model, result.input_size, twin=f"{name}_fp")
    assert json.loads(json.dumps(totals)) == totals and totals == result.totals() | {"model": type(model).__name__}
    text = str(result)
    assert "BOPs" in text and "OPs = BOPs/64 + FLOPs" in text and f"{result.bops:,}" in text
    assert json.loads(json.dumps(result.to_dict()))["rows"]


def test_callable_module_and_lazy_exports():
    import sdbnn.summary as module

    assert module is sdbnn.summary and callable(sdbnn.summary)  # the module is also the function
    assert sdbnn.summary(Toy(), (4, 8, 8)).bops == 13_824
    with pytest.raises(ValueError, match="input_size"):
        sdbnn.summary(Toy())
    assert module.model_cost is model_cost and module.run_cost is run_cost  # as the docs and the Trainer use them
    assert callable(sdbnn.export_packed) and callable(sdbnn.load_packed)


def test_asd_gates_share_of_the_cifar_models_flops():
    summaries = {name: sdbnn.summary(name) for name in PAPER_MODELS}
    share = {name: round(100 * s.asd_gate_flops / s.flops) for name, s in summaries.items()}
    assert share["vgg_small"] == share["resnet18_cifar"] == 8 and share["resnet20"] == 30
    resnet20 = summaries["resnet20"]
    gates = [row for row in resnet20.rows if row.name.endswith(".gate")]
    assert len(gates) == 18 and sum(row.flops for row in gates) == resnet20.asd_gate_flops


def test_cli_on_a_model_name_and_on_a_run_directory(tmp_path, capsys):
    from sdbnn.summary import main

    TrainConfig(model="resnet20", dataset="digits", model_options={"num_classes": 7}).save(tmp_path / "config.yaml")
    sdbnn.save_weights(sdbnn.create_model("resnet20", num_classes=7), tmp_path / "model.safetensors")
    result = subprocess.run([sys.executable, "-m", "sdbnn.summary", "resnet20", str(tmp_path), "--json"],
                            capture_output=True, text=True, env=cpu_env(), cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RuntimeWarning" not in result.stderr  # the package does not import the module it runs
    by_name, by_run = json.loads(result.stdout)
    assert by_name["model"] == "resnet20" and by_name["bops"] == 40_108_032 and by_name["twin"] == "resnet20_fp"
    assert by_run["bops"] == 40_108_032 and by_run["input_size"] == [3, 32, 32]
    twin_params = sum(p.numel() for p in sdbnn.create_model("resnet20_fp", num_classes=7).parameters())
    assert by_run["twin"] == "resnet20_fp" and by_run["twin_params"] == twin_params  # built for 7 classes

    config = TrainConfig(model="resnet20", dataset="digits", model_options={"num_classes": 7})
    cost = run_cost(sdbnn.create_model("resnet20", num_classes=7), config)  # what a training run records
    assert json.loads(json.dumps(cost)) == {key: by_run[key] for key in cost}
    assert main(["resnet20"]) == 0
    table = capsys.readouterr().out
    assert "layer1.0.conv1.gate" in table and "40,108,032" in table and "resnet20_fp" in table
    assert main(["resnet20", "vgg_small", "--markdown"]) == 0  # one row per model under a header
    header, rule, *rows = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("| model | input | binary params |") and set(rule) == {"|", "-"}
    assert [row.split(" | ")[:3] for row in rows] == [
        ["| `resnet20`", "32×32", f"{by_name['binary_params']:,}"],
        ["| `vgg_small`", "32×32", f"{sdbnn.summary('vgg_small').binary_params:,}"]]
    assert main([str(tmp_path / "nowhere")]) == 1
    assert "neither a run directory nor a model name" in capsys.readouterr().err

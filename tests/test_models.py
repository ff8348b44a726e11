"""The registry, the four paper architectures and their twins: counts, init, forward/backward, modes."""

import math
import re

import pytest
import torch
from helpers import ROOT

import sdbnn
from sdbnn import SDConv2d

OFFICIAL_COUNTS = {"resnet20": 274_074, "vgg_small": 4_715_018, "resnet18_cifar": 11_320_650, "resnet18_imagenet": 11_980_840}
INPUT_SIZE = {"resnet18_imagenet": 224, "resnet18_imagenet_fp": 224, "resnet34": 224}


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_model():
    expected = {name for base in OFFICIAL_COUNTS for name in (base, base + "_fp")} | {"resnet34"}
    assert set(sdbnn.list_models()) == expected


@pytest.mark.parametrize("name", OFFICIAL_COUNTS)
def test_parameter_counts_equal_official(name):
    model = sdbnn.create_model(name)
    assert count(model) == OFFICIAL_COUNTS[name] == sdbnn.official_layout(name)[0]
    twin = sdbnn.create_model(name + "_fp")
    assert not any(isinstance(m, SDConv2d) for m in twin.modules())
    assert count(twin) < count(model)


def documented_counts() -> list[tuple[str, str, int]]:
    """(where, model name, parameter count) for every count docs/method.md quotes for a named model."""
    method = (ROOT / "docs" / "method.md").read_text()
    found = [("method.md Architectures table", name, count) for name, count in
             re.findall(r"^\| [^|]+ \| `(\w+)` \| ([\d,]+) \|", method, re.MULTILINE)]
    found += [("method.md twins", name, count) for name, count in re.findall(r"`(\w+_fp)` ([\d,]+)", method)]
    return [(where, name, int(count.replace(",", ""))) for where, name, count in found]


def test_documented_parameter_counts_are_the_models():
    """docs/method.md quotes parameter counts; each must be what create_model builds (meta device: no memory, no init
    cost), and every "N parameters" figure in it must be one of those counts."""
    found = documented_counts()
    assert {name for _, name, _ in found} == set(sdbnn.list_models())  # every model, twins and teacher included
    with torch.device("meta"):
        actual = {name: count(sdbnn.create_model(name)) for name in sdbnn.list_models()}
    stale = [f"{where}: {name} {quoted:,} (create_model: {actual[name]:,})"
             for where, name, quoted in found if quoted != actual[name]]
    assert not stale, "stale parameter counts:\n" + "\n".join(stale)
    method = (ROOT / "docs" / "method.md").read_text()
    prose = {int(n.replace(",", "")) for n in re.findall(r"([\d,]{6,}) parameters", method)}
    assert prose and prose <= set(actual.values()), prose - set(actual.values())


def test_method_architectures_table_lists_sd_convs_and_gate_widths():
    """docs/method.md §Architectures: the SD conv count and the ASD gates' hidden widths (Cin → Cin//r) per model."""
    method = (ROOT / "docs" / "method.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| `(\w+)` \| [\d,]+ \| (\d+) \| ([^|]+) \|", method, re.MULTILINE)
    assert {name for name, _, _ in rows} == set(OFFICIAL_COUNTS) | {"resnet34"}
    for name, sd_convs, widths in rows:
        with torch.device("meta"):
            convs = [m for m in sdbnn.create_model(name).modules() if isinstance(m, SDConv2d)]
        assert len(convs) == int(sd_convs), name
        if not convs:
            assert widths.strip() == "—", name
            continue
        reduction, pairs = widths.split(":")
        gates = {(m.gate.reduce.in_features, m.gate.reduce.out_features) for m in convs}
        quoted = {tuple(int(c) for c in pair.split("→")) for pair in pairs.split(",")}
        assert gates == quoted, name
        assert all(c_in // int(reduction) == hidden for c_in, hidden in gates), name


@pytest.mark.parametrize("name", sorted(set(sdbnn.list_models())))
def test_forward_backward_batch2(name):
    model = sdbnn.create_model(name)
    sdbnn.set_ede(model, 1.0, 1.0)
    size = INPUT_SIZE.get(name, 32)
    x = torch.randn(2, 3, size, size)
    logits = model(x)
    assert logits.shape == (2, 1000 if size == 224 else 10)
    torch.nn.functional.cross_entropy(logits, torch.tensor([1, 3])).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


def test_train_and_eval_modes():
    model = sdbnn.create_model("resnet20")
    x = torch.randn(4, 3, 32, 32)
    bn = model.bn1
    before = bn.running_mean.clone()
    model.train()
    model(x)
    assert not torch.equal(bn.running_mean, before)  # train mode updates BN statistics
    model.eval()
    with torch.no_grad():
        stats = bn.running_mean.clone()
        full = model(x)
        single = model(x[:1])
        assert torch.equal(bn.running_mean, stats)  # eval does not
    torch.testing.assert_close(single, full[:1], rtol=1e-4, atol=1e-4)  # eval is per-sample


def test_cifar_resnet_initialisation():
    model = sdbnn.create_model("resnet18_cifar")
    conv = model.layer2[0].conv1
    assert abs(conv.weight.std().item() - math.sqrt(2 / (64 * 9))) < 0.003  # Kaiming-normal, fan-in
    gate = conv.gate.reduce.weight
    assert abs(gate.std().item() - math.sqrt(2 / 64)) < 0.04
    assert all(torch.all(m.alpha == 0) for m in model.modules() if isinstance(m, SDConv2d))
    assert torch.all(model.bn1.weight == 1) and torch.all(model.bn1.bias == 0)


def test_vgg_small_initialisation():
    model = sdbnn.create_model("vgg_small")
    assert abs(model.conv5.weight.std().item() - math.sqrt(2 / (9 * 512))) < 0.002
    assert abs(model.fc.weight.std().item() - 0.01) < 0.001 and torch.all(model.fc.bias == 0)
    assert abs(model.conv3.gate.reduce.weight.std().item() - 0.01) < 0.002  # gates start near 0.5
    with pytest.raises(ValueError, match="32×32"):
        model(torch.randn(1, 3, 48, 48))


def test_imagenet_model_recipe_and_init():
    model = sdbnn.create_model("resnet18_imagenet")
    conv = model.layer3[1].conv
    assert (conv.act_surrogate, conv.weight_surrogate, conv.gate.reduce.out_features) == ("approx", "clip", 32)
    assert conv.weight.min() >= 0 and conv.weight.max() < 1e-3
    assert torch.all(model.layer1[0].prelu.weight == 0.25)
    stage1 = sdbnn.create_model("resnet18_imagenet", binary_weights=False, wsd=False)
    assert count(stage1) == OFFICIAL_COUNTS["resnet18_imagenet"]
    assert not any(m.binary_weights or m.alpha.requires_grad for m in stage1.modules() if isinstance(m, SDConv2d))
    assert set(stage1.state_dict()) == set(model.state_dict())  # stage 2 loads stage 1 as is


def test_create_model_errors():
    with pytest.raises(ValueError, match="unknown model 'resnet21'.*resnet20"):
        sdbnn.create_model("resnet21")
    with pytest.raises(ValueError, match="does not accept option.*colour"):
        sdbnn.create_model("resnet20", colour="red")
    with pytest.raises(ValueError, match="does not accept option.*asd"):
        sdbnn.create_model("resnet20_fp", asd="off")
    assert sdbnn.create_model("resnet20", num_classes=7, asd="static").fc.out_features == 7


def test_teacher_weights_file(tmp_path):
    teacher = sdbnn.create_model("resnet34", num_classes=5)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    loaded = sdbnn.create_model("resnet34", num_classes=5, weights=path)
    assert all(torch.equal(a, b) for a, b in zip(teacher.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sdbnn.create_model("resnet34", weights=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(sdbnn.CheckpointError, match="corrupt"):
        sdbnn.create_model("resnet34", weights=tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="ResNet-34 weights for 1000 classes"):
        sdbnn.create_model("resnet34", weights=path)

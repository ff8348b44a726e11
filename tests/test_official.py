"""Official-checkpoint import: a state dict with exactly the official keys and shapes gives the same function as
a model whose parameters were copied by hand; bad state dicts raise one error that lists every problem."""

import pytest
import torch

import sdbnn
from sdbnn.official import OFFICIAL_MODELS, OfficialCheckpointError

INPUT = {"resnet18_imagenet": torch.randn(2, 3, 64, 64)}


def random_official_state_dict(name):
    _, layout = sdbnn.official_layout(name)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(123)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape) + 0.5
        else:
            state[key] = torch.randn(shape) * 0.5
    return state


class HandCopy:
    """Copies official tensors into module attributes, written out module by module (no key renaming)."""

    def __init__(self, state):
        self.state, self.used = state, set()

    def __call__(self, tensor, key):
        with torch.no_grad():
            tensor.copy_(self.state[key].reshape(tensor.shape))
        self.used.add(key)

    def bn(self, bn, prefix):
        for attribute in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            self(getattr(bn, attribute), prefix + attribute)

    def sd_conv(self, conv, prefix, gate_name):
        self(conv.alpha, prefix + "alpha")
        self(conv.gate.reduce.weight, f"{prefix}{gate_name}.fc.0.weight")
        self(conv.gate.expand.weight, f"{prefix}{gate_name}.fc.2.weight")


def copy_cifar_resnet(model, copy):
    copy(model.conv1.weight, "conv1.weight")
    copy.bn(model.bn1, "bn1.")
    for stage in range(1, model.num_stages + 1):
        for index, block in enumerate(getattr(model, f"layer{stage}")):
            prefix = f"layer{stage}.{index}."
            for number, (conv, bn) in enumerate([(block.conv1, block.bn1), (block.conv2, block.bn2)], start=1):
                copy(conv.weight, f"{prefix}conv{number}.weight")
                copy.sd_conv(conv, f"{prefix}conv{number}.", "dybeta")
                copy.bn(bn, f"{prefix}bn{number}.")
            if isinstance(block.shortcut, torch.nn.Sequential):
                copy(block.shortcut[0].weight, prefix + "shortcut.0.weight")
                copy.bn(block.shortcut[1], prefix + "shortcut.1.")
    copy.bn(model.head_bn, "bn2.")
    copy(model.fc.weight, "linear.weight")
    copy(model.fc.bias, "linear.bias")


def copy_vgg_small(model, copy):
    copy(model.conv0.weight, "conv0.weight")
    copy.bn(model.bn0, "bn0.")
    for index in range(1, 6):
        conv = getattr(model, f"conv{index}")
        copy(conv.weight, f"conv{index}.weight")
        copy.sd_conv(conv, f"conv{index}.", "dybeta")
        copy.bn(getattr(model, f"bn{index}"), f"bn{index}.")
    copy(model.fc.weight, "fc.weight")
    copy(model.fc.bias, "fc.bias")


def copy_birealnet(model, copy):
    copy(model.conv1.weight, "conv1.weight")
    copy.bn(model.bn1, "bn1.")
    for stage in range(1, 5):
        for index, block in enumerate(getattr(model, f"layer{stage}")):
            prefix = f"layer{stage}.{index}."
            copy(block.conv.weight, prefix + "binary_conv.weights")  # flat (N, 1), row-major (out, in, kh, kw)
            copy.sd_conv(block.conv, prefix + "binary_conv.", "beta")
            copy.bn(block.bn, prefix + "bn1.")
            copy(block.prelu.weight, prefix + "prelu.weight")
            if isinstance(block.shortcut, torch.nn.Sequential):
                copy(block.shortcut[1].weight, prefix + "downsample.1.weight")
                copy.bn(block.shortcut[2], prefix + "downsample.2.")
    copy(model.fc.weight, "fc.weight")
    copy(model.fc.bias, "fc.bias")


HAND_COPY = {
    "resnet20": copy_cifar_resnet,
    "resnet18_cifar": copy_cifar_resnet,
    "vgg_small": copy_vgg_small,
    "resnet18_imagenet": copy_birealnet,
}


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_converted_model_equals_hand_copied_model(name):
    state = random_official_state_dict(name)
    converted = sdbnn.from_official(name, {"module." + key: value for key, value in state.items()})
    by_hand = sdbnn.create_model(name)
    copy = HandCopy(state)
    HAND_COPY[name](by_hand, copy)
    assert copy.used == set(state)
    x = INPUT.get(name, torch.randn(2, 3, 32, 32))
    for mode in ("eval", "train"):
        getattr(converted, mode)()
        getattr(by_hand, mode)()
        with torch.no_grad():
            torch.testing.assert_close(converted(x), by_hand(x), rtol=0, atol=0)


def test_imagenet_flat_weights_are_row_major_out_in_kh_kw():
    state = random_official_state_dict("resnet18_imagenet")
    flat = torch.arange(64 * 64 * 9, dtype=torch.float32).reshape(-1, 1)
    state["layer1.2.binary_conv.weights"] = flat
    model = sdbnn.from_official("resnet18_imagenet", state)
    weight = model.layer1[2].conv.weight
    assert weight[0, 0, 0, 1] == 1 and weight[0, 1, 0, 0] == 9 and weight[1, 0, 0, 0] == 64 * 9


def test_checkpoint_wrapper_and_files(tmp_path):
    state = random_official_state_dict("resnet20")
    path = tmp_path / "model.th"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}, "best_prec1": 86.9}, path)
    model = sdbnn.from_official("resnet20", path)
    assert torch.equal(model.layer3[2].conv2.gate.expand.weight, state["layer3.2.conv2.dybeta.fc.2.weight"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sdbnn.from_official("resnet20", tmp_path / "nothing.th")
    corrupt = tmp_path / "corrupt.th"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(sdbnn.CheckpointError, match="corrupt"):
        sdbnn.from_official("resnet20", corrupt)


def test_bad_state_dict_lists_every_problem():
    state = random_official_state_dict("resnet20")
    del state["layer2.1.bn1.running_var"]
    del state["linear.bias"]
    state["layer1.0.conv1.beta"] = torch.zeros(16)
    state["layer3.0.conv1.weight"] = torch.zeros(64, 16, 3, 3)
    with pytest.raises(OfficialCheckpointError) as error:
        sdbnn.from_official("resnet20", state)
    message = str(error.value)
    for fragment in (
        "missing (2): layer2.1.bn1.running_var; linear.bias",
        "unexpected (1): layer1.0.conv1.beta",
        "wrong shape (1): layer3.0.conv1.weight: got 64x16x3x3, expected 64x32x3x3",
    ):
        assert fragment in message


def test_unknown_official_model_and_layout_changing_options():
    with pytest.raises(ValueError, match="official models: resnet20"):
        sdbnn.from_official("resnet34", {})
    with pytest.raises(OfficialCheckpointError, match="change the model's layout"):
        sdbnn.from_official("resnet20", random_official_state_dict("resnet20"), asd="off")
    stage1 = sdbnn.from_official("resnet18_imagenet", random_official_state_dict("resnet18_imagenet"), binary_weights=False, wsd=False)
    assert not stage1.layer1[0].conv.binary_weights


def test_saved_weights_are_atomic_and_have_ordinary_permissions(tmp_path):
    import os
    import stat

    from sdbnn.checkpoints import save_weights

    path = save_weights(sdbnn.create_model("resnet20"), tmp_path / "model.safetensors")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # safetensors recreates the temp file as 0600
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]  # no temp file left behind

"""Official-checkpoint import: `from_official` models compute the official SD-BNN code's function (forward values and
gradients, float64, against numbers the official code produced: tests/data/); a state dict with exactly the official
keys and shapes gives the same function as a model whose parameters were copied by hand; bad state dicts raise one
error that lists every problem."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import sdbnn
from sdbnn import ops
from sdbnn.official import OFFICIAL_MODELS, OfficialCheckpointError, official_to_project_key

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
        # a key-mapping check: both run the same code (the interpreted kernels would only make it slow)
        with torch.no_grad(), sdbnn.backend("reference"):
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


# --- the official code's own numbers ---------------------------------------------------------------------------

OFFICIAL_REFERENCE = Path(__file__).parent / "data" / "official_sdbnn_reference.safetensors"  # see data/README.md
# float64 rounding, relative to the largest value of each quantity in the model (measured: ≤ 1.4e-13, on the sums
# of parameter gradients over millions of weights; ≤ 1e-14 on everything else)
RELATIVE_TOLERANCE = 1e-12
# The fused path runs the interpreted Triton kernels here: ~10 s per model and mode for ResNet-20, 25-40 s for the
# three models with millions of weights (their weight_sign passes), so those run with the slow tests.
FUSED_PATH_IN_DEFAULT_RUN = ("resnet20",)


@pytest.fixture(scope="module")
def official_reference():
    with safe_open(OFFICIAL_REFERENCE, "pt") as file:
        return file.metadata(), {key: file.get_tensor(key) for key in file.keys()}


def recipe_state_dict(name: str, seed: int) -> dict[str, torch.Tensor]:
    """The official state dict the reference numbers were computed from, rebuilt from its recipe (data/README.md):
    draws in float32 from one generator in the layout file's order, then float64."""
    generator = torch.Generator().manual_seed(seed)
    _, layout = sdbnn.official_layout(name)
    state = {}
    for key, shape in layout.items():
        if key.endswith("num_batches_tracked"):  # the layouts' only int64 entries: no draw
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        module = key.rsplit(".", 1)[0]
        if key.endswith("running_var") or (key.endswith(".weight") and f"{module}.running_var" in layout):
            value = torch.rand(shape, generator=generator) + 0.5  # BatchNorm variances and weights
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=generator) * 0.1
        elif key.endswith("alpha"):
            value = torch.randn(shape, generator=generator) * 2.0
        else:
            value = torch.randn(shape, generator=generator) * 0.1
        state[key] = value.double()
    return state


@pytest.mark.parametrize("name", OFFICIAL_MODELS)
def test_recipe_rebuilds_the_reference_weights(name, official_reference):
    # checked first, so that a changed recipe fails as such and not as a wrong model
    metadata, tensors = official_reference
    values = [value for value in recipe_state_dict(name, int(metadata[f"{name}.seed"])).values()
              if value.is_floating_point()]
    checksum = torch.stack([sum(value.sum() for value in values), sum(value.square().sum() for value in values)])
    torch.testing.assert_close(checksum, tensors[f"{name}.recipe_checksum"], rtol=1e-14, atol=0)


def assert_close_to_largest(actual, expected, what):
    """Elementwise, within RELATIVE_TOLERANCE of the largest expected magnitude (gradients that cancel to ~1e-17
    are compared at the model's scale, not their own)."""
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= RELATIVE_TOLERANCE * scale, f"{what}: max error {error:.3g} against scale {scale:.3g}"


# each implementation of the ops: the reference, the CPU math (setting "ops" on CPU) and the interpreted kernels
_CASE_NAMES = {"reference": "reference", "ops": "cpu-math", "triton": "fused-kernels"}
OFFICIAL_FUNCTION_CASES = [
    pytest.param(name, backend, id=f"{name}-{_CASE_NAMES[backend]}",
                 marks=[] if backend != "triton" or name in FUSED_PATH_IN_DEFAULT_RUN else [pytest.mark.slow])
    for name in OFFICIAL_MODELS for backend in _CASE_NAMES
]


@pytest.mark.parametrize("name,backend", OFFICIAL_FUNCTION_CASES)
def test_from_official_computes_the_official_function(name, backend, official_reference):
    """Logits, input gradient and every parameter gradient (norm, sum, first 16 values) of the official code in
    float64, train mode then eval mode (BatchNorm's running statistics from the train pass), at EDE k = 2, t = 0.5:
    on the reference backend, and on the fused ops running the CPU math or the Triton kernels (interpreted,
    in float64)."""
    metadata, tensors = official_reference
    model = sdbnn.from_official(name, recipe_state_dict(name, int(metadata[f"{name}.seed"]))).double()
    sdbnn.set_ede(model, float(metadata["k"]), float(metadata["t"]))
    parameters = dict(model.named_parameters())
    official_names = json.loads(metadata[f"{name}.param_names"])
    for mode in ("train", "eval"):
        getattr(model, mode)()
        model.zero_grad(set_to_none=True)
        x = tensors[f"{name}.{mode}.input"].clone().requires_grad_()
        with sdbnn.backend(backend):
            assert ops.implementation(x) == {"ops": "cpu"}.get(backend, backend)
            logits = model(x)
            logits.square().sum().backward()
        expected = {key.removeprefix(f"{name}.{mode}."): value for key, value in tensors.items()
                    if key.startswith(f"{name}.{mode}.")}
        assert_close_to_largest(logits.detach(), expected["logits"], f"{mode} logits")
        assert_close_to_largest(x.grad, expected["input_grad"], f"{mode} input gradient")
        gradients = [parameters[official_to_project_key(name, key)].grad.flatten() for key in official_names]
        head = torch.stack([torch.nn.functional.pad(grad[:16], (0, max(0, 16 - grad.numel()))) for grad in gradients])
        norms = torch.stack([grad.norm() for grad in gradients])
        sums = torch.stack([grad.sum() for grad in gradients])
        assert_close_to_largest(norms, expected["param_grad_norm"], f"{mode} gradient norms")
        torch.testing.assert_close(sums, expected["param_grad_sum"], rtol=0,
                                   atol=RELATIVE_TOLERANCE * expected["param_grad_norm"].max().item())
        assert_close_to_largest(head, expected["param_grad_head16"], f"{mode} first gradient values")

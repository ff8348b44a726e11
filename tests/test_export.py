"""Packed 1-bit export (bit layout, exact reload, size, bad files), the ONNX graph against PyTorch on real held-out
digits, and the `python -m sdbnn.export` command line (sdbnn.deploy)."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, cpu_env, require_optional
from safetensors import safe_open
from torch import nn

import sdbnn
from sdbnn.deploy import onnx_export
from sdbnn.deploy.inference import inference_model
from sdbnn.deploy.packed import export_packed, load_packed, pack_signs, read_packed, unpack_signs
from sdbnn.engine.config import TrainConfig
from sdbnn.pipelines import load_digits
from sdbnn.pipelines.transforms import normalize


def forward(model, images):
    # the eager reference math: the test process runs the ops' kernels interpreted (TRITON_INTERPRET=1), too slow
    with torch.no_grad(), sdbnn.backend("reference"):
        return model.eval()(images)


def shift_wsd_gates(model, generator):
    """Move every WSD gate away from its initial 0, so that folding the shift into the signs matters."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, sdbnn.SDConv2d):
                module.alpha.copy_(torch.randn(module.alpha.shape, generator=generator) * 3)


def calibrate_batchnorm(model, images, batch_size=128):
    """BatchNorm statistics of real images (a cumulative average over the batches), without training."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad(), sdbnn.backend("reference"):
        model.train()
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    train, held_out = load_digits()
    return normalize(train.images[:256]), normalize(held_out.images), held_out.labels


def forward_with_sign_margins(model, images):
    """Logits and, per image, the smallest |x + shift| that any SD conv binarizes (PyTorch, fp32): how close the
    image comes to a sign that float rounding decides."""
    margins = []

    def record(module, inputs):
        x = inputs[0]
        shifted = x if module.gate is None else x + module.gate(x)[:, :, None, None]
        margins.append(shifted.abs().flatten(1).min(1).values)

    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, sdbnn.SDConv2d)]
    try:
        logits = forward(model, images)
    finally:
        for handle in handles:
            handle.remove()
    return logits, torch.stack(margins).min(0).values


@pytest.fixture(scope="module")
def digits_model(digits):
    """SD-BNN ResNet-20 with shifted WSD gates, one all-zero filter (so W' = 0 exactly and sign(W') = 0) and
    BatchNorm statistics of real digits; with its held-out logits and sign margins."""
    train_images, held_out_images, _ = digits
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # module fixtures are built before the per-test seed: the initialisation must not vary
    model = sdbnn.create_model("resnet20")
    shift_wsd_gates(model, generator)
    with torch.no_grad():
        model.layer2[0].conv2.weight[3].zero_()
    calibrate_batchnorm(model, train_images)
    return (model, *forward_with_sign_margins(model, held_out_images))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, digits_model):
    directory = tmp_path_factory.mktemp("run")
    TrainConfig(model="resnet20", dataset="digits", epochs=1, output_dir=str(directory)).save(directory / "config.yaml")
    sdbnn.save_weights(digits_model[0], directory / "model.safetensors")
    return directory


# --- bits ----------------------------------------------------------------------------------------------------


def test_bit_order_on_a_hand_made_pattern():
    # filter 0: + - - + + + - - | +   → bits (LSB first) 1,0,0,1,1,1,0,0 = 1 + 8 + 16 + 32 = 0x39, then bit 0 = 0x01
    # filter 1: - - - - 0 - - - | +   → 0x00, 0x01; the 0 (flat index 9 + 4 = 13) is stored as bit 0 and listed
    signs = torch.tensor([[1, -1, -1, 1, 1, 1, -1, -1, 1],
                          [-1, -1, -1, -1, 0, -1, -1, -1, 1]], dtype=torch.float32).reshape(2, 1, 3, 3)
    bits, zeros = pack_signs(signs)
    assert bits.dtype == torch.uint8 and bits.tolist() == [[0x39, 0x01], [0x00, 0x01]]
    assert zeros.tolist() == [13]
    assert torch.equal(unpack_signs(bits, signs.shape, zeros), signs)
    assert pack_signs(torch.ones(2, 1, 3, 3))[1] is None  # no zeros: no zero list at all


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (7, 5, 1, 1), (3, 7, 5, 5), (1, 1, 1, 1), (4, 3, 2, 3), (2, 9)])
def test_pack_round_trip_with_odd_shapes_and_exact_zeros(shape):
    generator = torch.Generator().manual_seed(sum(shape))
    signs = torch.randint(-1, 2, shape, generator=generator).float()  # -1, 0, +1
    signs.view(-1)[0] = 0.0
    bits, zeros = pack_signs(signs)
    width = signs[0].numel()
    assert tuple(bits.shape) == (shape[0], (width + 7) // 8)
    assert torch.equal(unpack_signs(bits, shape, zeros), signs)
    assert zeros.tolist() == torch.nonzero(signs.flatten() == 0).flatten().tolist()
    padding = bits[:, -1].int() >> (width % 8 or 8)
    assert not padding.any()  # the unused bits of each row's last byte are 0


def test_pack_rejects_anything_but_signs():
    with pytest.raises(ValueError, match="-1, 0 and \\+1"):
        pack_signs(torch.tensor([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="do not hold"):
        unpack_signs(torch.zeros(2, 1, dtype=torch.uint8), (2, 3, 3, 3))


# --- packed export -------------------------------------------------------------------------------------------


def test_load_packed_gives_exactly_the_trained_logits_on_held_out_digits(digits_model, digits, tmp_path):
    model, expected, _ = digits_model
    path = export_packed(model, tmp_path / "resnet20.sdbnn.safetensors", config={"model": "resnet20"})
    reloaded = load_packed(path)
    logits = forward(reloaded, digits[1])
    assert logits.dtype == torch.float32 and torch.equal(logits, expected)
    assert torch.equal(logits.argmax(1), expected.argmax(1))
    assert len(expected.argmax(1).unique()) > 1  # the predictions depend on the image
    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = set(handle.keys()), handle.metadata()
        zeros = handle.get_tensor("layer2.0.conv2.weight.zeros")
    assert zeros.tolist() == list(range(3 * 288, 4 * 288))  # filter 3: 32 × 3 × 3 = 288 exact zeros
    assert "layer1.0.conv1.weight.zeros" not in keys and "layer1.0.conv1.weight.bits" in keys
    assert not any(key.endswith(("alpha", "num_batches_tracked")) or key.endswith("conv1.weight") and "layer" in key
                   for key in keys)
    assert metadata["format"] == "sdbnn-packed" and metadata["model"] == "resnet20"
    assert json.loads(metadata["model_options"]) == {"num_classes": 10}
    assert all(not conv.wsd for conv in reloaded.modules() if isinstance(conv, sdbnn.SDConv2d))


@pytest.mark.parametrize("name, options, size", [
    ("vgg_small", {}, 32),
    ("resnet18_cifar", {"asd": "static", "num_classes": 7}, 32),
    ("resnet20", {"wsd": False}, 32),
    ("resnet18_imagenet", {"asd": "off"}, 64),
    ("resnet18_imagenet", {"binary_weights": False}, 64),  # W32/A1 with WSD: the real weight W' is stored folded
])
def test_load_packed_is_exact_for_every_model_and_switch(name, options, size, tmp_path):
    generator = torch.Generator().manual_seed(1)
    model = sdbnn.create_model(name, **options).eval()
    shift_wsd_gates(model, generator)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
            if isinstance(module, sdbnn.SDConv2d) and not module.wsd:  # scattered exact zeros, kept as sign 0
                module.weight.view(-1)[::7] = 0.0
    images = torch.randn(3, 3, size, size, generator=generator)
    config = TrainConfig(model=name, dataset="digits", model_options=options)
    logits = forward(load_packed(export_packed(model, tmp_path / "model.sdbnn", config=config)), images)
    assert torch.equal(logits, forward(model, images))


@pytest.mark.parametrize("name, target", [("resnet20", 12), ("vgg_small", 15), ("resnet18_cifar", 15),
                                          ("resnet18_imagenet", 8)])
def test_packed_file_size_targets(name, target, tmp_path):
    """The packed file is at most 1/target of model.safetensors."""
    model = sdbnn.create_model(name)
    full = sdbnn.save_weights(model, tmp_path / "model.safetensors").stat().st_size
    packed = export_packed(model, tmp_path / "packed.safetensors", config=name).stat().st_size
    assert full / packed >= target, f"{name}: packed is 1/{full / packed:.1f} of model.safetensors"


def test_bad_packed_files_raise_one_clear_error(digits_model, tmp_path):
    good = export_packed(digits_model[0], tmp_path / "good.safetensors", config="resnet20").read_bytes()
    truncated, flipped, foreign, garbage = (tmp_path / name for name in ("truncated", "flipped", "foreign", "garbage"))
    truncated.write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[-1000] ^= 0xFF  # one byte of tensor data
    flipped.write_bytes(bytes(corrupt))
    sdbnn.save_weights(digits_model[0], foreign)  # a valid safetensors file, but the full fp32 weights
    garbage.write_bytes(b"not a safetensors file at all")
    for path, problem in [(truncated, "corrupt, truncated"), (flipped, "checksum"), (foreign, "not an sdbnn packed"),
                          (garbage, "corrupt, truncated")]:
        with pytest.raises(sdbnn.CheckpointError, match=problem) as error:
            load_packed(path)
        assert str(path) in str(error.value)
    with pytest.raises(FileNotFoundError):
        read_packed(tmp_path / "missing")


def test_export_refuses_a_config_that_cannot_rebuild_the_model(tmp_path):
    model = sdbnn.create_model("resnet20")
    with pytest.raises(ValueError, match="registry name"):
        export_packed(model, tmp_path / "a", config=None)
    with pytest.raises(ValueError, match="does not describe this model"):
        export_packed(model, tmp_path / "b", config="vgg_small")
    with pytest.raises(ValueError, match="weight_scale"):
        export_packed(sdbnn.create_model("resnet20", weight_scale="mean_abs"), tmp_path / "c", config="resnet20")
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_packed_cli_on_a_run_directory(run_dir, digits_model, digits, tmp_path, capsys):
    from sdbnn.export import main  # in-process (the ONNX test below runs the same command line in a subprocess)

    out = tmp_path / "resnet20.sdbnn.safetensors"
    assert main([str(run_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "equal the trained model's exactly" in printed and "of model.safetensors" in printed
    images = digits[1][:100]
    assert torch.equal(forward(load_packed(out), images), forward(digits_model[0], images))

    existing = tmp_path / "existing"
    existing.write_text("keep me")
    assert main([str(run_dir), str(existing)]) == 1
    assert "--overwrite" in capsys.readouterr().err and existing.read_text() == "keep me"
    assert main([str(tmp_path), str(tmp_path / "out")]) == 1
    assert "config.yaml is missing" in capsys.readouterr().err


# --- ONNX ----------------------------------------------------------------------------------------------------


def test_inference_form_computes_exactly_what_the_model_computes(digits_model, digits):
    model, expected, _ = digits_model
    inference = inference_model(model)
    assert not any(isinstance(module, sdbnn.SDConv2d) for module in inference.modules())
    images = digits[1][:100]  # PyTorch's conv may round differently at another batch size: compare like with like
    with torch.no_grad():  # no backend switch: plain torch ops only
        assert torch.equal(inference(images), forward(model, images))


@pytest.fixture(scope="module")
def onnx_export_run(run_dir, tmp_path_factory):
    """The documented command on the test run: the ONNX file and the JSON report of the command's own check."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require_optional(module, "pip install -e '.[deploy]'")
    folder = tmp_path_factory.mktemp("onnx")
    path, report = folder / "resnet20.onnx", folder / "check.json"
    result = subprocess.run([sys.executable, "-m", "sdbnn.export", str(run_dir), str(path), "--format", "onnx",
                             "--report", str(report)], capture_output=True, text=True, env=cpu_env(), cwd=ROOT,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "onnxruntime vs PyTorch on 32 images" in result.stdout and "-> ok" in result.stdout
    return path, json.loads(report.read_text())


@pytest.fixture(scope="module")
def onnx_file(onnx_export_run):
    return onnx_export_run[0]


def test_onnx_export_command_checks_its_file(onnx_export_run):
    _, report = onnx_export_run
    assert report["format"] == "onnx" and report["checked"] and report["passed"]
    assert not report["onnxruntime_graph_optimizations"] and report["images"] == 32
    assert report["decided_images"] >= 16 and report["max_relative_difference_decided"] <= report["logit_rtol"]
    assert report["top1_agreement_decided"] == report["decided_images"]


def test_onnx_graph_holds_standard_ops_only(onnx_file):
    import onnx

    proto = onnx.load(str(onnx_file))
    domains = {node.domain for node in proto.graph.node}
    op_types = {node.op_type for node in proto.graph.node}
    assert domains <= {"", "ai.onnx"} and not proto.functions
    assert not any("sdbnn" in op.lower() or "sign_with" in op.lower() for op in op_types)
    assert {"Sign", "Conv", "BatchNormalization", "Sigmoid", "ReduceMean"} <= op_types
    (images,) = proto.graph.input
    assert images.type.tensor_type.shape.dim[0].dim_param  # the batch axis is symbolic
    binary_weight = next(init for init in proto.graph.initializer if tuple(init.dims) == (16, 16, 3, 3))
    assert set(onnx.numpy_helper.to_array(binary_weight).flatten().tolist()) <= {-1.0, 0.0, 1.0}  # ±1 constants


def test_onnx_matches_pytorch_on_held_out_digits(onnx_file, digits_model, digits):
    # What the deploy docs claim, on the 397 held-out digits: every image whose binarized values x + shift all lie
    # farther than DECIDED_MARGIN from 0 gets onnxruntime logits within LOGIT_RTOL (of its largest logit) of
    # PyTorch's, and so the same top-1; nearly all images are such images. (Closer to 0, the two runtimes' last-bit
    # differences may flip a sign, and a BNN turns one flipped sign into visibly different logits: those images are
    # only counted.)
    model, expected, margins = digits_model
    images = digits[1]
    library_logits, library_margins = onnx_export.logits_and_sign_margins(model, images)
    assert torch.equal(library_logits, expected) and torch.equal(library_margins, margins)  # independent hooks agree
    decided = margins > onnx_export.DECIDED_MARGIN
    assert decided.float().mean() >= 0.9
    logits = onnx_export.onnx_logits(onnx_file, images)
    assert logits.shape == expected.shape
    scale = expected.abs().amax(dim=1, keepdim=True).clamp_min(1.0)
    assert ((logits - expected) / scale)[decided].abs().max().item() <= onnx_export.LOGIT_RTOL
    assert torch.equal(logits.argmax(1)[decided], expected.argmax(1)[decided])
    result = onnx_export.agreement(onnx_file, model, images)
    assert result["passed"] and result["decided_images"] == int(decided.sum()) and result["images"] == len(images)
    assert result["top1_agreement"] == int((logits.argmax(1) == expected.argmax(1)).sum())
    few = decided.nonzero().flatten()[:7]  # another batch size through the dynamic batch axis
    small_batch = onnx_export.onnx_logits(onnx_file, images[few])
    assert small_batch.shape == (7, 10)
    assert ((small_batch - expected[few]) / scale[few]).abs().max().item() <= onnx_export.LOGIT_RTOL


def test_onnx_export_command_fails_when_the_file_does_not_compute_the_model(onnx_file, tmp_path, monkeypatch,
                                                                             capsys):
    from sdbnn.deploy import cli

    other = tmp_path / "other_run"  # another model's weights under the test run's graph: a wrong export
    other.mkdir()
    TrainConfig(model="resnet20", dataset="digits", epochs=1).save(other / "config.yaml")
    sdbnn.save_weights(sdbnn.create_model("resnet20"), other / "model.safetensors")
    monkeypatch.setattr(onnx_export, "export_onnx", lambda model, path, size: shutil.copyfile(onnx_file, path))
    report = tmp_path / "check.json"
    assert cli.export_main([str(other), str(tmp_path / "wrong.onnx"), "--format", "onnx", "--report",
                            str(report)]) == 1
    assert "-> FAILED" in capsys.readouterr().out
    result = json.loads(report.read_text())
    assert not result["passed"] and result["decided_images"] > 0
    assert result["max_relative_difference_decided"] > result["logit_rtol"]

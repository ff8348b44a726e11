"""The 1-bit packed export of a trained model and its exact reload.

    python -m sdbnn.export RUN_DIR model.sdbnn.safetensors            # packed (the command line: sdbnn.deploy.cli)

    sdbnn.export_packed(model, "model.sdbnn.safetensors", config=run_config)
    model = sdbnn.load_packed("model.sdbnn.safetensors")              # logits equal the trained model's (eval, CPU)

**Packed format** (version 1): one safetensors file.

- Every binary SD conv (``binary_weights=True``) stores the signs of its WSD-folded weight
  ``W' = W + sigmoid(alpha) * 0.01 * mean(W_c)`` (computed in fp32 exactly as `sdbnn.reference.wsd_shift_weight`)
  as ``<conv>.weight.bits``: uint8 ``[out_channels, ceil(n / 8)]`` with ``n = in_channels * kh * kw``. Row ``o``
  holds filter ``o``; element ``j`` of the filter, in C order over ``(in, kh, kw)``, is bit ``j % 8`` of byte
  ``j // 8``, least significant bit first; bit 1 means +1, bit 0 means -1. Unused bits of a row's last byte are 0.
- ``torch.sign`` gives 0 for an exact 0, and the model computed with that 0: such positions are stored with bit 0
  and listed in ``<conv>.weight.zeros`` (int64 flat indices into the C-ordered ``[out, in, kh, kw]`` weight),
  a tensor that exists only when the layer has any zero.
- Every other tensor the eval-mode forward needs is stored under its state-dict name in fp32 (real convs, the
  linear head, BatchNorm affine parameters and running statistics, PReLU, ASD gates). A W32/A1 SD conv
  (``binary_weights=False``) stores its WSD-folded real weight ``W'``. Dropped: WSD ``alpha`` (folded into the
  weights) and BatchNorm ``num_batches_tracked`` (used only by training with momentum=None).
- Metadata (all strings): ``format`` = "sdbnn-packed", ``format_version``, ``model`` (registry name),
  ``model_options`` (JSON, including ``num_classes``), ``num_classes``, ``binary_weight_shapes`` (JSON), ``bit_layout``
  (the sentence above), ``sha256`` (of the metadata and every tensor, so corruption is caught on load).

`load_packed` builds the same architecture with ``wsd=False`` and loads the ±1/0 weights: sign(±1) = ±1 and
sign(0) = 0, so the inference model computes exactly what the trained model computed in eval mode.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sdbnn.checkpoints import CheckpointError
from sdbnn.deploy.inference import folded_weight, sd_convs, unwrap_model
from sdbnn.io import atomic_write

PACKED_FORMAT = "sdbnn-packed"
PACKED_FORMAT_VERSION = 1
BITS_SUFFIX = ".bits"
ZEROS_SUFFIX = ".zeros"
BIT_LAYOUT = (
    "rows = output channels; element j of a row (C order over in, kh, kw) is bit j%8 (LSB first) of byte j//8; "
    "1 = +1, 0 = -1 or an exact 0 listed in <name>.zeros (int64 flat indices into [out, in, kh, kw]); "
    "unused bits of the last byte are 0"
)
_BIT_VALUES = 2 ** torch.arange(8, dtype=torch.int32)  # bit j%8 of a byte carries 2^(j%8)
_DROPPED_SUFFIXES = ("num_batches_tracked",)


def pack_signs(signs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pack a tensor of -1/0/+1 values ``[rows, ...]`` into bits ``[rows, ceil(n / 8)]`` (uint8, layout in the
    module docstring) and the flat indices of its exact zeros (int64; None when there are none)."""
    if signs.dim() < 1 or signs.shape[0] == 0:
        raise ValueError(f"cannot pack a tensor of shape {tuple(signs.shape)}: it needs at least one row")
    if not bool(((signs == 1) | (signs == -1) | (signs == 0)).all()):
        raise ValueError("pack_signs takes values -1, 0 and +1 only (signs of a weight)")
    rows = signs.reshape(signs.shape[0], -1).cpu()
    width = rows.shape[1]
    padded = F.pad((rows > 0).to(torch.int32), (0, -width % 8))
    bits = (padded.reshape(rows.shape[0], -1, 8) * _BIT_VALUES).sum(dim=2).to(torch.uint8)
    zeros = torch.nonzero(rows.reshape(-1) == 0).flatten()
    return bits, (zeros if zeros.numel() else None)


def unpack_signs(bits: torch.Tensor, shape: Sequence[int], zeros: torch.Tensor | None = None) -> torch.Tensor:
    """The fp32 tensor of -1/0/+1 values of ``shape`` that `pack_signs` packed into ``bits`` and ``zeros``."""
    shape = tuple(int(size) for size in shape)
    rows, width = shape[0], math.prod(shape[1:])
    if bits.dtype != torch.uint8 or tuple(bits.shape) != (rows, math.ceil(width / 8)):
        raise ValueError(f"bits of shape {tuple(bits.shape)} ({bits.dtype}) do not hold a weight of shape {shape}")
    set_bits = (bits.to(torch.int32)[:, :, None] & _BIT_VALUES) != 0
    signs = torch.where(set_bits.reshape(rows, -1)[:, :width], 1.0, -1.0).reshape(-1)
    if zeros is not None and zeros.numel():
        if zeros.dtype != torch.int64 or zeros.dim() != 1 or int(zeros.min()) < 0 or int(zeros.max()) >= signs.numel():
            raise ValueError(f"zero positions must be int64 flat indices below {signs.numel()}")
        signs[zeros] = 0.0
    return signs.reshape(shape)


def packed_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """The tensors of a packed export (see the module docstring) and the shapes of its binary weights."""
    model = unwrap_model(model)
    convs = sd_convs(model)
    for name, conv in convs.items():
        if conv.weight_scale != "none":
            raise ValueError(
                f"{name} uses weight_scale={conv.weight_scale!r}; the packed format stores SD-BNN's unscaled signs "
                "only (weight_scale='none')"
            )
    tensors, shapes = {}, {}
    for key, value in model.state_dict().items():
        owner, _, leaf = key.rpartition(".")
        if leaf in _DROPPED_SUFFIXES or (owner in convs and leaf == "alpha"):
            continue
        if owner in convs and leaf == "weight":
            conv = convs[owner]
            weight = folded_weight(conv)
            if conv.binary_weights:
                bits, zeros = pack_signs(weight)
                tensors[key + BITS_SUFFIX] = bits
                if zeros is not None:
                    tensors[key + ZEROS_SUFFIX] = zeros
                shapes[key] = list(weight.shape)
                continue
            value = weight
        value = value.detach().cpu()
        tensors[key] = (value.float() if value.is_floating_point() else value).contiguous()
    return tensors, shapes


def _checksum(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> str:
    digest = hashlib.sha256(json.dumps({k: v for k, v in metadata.items() if k != "sha256"}, sort_keys=True).encode())
    for key in sorted(tensors):
        tensor = tensors[key].contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _model_identity(config, model: nn.Module) -> tuple[str, dict]:
    """(registry name, create_model options) from a TrainConfig, a mapping with "model" / "model_options", or a
    model name; ``num_classes`` is added from the model's classifier when the config leaves it out."""
    from sdbnn.models import model_spec

    if isinstance(config, str):
        name, options = config, {}
    elif isinstance(config, Mapping) and "model" in config:
        name, options = config["model"], dict(config.get("model_options") or {})
    elif hasattr(config, "model") and hasattr(config, "model_options"):
        name, options = config.model, dict(config.model_options or {})
    else:
        raise ValueError(
            "export_packed needs the model's registry name to rebuild it: pass config= a TrainConfig, "
            "a mapping {'model': name, 'model_options': {...}}, or a model name"
        )
    spec = model_spec(name)
    options.pop("weights", None)  # a teacher's weight file: the export holds the weights itself
    if "num_classes" in spec.options and "num_classes" not in options:
        classifiers = [module for module in unwrap_model(model).modules() if isinstance(module, nn.Linear)]
        if classifiers:
            options["num_classes"] = classifiers[-1].out_features
    return name, options


def inference_architecture(name: str, options: Mapping) -> nn.Module:
    """The model ``name`` built for a packed export's weights: WSD off (its shift is folded into the signs)."""
    from sdbnn.models import create_model, model_spec

    overrides = dict(options)
    if model_spec(name).binary:
        overrides["wsd"] = False
    return create_model(name, **overrides).eval()


def _load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load a packed export's state; only the dropped entries (alpha, num_batches_tracked) may be missing."""
    convs = sd_convs(model)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"{source} does not fit the model it names: {error}") from None
    really_missing = [
        key for key in missing
        if not key.endswith(_DROPPED_SUFFIXES) and not (key.rpartition(".")[0] in convs and key.endswith(".alpha"))
    ]
    if really_missing or unexpected:
        raise CheckpointError(
            f"{source} does not fit the model it names: missing {really_missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model


def export_packed(model: nn.Module, path: str | Path, config=None) -> Path:
    """Write ``model`` as a packed export to ``path`` (atomically); returns the path.

    ``config``: the run's TrainConfig, a mapping with "model" and "model_options", or a registry name — what
    `load_packed` needs to rebuild the architecture. The tensors are checked against that architecture first.
    """
    from safetensors.torch import save_file

    name, options = _model_identity(config, model)
    tensors, shapes = packed_tensors(model)
    metadata = {
        "format": PACKED_FORMAT,
        "format_version": str(PACKED_FORMAT_VERSION),
        "model": name,
        "model_options": json.dumps(options, sort_keys=True),
        "num_classes": str(options.get("num_classes", "")),
        "binary_weight_shapes": json.dumps(shapes),
        "bit_layout": BIT_LAYOUT,
    }
    metadata["sha256"] = _checksum(tensors, metadata)
    try:  # the config must rebuild this very model, or the file would be useless
        _load_into(inference_architecture(name, options), _inference_state(tensors, shapes), f"model {name!r}")
    except CheckpointError as error:
        raise ValueError(f"config does not describe this model: {error}") from None
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _inference_state(tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, Sequence[int]]) -> dict:
    state = {}
    for key, value in tensors.items():
        if key.endswith(BITS_SUFFIX):
            weight_key = key[: -len(BITS_SUFFIX)]
            state[weight_key] = unpack_signs(value, shapes[weight_key], tensors.get(weight_key + ZEROS_SUFFIX))
        elif not key.endswith(ZEROS_SUFFIX):
            state[key] = value
    return state


def read_packed(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata with parsed ``model_options``, the inference state dict with ±1/0 weights) of a packed export.
    Raises CheckpointError naming the file for a corrupt, truncated or foreign file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"packed file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as error:  # every reader failure means the same thing to the user
        raise CheckpointError(
            f"packed file {path} is corrupt, truncated or not a safetensors file ({type(error).__name__}: {error})"
        ) from None
    if metadata.get("format") != PACKED_FORMAT:
        raise CheckpointError(
            f"{path} is not an sdbnn packed export (no format={PACKED_FORMAT!r} metadata); "
            "write one with `python -m sdbnn.export RUN_DIR OUT`"
        )
    version = metadata.get("format_version", "")
    if version != str(PACKED_FORMAT_VERSION):
        raise CheckpointError(f"packed file {path} has format version {version!r}; this sdbnn reads version "
                              f"{PACKED_FORMAT_VERSION}")
    if metadata.get("sha256") != _checksum(tensors, metadata):
        raise CheckpointError(f"packed file {path} is corrupt: its contents do not match the checksum written with it")
    try:
        options = json.loads(metadata["model_options"])
        shapes = json.loads(metadata["binary_weight_shapes"])
        state = _inference_state(tensors, shapes)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"packed file {path} is inconsistent ({type(error).__name__}: {error})") from None
    return {**metadata, "model_options": options, "binary_weight_shapes": shapes}, state


def load_packed(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The inference model of a packed export, in eval mode: its logits equal the exported model's (fp32, CPU)."""
    info, state = read_packed(path)
    try:
        model = inference_architecture(info["model"], info["model_options"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"packed file {path} names a model this sdbnn cannot build: {error}") from None
    return _load_into(model, state, f"packed file {path}").to(device).eval()

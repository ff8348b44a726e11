"""Import checkpoints of the official SD-BNN code (github.com/pingxue-hfut/sd-bnn) into this project's models.

The official state-dict layouts (key, shape, dtype) ship in ``sdbnn/layouts/``; a checkpoint is checked against
its layout first, so that every missing, unexpected or mis-shaped key is reported in one error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache
from importlib import resources

import torch
from torch import nn

from sdbnn.checkpoints import CheckpointError, load_state_dict_file, unwrap_state_dict
from sdbnn.models import create_model

_SE_GATE = [(r"\.dybeta\.fc\.0\.", ".gate.reduce."), (r"\.dybeta\.fc\.2\.", ".gate.expand.")]
_CIFAR_RESNET_HEAD = [(r"^bn2\.", "head_bn."), (r"^linear\.", "fc.")]

# Official key -> this project's key, per model (applied in order, each at most once).
_RENAMES: dict[str, list[tuple[str, str]]] = {
    "resnet20": _SE_GATE + _CIFAR_RESNET_HEAD,
    "resnet18_cifar": _SE_GATE + _CIFAR_RESNET_HEAD,
    "vgg_small": _SE_GATE,
    "resnet18_imagenet": [
        (r"\.binary_conv\.weights$", ".conv.weight"),  # flat (N, 1) in the official HardBinaryConv
        (r"\.binary_conv\.beta\.fc\.0\.", ".conv.gate.reduce."),
        (r"\.binary_conv\.beta\.fc\.2\.", ".conv.gate.expand."),
        (r"\.binary_conv\.", ".conv."),
        (r"\.bn1\.", ".bn."),
        (r"\.downsample\.", ".shortcut."),
    ],
}
OFFICIAL_MODELS = tuple(_RENAMES)


class OfficialCheckpointError(CheckpointError):
    """The state dict does not match the official layout; the message lists every problem."""


@cache
def official_layout(name: str) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(parameter count, {key: shape}) of the official ``name`` model's state dict."""
    if name not in _RENAMES:
        raise ValueError(f"no official layout for {name!r}; official models: {', '.join(OFFICIAL_MODELS)}")
    text = resources.files("sdbnn").joinpath(f"layouts/original_{name}_state_dict.tsv").read_text()
    header, *rows = text.strip().splitlines()
    num_parameters = int(re.search(r"(\d+) parameters", header).group(1))
    shapes = {}
    for row in rows:
        key, shape, _dtype = row.split("\t")
        shapes[key] = () if shape == "scalar" else tuple(int(size) for size in shape.split("x"))
    return num_parameters, shapes


def official_to_project_key(name: str, key: str) -> str:
    for pattern, replacement in _RENAMES[name]:
        key = re.sub(pattern, replacement, key, count=1)
    return key


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"  # the layout files' notation


def _describe(value: object) -> str:
    return _shape_text(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def check_official_state_dict(name: str, state_dict: Mapping[str, object]) -> None:
    """Raise one OfficialCheckpointError listing every missing, unexpected and mis-shaped key."""
    _, layout = official_layout(name)
    missing = sorted(set(layout) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(layout))
    misshaped = [
        f"{key}: got {_describe(value)}, expected {_shape_text(layout[key])}"
        for key, value in state_dict.items()
        if key in layout and (not isinstance(value, torch.Tensor) or tuple(value.shape) != layout[key])
    ]
    if missing or unexpected or misshaped:
        parts = [f"state dict does not match the official {name} layout:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
            if items:
                parts.append(f"  {title} ({len(items)}): " + "; ".join(items))
        raise OfficialCheckpointError("\n".join(parts))


def from_official(name: str, state_dict: Mapping[str, torch.Tensor] | str | os.PathLike, **overrides) -> nn.Module:
    """Build this project's ``name`` model computing the same function as an official checkpoint.

    ``state_dict`` is the official model's state dict (``module.`` prefixes from DataParallel are fine; a training
    checkpoint holding it under ``'state_dict'`` is unwrapped), or a path to a file holding one. ``overrides`` go
    to `create_model` (e.g. ``binary_weights=False, wsd=False`` for an ImageNet stage-1 checkpoint).
    """
    if name not in _RENAMES:
        raise ValueError(f"no official checkpoint format for {name!r}; official models: {', '.join(OFFICIAL_MODELS)}")
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = load_state_dict_file(state_dict)
    else:
        state_dict = unwrap_state_dict(state_dict)
    state_dict = {key.removeprefix("module."): value for key, value in state_dict.items()}
    check_official_state_dict(name, state_dict)

    model = create_model(name, **overrides)
    target = model.state_dict()
    converted = {}
    for key, value in state_dict.items():
        project_key = official_to_project_key(name, key)
        if project_key not in target:
            raise OfficialCheckpointError(f"options {overrides} change the model's layout: it has no {project_key!r}")
        converted[project_key] = value.reshape(target[project_key].shape)
    try:
        model.load_state_dict(converted)
    except RuntimeError as error:
        raise OfficialCheckpointError(f"options {overrides} change the model's layout: {error}") from None
    return model

"""Reading and atomically writing weight files, with one clear error per problem."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sdbnn.io import atomic_write


class CheckpointError(ValueError):
    """A weight file that exists but cannot be used (corrupt, wrong format, wrong architecture)."""


def save_weights(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor], path: str | Path) -> Path:
    """Write a state dict (or a module's) as safetensors, atomically."""
    state = model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module) else model_or_state
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp)))


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Accept a bare state dict or a training checkpoint holding one under 'state_dict' / 'model'."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
        if all(isinstance(key, str) for key in obj):
            return dict(obj)
    raise CheckpointError(f"{source} is not a state dict (a mapping of parameter names to tensors)")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a .safetensors file or a torch checkpoint (tensors only, never arbitrary pickled code) to CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # every reader failure means the same thing to the user
        raise CheckpointError(f"checkpoint {path} is corrupt or not a weight file ({type(error).__name__}: {error})") from None
    return unwrap_state_dict(obj, source=f"checkpoint {path}")

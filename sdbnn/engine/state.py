"""Training checkpoints: everything a run needs to resume exactly, written atomically.

A checkpoint holds the model, optimizer and LR-schedule states, the number of finished epochs and steps, every RNG
state (torch, CUDA, numpy, Python), the resolved config and the best metric so far. The EDE (k, t) are not stored:
they are recomputed from the epoch. Files load with ``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from sdbnn.checkpoints import CheckpointError
from sdbnn.io import atomic_write

FORMAT = "sdbnn-training-state-2"  # 2: the LR scheduler counts optimizer steps (1 counted epochs for cosine)


def _rng_state() -> dict:
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "python": random.getstate(),
    }


def _restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    random.setstate(state["python"])


def save_training_state(
    path: str | Path,
    *,
    model_name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler=None,
    epoch: int,
    step: int,
    config: dict | None = None,
    best: dict | None = None,
) -> Path:
    """Write the state after ``epoch`` finished epochs (``step`` optimizer steps), atomically."""
    state = {
        "format": FORMAT,
        "model_name": model_name,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "step": step,
        "rng": _rng_state(),
        "config": config or {},
        "best": best or {},
    }
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_training_state(
    path: str | Path,
    *,
    model_name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    restore_rng: bool = True,
) -> dict:
    """Restore a checkpoint into ``model`` (and optimizer, scheduler, RNGs); returns epoch, step, config, best.

    One clear error for a missing file, a corrupt one, one of another format, or one of another architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # every reader failure means the same thing to the user
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(error).__name__}: {error})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith(FORMAT.rsplit("-", 1)[0]) and found != FORMAT:
        raise CheckpointError(f"{path} is an sdbnn training checkpoint of format {found!r}; this version resumes "
                              f"{FORMAT!r} only: start a new run")
    if found != FORMAT:
        raise CheckpointError(f"{path} is not an sdbnn training checkpoint")
    if state["model_name"] != model_name:
        raise CheckpointError(f"checkpoint {path} is of model {state['model_name']!r}, not {model_name!r}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit this {model_name}: {error}") from None
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        _restore_rng(state["rng"])
    return {key: state[key] for key in ("epoch", "step", "config", "best")}

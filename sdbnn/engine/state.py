"""Training checkpoints: everything a run needs to resume exactly, written atomically, the last two kept.

A checkpoint holds the model, optimizer and LR-schedule states, the number of finished epochs and steps, the position
in the current epoch (``batch``: steps of it already taken, 0 at an epoch boundary) with that epoch's running totals
(``progress``), every RNG state (torch, CUDA, numpy, Python), the resolved config and the best metric so far. The EDE
(k, t) are not stored: they are recomputed from the epoch. Files load with ``weights_only=True`` (no pickled code
runs).

A run directory keeps its newest checkpoint as ``checkpoint.pt`` and the one before as ``checkpoint.previous.pt``:
when the newest cannot be read, `latest_training_state` resumes from the previous one with a warning.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path

import numpy as np
import torch

from sdbnn.checkpoints import CheckpointError
from sdbnn.engine.kill_points import kill_point
from sdbnn.io import atomic_write

FORMAT = "sdbnn-training-state-2"  # 2: the LR scheduler counts optimizer steps (1 counted epochs for cosine)
CHECKPOINT, PREVIOUS_CHECKPOINT = "checkpoint.pt", "checkpoint.previous.pt"


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
    batch: int = 0,
    progress: dict | None = None,
    config: dict | None = None,
    best: dict | None = None,
    keep_previous: bool = False,
) -> Path:
    """Write the state after ``epoch`` finished epochs and ``batch`` steps of the next (``step`` optimizer steps in
    all), atomically. ``progress`` holds the running totals of a partly done epoch. With ``keep_previous`` the file
    it replaces becomes ``checkpoint.previous.pt`` beside it (the fallback of `latest_training_state`)."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "model_name": model_name,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": epoch,
        "step": step,
        "batch": batch,
        "progress": progress or {},
        "rng": _rng_state(),
        "config": config or {},
        "best": best or {},
    }

    def write(tmp: Path) -> None:
        torch.save(state, tmp)
        kill_point("checkpoint_write")  # test-only (tests/test_long_runs.py kills runs here)
        if keep_previous and path.exists():  # only once the new state is safely written
            os.replace(path, path.with_name(PREVIOUS_CHECKPOINT))

    return atomic_write(path, write)


class _Unreadable(CheckpointError):
    """The file's bytes cannot be loaded at all (truncated, damaged): what the previous checkpoint is kept for."""


def read_training_state(path: str | Path) -> dict:
    """The checkpoint at ``path`` as a dict of CPU tensors and values, checked to be an sdbnn training checkpoint of
    this format. FileNotFoundError when missing; CheckpointError when corrupt or of another kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # every reader failure means the same thing to the user
        raise _Unreadable(f"checkpoint {path} is corrupt ({type(error).__name__}: {error})") from None
    found = state.get("format") if isinstance(state, dict) else None
    if isinstance(found, str) and found.startswith(FORMAT.rsplit("-", 1)[0]) and found != FORMAT:
        raise CheckpointError(f"{path} is an sdbnn training checkpoint of format {found!r}; this version resumes "
                              f"{FORMAT!r} only: start a new run")
    if found != FORMAT:
        raise CheckpointError(f"{path} is not an sdbnn training checkpoint")
    return state


def latest_training_state(directory: str | Path) -> tuple[dict, Path] | None:
    """(state, its path) of the newest readable checkpoint in ``directory``, or None when it holds none.

    When ``checkpoint.pt`` is unreadable (or missing beside a previous one), the previous checkpoint is used and a
    warning printed; when neither can be read, the newest one's error is raised."""
    directory = Path(directory)
    newest, previous = directory / CHECKPOINT, directory / PREVIOUS_CHECKPOINT
    if not newest.is_file():
        if not previous.is_file():
            return None
        print(f"warning: {newest} is missing; resuming from the checkpoint before it, {previous}", file=sys.stderr,
              flush=True)
        return read_training_state(previous), previous
    try:
        return read_training_state(newest), newest
    except _Unreadable as error:
        if not previous.is_file():
            raise
        state = read_training_state(previous)  # its own error if it is unusable too
        print(f"warning: {error}; resuming from the checkpoint before it, {previous}", file=sys.stderr, flush=True)
        return state, previous


def restore_training_state(
    state: dict,
    *,
    model_name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    restore_rng: bool = True,
    source: str | Path = "checkpoint",
) -> dict:
    """Load a state read by `read_training_state` into ``model`` (and optimizer, scheduler, RNGs); returns epoch, step,
    batch, progress, config, best."""
    if state["model_name"] != model_name:
        raise CheckpointError(f"{source} is of model {state['model_name']!r}, not {model_name!r}")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        raise CheckpointError(f"{source} does not fit this {model_name}: {error}") from None
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        _restore_rng(state["rng"])
    # checkpoints written before mid-epoch ones existed are at an epoch boundary
    return {"epoch": state["epoch"], "step": state["step"], "batch": state.get("batch", 0),
            "progress": state.get("progress", {}), "config": state["config"], "best": state["best"]}


def load_training_state(
    path: str | Path,
    *,
    model_name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler=None,
    restore_rng: bool = True,
) -> dict:
    """Restore the checkpoint at ``path`` into ``model`` (and optimizer, scheduler, RNGs); returns epoch, step, batch,
    progress, config, best.

    One clear error for a missing file, a corrupt one, one of another format, or one of another architecture.
    """
    return restore_training_state(read_training_state(path), model_name=model_name, model=model, optimizer=optimizer,
                                  scheduler=scheduler, restore_rng=restore_rng, source=f"checkpoint {path}")

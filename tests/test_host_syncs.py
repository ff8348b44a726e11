"""The training loop never waits for the device: host-device synchronising calls per epoch stay a constant plus at
most one per `CHECK_EVERY` (10) steps (progress bar and divergence check), counted on CPU by patching every call that
would synchronise on a GPU."""

import contextlib
import functools

import torch
from helpers import torch_threads

from sdbnn.engine import trainer as trainer_module
from sdbnn.engine.config import TrainConfig
from sdbnn.engine.trainer import Trainer

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def counting_syncs(counts: dict):
    """Count calls of the synchronising Tensor methods while ``counts["on"]`` is true."""
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def counted(name, method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if counts["on"]:
                counts[name] = counts.get(name, 0) + 1
            return method(self, *args, **kwargs)
        return wrapper

    try:
        for name, method in originals.items():
            setattr(torch.Tensor, name, counted(name, method))
        yield
    finally:
        for name, method in originals.items():
            setattr(torch.Tensor, name, method)


def syncs_in_train_epoch(tmp_path, images: int) -> tuple[int, int]:
    """(synchronising calls in one training epoch, its steps) on ``images`` real digits, batch 16 (the count
    depends on the steps, not on the batch: a small one keeps the 30 steps and the evaluations cheap)."""
    config = TrainConfig(model="resnet20", dataset="digits", epochs=1, batch_size=16, max_images=images,
                         backend="reference", output_dir=str(tmp_path / str(images)))
    trainer = Trainer(config)
    counts = {"on": False}
    original = trainer.train_epoch

    def counted_epoch(*args):
        counts["on"] = True
        try:
            return original(*args)
        finally:
            counts["on"] = False

    trainer.train_epoch = counted_epoch
    with counting_syncs(counts), torch_threads(1):  # one thread: fast on a busy machine too
        trainer.fit()
    counts.pop("on")
    return sum(counts.values()), trainer.steps_per_epoch


def test_training_syncs_at_most_once_per_ten_steps_beyond_a_per_epoch_constant(tmp_path):
    short, short_steps = syncs_in_train_epoch(tmp_path, 160)
    long, long_steps = syncs_in_train_epoch(tmp_path, 320)
    assert (short_steps, long_steps) == (10, 20)
    assert long - short <= (long_steps - short_steps) / trainer_module.CHECK_EVERY
    assert short <= 4, f"{short} synchronising calls in a 10-step epoch"

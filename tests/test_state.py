"""Training checkpoints: exact round trip (model, optimizer, schedule, RNG, position in the epoch), clear errors,
atomic writes, the last two kept and the previous one used when the newest is unreadable."""

import random

import numpy as np
import pytest
import torch

import sdbnn
from sdbnn.engine.state import latest_training_state, load_training_state, save_training_state


def trained_step(model, optimizer, scheduler):
    with sdbnn.backend("reference"):  # the kernels are not what this tests (interpreted, they take half a minute)
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()


def make():
    model = sdbnn.create_model("resnet20")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)


def test_round_trip_restores_everything(tmp_path):
    model, optimizer, scheduler = make()
    trained_step(model, optimizer, scheduler)
    progress = {"loss_sums": [2.5, 2.25], "seconds": 1.5}  # a partly done epoch's running totals
    path = save_training_state(tmp_path / "last.pt", model_name="resnet20", model=model, optimizer=optimizer,
                               scheduler=scheduler, epoch=1, step=4, batch=3, progress=progress, config={"lr": 0.1},
                               best={"top1": 0.5})
    fresh_model, fresh_optimizer, fresh_scheduler = make()
    info = load_training_state(path, model_name="resnet20", model=fresh_model, optimizer=fresh_optimizer,
                               scheduler=fresh_scheduler)
    assert info == {"epoch": 1, "step": 4, "batch": 3, "progress": progress, "config": {"lr": 0.1},
                    "best": {"top1": 0.5}}
    for a, b in zip(model.state_dict().values(), fresh_model.state_dict().values()):
        assert torch.equal(a, b)
    assert fresh_scheduler.last_epoch == 1 and fresh_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    # The next step is identical from the original and from the restored state.
    torch.manual_seed(7)
    trained_step(model, optimizer, scheduler)
    torch.manual_seed(7)
    trained_step(fresh_model, fresh_optimizer, fresh_scheduler)
    for a, b in zip(model.parameters(), fresh_model.parameters()):
        assert torch.equal(a, b)


def test_rng_states_are_restored(tmp_path):
    model, optimizer, _ = make()
    path = save_training_state(tmp_path / "s.pt", model_name="resnet20", model=model, optimizer=optimizer, epoch=0, step=0)
    draws = (torch.rand(3), np.random.rand(2), random.random())
    load_training_state(path, model_name="resnet20", model=model)
    again = (torch.rand(3), np.random.rand(2), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_clear_errors_and_nothing_lost(tmp_path, monkeypatch):
    model, optimizer, _ = make()
    path = save_training_state(tmp_path / "s.pt", model_name="resnet20", model=model, optimizer=optimizer, epoch=3, step=9)
    with pytest.raises(sdbnn.CheckpointError, match="of model 'resnet20', not 'vgg_small'"):
        load_training_state(path, model_name="vgg_small", model=sdbnn.create_model("vgg_small"))
    with pytest.raises(sdbnn.CheckpointError, match="does not fit"):
        load_training_state(path, model_name="resnet20", model=sdbnn.create_model("resnet20", asd="off"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_training_state(tmp_path / "none.pt", model_name="resnet20", model=model)
    (tmp_path / "junk.pt").write_bytes(path.read_bytes()[:500])
    with pytest.raises(sdbnn.CheckpointError, match="corrupt"):
        load_training_state(tmp_path / "junk.pt", model_name="resnet20", model=model)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(sdbnn.CheckpointError, match="not an sdbnn training checkpoint"):
        load_training_state(tmp_path / "other.pt", model_name="resnet20", model=model)

    def failing_save(*args, **kwargs):
        raise OSError("disk full")

    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_training_state(path, model_name="resnet20", model=model, optimizer=optimizer, epoch=4, step=12)
    assert path.read_bytes() == before  # the last good checkpoint survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt", "other.pt", "s.pt"]  # no temp file left


def test_the_last_two_are_kept_and_an_unreadable_newest_falls_back_with_a_warning(tmp_path, capsys):
    model, optimizer, _ = make()
    assert latest_training_state(tmp_path) is None  # a new run
    newest = tmp_path / "checkpoint.pt"
    for step in (1, 2, 3):
        save_training_state(newest, model_name="resnet20", model=model, optimizer=optimizer, epoch=0, step=step,
                            batch=step, keep_previous=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.previous.pt", "checkpoint.pt"]
    state, path = latest_training_state(tmp_path)
    assert (path, state["step"]) == (newest, 3) and capsys.readouterr().err == ""

    newest.write_bytes(newest.read_bytes()[:1000])  # damaged
    state, path = latest_training_state(tmp_path)
    assert (path.name, state["step"], state["batch"]) == ("checkpoint.previous.pt", 2, 2)
    warning = capsys.readouterr().err
    assert "warning:" in warning and "corrupt" in warning and "checkpoint.previous.pt" in warning

    newest.unlink()  # e.g. a crash between the two renames
    assert latest_training_state(tmp_path)[0]["step"] == 2 and "missing" in capsys.readouterr().err
    (tmp_path / "checkpoint.previous.pt").write_bytes(b"junk")
    with pytest.raises(sdbnn.CheckpointError, match="corrupt"):  # nothing readable left: one clear error
        latest_training_state(tmp_path)


def test_a_checkpoint_of_another_kind_is_not_silently_skipped(tmp_path):
    model, optimizer, _ = make()
    for name in ("checkpoint.previous.pt", "checkpoint.pt"):
        save_training_state(tmp_path / name, model_name="resnet20", model=model, optimizer=optimizer, epoch=1, step=1)
    torch.save({"weights": torch.zeros(1)}, tmp_path / "checkpoint.pt")  # readable, but not a training state
    with pytest.raises(sdbnn.CheckpointError, match="not an sdbnn training checkpoint"):
        latest_training_state(tmp_path)

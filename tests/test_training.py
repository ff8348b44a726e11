"""The Trainer through the CIFAR launcher on real digits: outputs, 2 gloo processes, clear errors, divergence on NaN
and inf, progress output (resumes and preemption: test_long_runs.py)."""

import io
import sys

import pytest
import torch
from helpers import LAUNCH, cpu_env, require_optional, run_script, torch_threads

import sdbnn
from sdbnn.engine import cli
from sdbnn.engine.runs import CHECKPOINT, CONFIG, METRICS, SUMMARY, WEIGHTS, Run
from sdbnn.engine.state import read_training_state
from sdbnn.pipelines.digits import load_digits
from sdbnn.pipelines.transforms import normalize

LAUNCHER = str(LAUNCH / "cifar.py")
DIGITS = ["--dataset", "digits", "--batch-size", "64"]
OUTPUTS = {CONFIG, METRICS, "metrics.csv", "training_curve.png", CHECKPOINT, WEIGHTS, SUMMARY}


def run(*args, processes=1, threads=None):
    env = cpu_env(OMP_NUM_THREADS=str(threads)) if threads is not None else None
    return run_script(LAUNCHER, *args, processes=processes, env=env)


@pytest.mark.parametrize("processes", [1, 2])
def test_launcher_writes_every_output(tmp_path, processes):
    # 640 of the training digits (10 steps per epoch), the whole held-out set
    result = run(*DIGITS, "--epochs", "2", "--max-images", "640", "--output-dir", str(tmp_path), processes=processes,
                 threads=1)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"world size {processes}," in result.stdout
    assert OUTPUTS <= {p.name for p in tmp_path.iterdir()}
    epochs = Run(tmp_path).records()
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(r["val_samples"] == 397 for r in epochs)  # the full held-out set, over all ranks
    assert epochs[0]["t"] == 1e-3 and epochs[1]["train_loss"] < epochs[0]["train_loss"]
    summary = Run(tmp_path).summary()
    assert summary["final"]["epoch"] == 1 and summary["best"]["val_top1"] == max(r["val_top1"] for r in epochs)
    assert result.stdout.count("final top-1") == 1  # only the main process reports
    # output to a pipe, not a terminal: no progress-bar redraws, one line per epoch
    assert "\r" not in result.stdout + result.stderr
    assert [line.split(" loss")[0] for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    if processes == 1:  # the saved weights give the last epoch's held-out accuracy (the learning test's check, fast)
        model = Run(tmp_path).model()
        _, held_out = load_digits()
        with torch.no_grad(), sdbnn.backend("reference"), torch_threads(1):
            predictions = model.eval()(normalize(held_out.images)).argmax(1)
        accuracy = (predictions == held_out.labels).float().mean().item()
        assert abs(accuracy - epochs[-1]["val_top1"]) < 1e-6
    # --report-to's default with tensorboard installed: the main process's event file holds every epoch's metrics
    require_optional("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sdbnn.engine.trackers import TRACKED

    (events,) = (tmp_path / "tensorboard" / "sdbnn").glob("events.out.tfevents.*")
    board = EventAccumulator(str(events)).Reload()
    for key in TRACKED:
        assert [(s.step, s.value) for s in board.Scalars(key)] == [
            (r["epoch"], pytest.approx(r[key], rel=1e-6)) for r in epochs], key


@pytest.mark.slow  # three training runs, one of them with two processes
def test_two_processes_match_one_process_on_the_global_batch(tmp_path):
    # Each rank takes a contiguous half of every global batch of 64; one process accumulating 2 micro-batches of 32
    # sees the same BatchNorm batches and sums the same gradients. One thread, as accelerate gives each CPU rank (the
    # thread count changes the float reduction order, and binary nets amplify that).
    one, two = tmp_path / "one", tmp_path / "two"
    single = run(*DIGITS, "--epochs", "2", "--accumulation-steps", "2", "--output-dir", str(one), threads=1)
    assert single.returncode == 0, single.stderr[-3000:]
    double = run(*DIGITS, "--epochs", "2", "--output-dir", str(two), processes=2)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "world size 1," in single.stdout and "world size 2," in double.stdout
    losses_one, losses_two = ([r["train_loss"] for r in Run(d).records()] for d in (one, two))
    assert losses_one == pytest.approx(losses_two, rel=1e-6, abs=0)
    a, b = Run(one).weights(), Run(two).weights()
    learned = [key for key in a if "running_" not in key and "num_batches" not in key]
    assert len(learned) > 60
    for key in learned:  # BatchNorm running statistics differ by design: DDP keeps rank 0's
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_clear_errors_and_nothing_overwritten(tmp_path, capsys):
    # the launcher's main in this process (launch/cifar.py is `sys.exit(cifar_main())`): each refusal costs no
    # interpreter start; the launcher script itself runs in the tests above
    def launch(*args):
        with torch_threads(1):
            code = cli.cifar_main(list(args))
        return code, capsys.readouterr().err

    code, err = launch("--model", "resnet21", *DIGITS, "--output-dir", str(tmp_path / "x"))
    assert code == 2 and "unknown model 'resnet21'" in err
    code, err = launch("--data-dir", str(tmp_path / "missing"), "--epochs", "1", "--output-dir", str(tmp_path / "y"))
    assert code == 2 and "does not exist" in err
    run_dir, small = tmp_path / "run", [*DIGITS, "--max-images", "128", "--epochs", "2", "--backend", "reference"]
    assert launch(*small, "--output-dir", str(run_dir), "--stop-after-epoch", "1")[0] == 0
    checkpoint = Run(run_dir).path(CHECKPOINT).read_bytes()
    code, err = launch(*small, "--output-dir", str(run_dir))
    assert code == 2 and "already holds a run" in err
    code, err = launch("--model", "vgg_small", *small, "--output-dir", str(run_dir), "--resume")
    assert code == 2 and "of model 'resnet20', not 'vgg_small'" in err
    assert Run(run_dir).path(CHECKPOINT).read_bytes() == checkpoint
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / CHECKPOINT).write_bytes(checkpoint[:1000])
    code, err = launch(*small, "--output-dir", str(tmp_path / "corrupt"), "--resume")
    assert code == 2 and "corrupt" in err


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_divergence_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, bad):
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.trainer import Trainer, TrainingDiverged

    # 320 digits in batches of 64: 5 steps per epoch; the loss turns bad from epoch 2's second step on
    trainer = Trainer(TrainConfig(model="resnet20", dataset="digits", epochs=2, batch_size=64, max_images=320,
                                  output_dir=str(tmp_path), backend="reference"))
    original, calls = trainer._loss, []

    def failing_loss(images, labels):
        calls.append(1)
        loss = original(images, labels)
        return loss * bad if len(calls) > 6 else loss

    monkeypatch.setattr(trainer, "_loss", failing_loss)
    with pytest.raises(TrainingDiverged, match=f"loss became {bad} at epoch 2, step 2;"), torch_threads(1):
        trainer.fit()
    state = read_training_state(Run(tmp_path).path(CHECKPOINT))
    assert state["epoch"] == 1 and len(Run(tmp_path).records()) == 1


def test_progress_is_a_live_bar_on_a_terminal(tmp_path, monkeypatch):
    # (written to a file or a pipe, it is one line per epoch: test_launcher_writes_every_output)
    from sdbnn.engine.config import TrainConfig
    from sdbnn.engine.trainer import Trainer

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    trainer = Trainer(TrainConfig(model="resnet20", dataset="digits", epochs=1, batch_size=32, max_images=64,
                                  output_dir=str(tmp_path / "terminal"), backend="reference"))
    with torch_threads(1):
        trainer.train_epoch(0)
    assert "\r" in terminal.getvalue() and "epoch 1/1" in terminal.getvalue()  # the bar, redrawn in place

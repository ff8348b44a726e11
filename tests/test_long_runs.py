"""Long runs and clusters (docs/clusters.md): a stop signal ends a run at the next step with a checkpoint and the
requeue exit code; the same command with --resume continues exactly (mid-epoch too), then reports a finished run; the
last two checkpoints are kept; a SIGKILL mid-epoch loses nothing, nor do several at random moments (in checkpoint
writes and evaluations too); `accelerate launch --max_restarts` restarts a killed group, which resumes; processes
started by a scheduler (srun-style) and two "nodes" on 127.0.0.1 train like one node; a second run into a directory a
live run holds is refused at once.

Every comparison is exact (CPU, one thread per process on both sides: the thread count changes float sums)."""

import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import (
    LAUNCH,
    ROOT,
    accelerate_command,
    accelerate_env,
    child_pids,
    cpu_env,
    free_port,
    process_environment,
    run_script,
    run_two_nodes,
    torch_threads,
)
from safetensors.torch import load_file

from sdbnn.engine.config import TrainConfig
from sdbnn.engine.kill_points import PAUSE, SECONDS
from sdbnn.engine.preemption import REQUEUE_EXIT_CODE, Preempted, StopSignals
from sdbnn.engine.runs import Run
from sdbnn.engine.trainer import Trainer

LAUNCHER = str(LAUNCH / "cifar.py")
# 384 digits in global batches of 32: 12 steps per epoch, the held-out set capped at 384 too
DIGITS = ["--dataset", "digits", "--batch-size", "32", "--max-images", "384", "--epochs", "3"]
STEPS = 12
# two processes: 640 digits in global batches of 32, 20 steps per epoch, checks (and so checkpoints) at steps 10, 20
TWO_RANKS = ["--dataset", "digits", "--batch-size", "32", "--max-images", "640", "--epochs", "2"]


def untimed(epochs: list[dict]) -> list[dict]:
    """Epoch records without their timings (the only values a resume may change)."""
    return [{key: value for key, value in record.items() if "seconds" not in key and "per_s" not in key}
            for record in epochs]


def assert_same_run(directory, reference) -> None:
    """Bit-identical final weights and per-epoch metrics."""
    a, b = load_file(reference / "model.safetensors"), load_file(directory / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert untimed(Run(directory).records()) == untimed(Run(reference).records())


def checkpoint_position(directory) -> tuple[int, int] | None:
    """(finished epochs, steps into the next) of the newest checkpoint, None before the first."""
    try:
        state = torch.load(directory / "checkpoint.pt", weights_only=True)
    except (FileNotFoundError, RuntimeError, EOFError):
        return None
    return state["epoch"], state["batch"]


def wait_for(condition, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended (exit code {process.returncode}) before the awaited moment"
        assert time.time() < deadline, "timed out waiting for the run"
        time.sleep(0.05)


def one_process(*args: str) -> list[str]:
    return [sys.executable, LAUNCHER, *args]


def run_one(*args: str) -> subprocess.CompletedProcess:
    return run_script(LAUNCHER, *args, env=cpu_env(OMP_NUM_THREADS="1"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The digits run every interrupted one must equal: 3 epochs, one process, one thread."""
    directory = tmp_path_factory.mktemp("uninterrupted")
    result = run_one(*DIGITS, "--output-dir", str(directory))
    assert result.returncode == 0, result.stderr[-3000:]
    return directory


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """An uninterrupted 2-process (gloo) digits run on one node."""
    directory = tmp_path_factory.mktemp("two_processes")
    result = run_script(LAUNCHER, *TWO_RANKS, "--output-dir", str(directory), processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world size 2," in result.stdout
    return directory


# --- in process: fast ----------------------------------------------------------------------------------------

def test_stop_signals_are_recorded_while_active_and_restored_after():
    for number in (signal.SIGTERM, signal.SIGUSR1):
        with StopSignals() as stop:
            os.kill(os.getpid(), number)
            assert stop.received == signal.Signals(number).name
        assert signal.getsignal(number) is signal.SIG_DFL


@pytest.fixture
def one_thread():
    with torch_threads(1):  # runs compared in this process: the same thread count on both sides
        yield


def test_stop_signal_checkpoints_mid_epoch_and_resume_is_exact(tmp_path, capsys, one_thread):
    # 128 digits in batches of 32: 4 steps per epoch; the reference backend (the kernels are not what this tests)
    def trainer(name, resume=False):
        config = TrainConfig(model="resnet20", dataset="digits", epochs=2, batch_size=32, max_images=128,
                             backend="reference", output_dir=str(tmp_path / name))
        return Trainer(config, resume=resume)

    straight = trainer("straight")
    straight.fit()
    stopped = trainer("stopped")
    original, taken = stopped.train_step, []

    def step_then_signal(images, labels):  # SIGUSR1 to this process right after the 2nd step of epoch 2
        taken.append(1)
        loss = original(images, labels)
        if len(taken) == 4 + 2:
            os.kill(os.getpid(), signal.SIGUSR1)
        return loss

    stopped.train_step = step_then_signal
    with pytest.raises(Preempted) as raised:
        stopped.fit()
    assert (raised.value.epoch, raised.value.batch, raised.value.signal_name) == (1, 2, "SIGUSR1")
    assert len(taken) == 6  # stopped at the very next step boundary
    assert "SIGUSR1 received: stopped at epoch 2, step 2" in capsys.readouterr().err
    newest = torch.load(tmp_path / "stopped" / "checkpoint.pt", weights_only=True)
    previous = torch.load(tmp_path / "stopped" / "checkpoint.previous.pt", weights_only=True)
    assert (newest["epoch"], newest["batch"], newest["step"]) == (1, 2, 6) and previous["batch"] == 0

    # the newest checkpoint unreadable: resume from the one before (end of epoch 1), with a warning
    shutil.copytree(tmp_path / "stopped", tmp_path / "fallback")
    (tmp_path / "fallback" / "checkpoint.pt").write_bytes(b"truncated")
    for name in ("stopped", "fallback"):
        resumed = trainer(name, resume=True)
        resumed.fit()
        assert all(torch.equal(value, resumed.model.state_dict()[key]) for key, value in
                   straight.model.state_dict().items()), name
        assert untimed(Run(tmp_path / name).records()) == untimed(Run(tmp_path / "straight").records()), name
    err = capsys.readouterr().err
    assert "checkpoint.pt is corrupt" in err and "resuming from the checkpoint before it" in err


def test_loaders_resume_mid_epoch_with_the_batches_an_uninterrupted_epoch_would_give(tmp_path):
    from sdbnn.pipelines.cifar import DeviceResidentLoader, ImageSet
    from sdbnn.pipelines.loaders import torchvision_loader

    generator = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8, generator=generator),
                    torch.arange(60), [str(i) for i in range(60)])

    class RandomlyAugmented(torch.utils.data.Dataset):  # per-sample augmentation from torch's global generator
        def __len__(self):
            return 60

        def __getitem__(self, index):
            return torch.rand(3) + index, index

    def epoch(loader, first_batch=0):
        loader.set_epoch(3, first_batch)
        return list(loader)

    loaders = [DeviceResidentLoader(data, 5, train=True, seed=1, rank=rank, world_size=2) for rank in (0, 1)]
    loaders += [torchvision_loader(RandomlyAugmented(), 5, True, "cpu", workers, seed=1, rank=rank, world_size=2)
                for workers, rank in ((0, 0), (2, 1))]
    for loader in loaders:
        whole, resumed = epoch(loader), epoch(loader, 4)
        assert len(whole) == len(loader) == 6 and len(resumed) == 2
        for (images, labels), (images_after, labels_after) in zip(whole[4:], resumed):
            assert torch.equal(labels, labels_after) and torch.equal(images, images_after)  # augmentation too
    # torchvision: the augmentation is a function of (seed, epoch, sample), whatever the workers, and the training
    # process's own random stream is untouched
    draws = torch.get_rng_state()
    in_process = epoch(torchvision_loader(RandomlyAugmented(), 5, True, "cpu", 0, seed=1))
    assert torch.equal(torch.get_rng_state(), draws)
    in_workers = epoch(torchvision_loader(RandomlyAugmented(), 5, True, "cpu", 2, seed=1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(in_process, in_workers))


@pytest.mark.slow  # FFCV compiles its pipeline first (numba): ~1 minute on 2 busy cores
@pytest.mark.optional("ffcv")
@pytest.mark.timeout(600)
def test_ffcv_loader_resumes_mid_epoch_in_the_same_order_without_decoding_the_skipped_batches(tmp_path):
    from PIL import Image

    from sdbnn.pipelines.ffcv_data import FFCVImageLoader, write_beton

    for index in range(40):  # one image per class: the labels spell out the order
        folder = tmp_path / "images" / f"{index:02d}"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32), (index, 0, 0)).save(folder / "image.png")
    path = write_beton(tmp_path / "images", tmp_path / "train.beton", write_mode="raw", workers=1)
    loader = FFCVImageLoader(path, 5, train=True, dataset="cifar", num_workers=1, seed=2)
    loader.set_epoch(3)
    whole = torch.cat([labels for _, labels in loader])
    loader.set_epoch(3, 5)
    resumed = [labels for _, labels in loader]
    assert len(resumed) == 3 and torch.equal(torch.cat(resumed), whole[25:])


# --- through the launcher: slow ------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigterm_then_the_same_command_continues_exactly_then_reports_finished(tmp_path, uninterrupted):
    directory = tmp_path / "run"
    command = one_process(*DIGITS, "--output-dir", str(directory), "--resume")  # on an empty directory: starts
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=cpu_env(OMP_NUM_THREADS="1"), cwd=ROOT,
                                   start_new_session=True)
        wait_for(lambda: len(Run(directory).records()) == 1, process)
        os.killpg(process.pid, signal.SIGTERM)  # as a scheduler does: the whole process group
        assert process.wait(timeout=600) == REQUEUE_EXIT_CODE
    stderr = (tmp_path / "err").read_text()
    assert "Traceback" not in stderr and "SIGTERM received: stopped at epoch 2" in stderr
    epoch, batch = checkpoint_position(directory)
    assert epoch == 1 and 0 < batch < STEPS, (epoch, batch)  # in the middle of epoch 2

    again = subprocess.run(command, capture_output=True, text=True, env=cpu_env(OMP_NUM_THREADS="1"), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"epoch 2, step {batch} of {STEPS}" in again.stdout
    assert_same_run(directory, uninterrupted)

    finished = (directory / "model.safetensors").stat().st_mtime_ns
    once_more = subprocess.run(command, capture_output=True, text=True, env=cpu_env(OMP_NUM_THREADS="1"), cwd=ROOT)
    assert once_more.returncode == 0, once_more.stderr[-3000:]
    assert "holds a finished run: nothing to train" in once_more.stdout and "epoch 1/3" not in once_more.stdout
    assert (directory / "model.safetensors").stat().st_mtime_ns == finished
    assert len(Run(directory).records()) == 3


@pytest.mark.slow
def test_resume_after_interruption_is_exact(tmp_path, uninterrupted):
    """A clean stop at an epoch's end, then a SIGKILL in the middle of the next epoch (asserted to have killed the
    run there), each resumed exactly."""
    directory = tmp_path / "run"
    first = run_one(*DIGITS, "--output-dir", str(directory), "--stop-after-epoch", "1")
    assert first.returncode == 0 and not (directory / "model.safetensors").exists()
    # resumed with a checkpoint at every step, then killed once one of epoch 2's steps is on disk
    command = one_process(*DIGITS, "--output-dir", str(directory), "--resume", "--checkpoint-every-min", "0")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=cpu_env(OMP_NUM_THREADS="1"), cwd=ROOT)
    wait_for(lambda: (checkpoint_position(directory) or (0, 0)) >= (1, 3), process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert len(Run(directory).records()) == 1  # killed before epoch 2 ended
    epoch, batch = checkpoint_position(directory)
    assert epoch == 1 and 3 <= batch < STEPS
    resumed = run_one(*DIGITS, "--output-dir", str(directory), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epoch 2, step {batch} of {STEPS}" in resumed.stdout
    assert_same_run(directory, uninterrupted)


@pytest.mark.slow
def test_max_restarts_restarts_a_killed_rank_and_the_run_ends_as_if_uninterrupted(tmp_path, two_process_run):
    # torch's rendezvous keeps one store across restarts (static: always; c10d: unless
    # TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1), and a restarted group's ranks then read the dead ones' addresses (gloo:
    # "connectFullMesh failed ... Connection refused"): docs/clusters.md's command uses c10d with that variable
    directory = tmp_path / "run"
    command = accelerate_command(LAUNCHER, *TWO_RANKS, "--output-dir", str(directory), "--resume",
                                 "--checkpoint-every-min", "0", processes=2,
                                 launcher_flags=("--max_restarts", "1", "--rdzv_backend", "c10d"))
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        launcher = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT,
                                    env={**accelerate_env(), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"})
        wait_for(lambda: checkpoint_position(directory) == (0, 10), launcher)  # halfway through epoch 1
        (rank0,) = [pid for pid in child_pids(launcher.pid) if process_environment(pid).get("RANK") == "0"]
        os.kill(rank0, signal.SIGKILL)  # the rank that writes the checkpoints
        assert launcher.wait(timeout=600) == 0, (tmp_path / "err").read_text()[-3000:]
    stdout, stderr = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert "exitcode: -9" in stderr  # torchrun saw the SIGKILL ...
    assert stdout.count("world size 2,") == 2  # ... and started the group again,
    assert "epoch 1, step 10 of 20" in stdout  # which resumed from the middle of epoch 1
    assert_same_run(directory, two_process_run)


@pytest.mark.slow
def test_scheduler_started_processes_requeue_on_sigterm_and_resume_exactly(tmp_path, two_process_run):
    """docs/clusters.md's SLURM example starts one process per task with RANK/WORLD_SIZE/MASTER_ADDR in the environment
    and requeues when they exit with the requeue code: the same here on 127.0.0.1, 2 processes over gloo."""
    directory = tmp_path / "run"

    def start(port: int) -> list[subprocess.Popen]:
        common = dict(ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
        return [subprocess.Popen(one_process(*TWO_RANKS, "--output-dir", str(directory), "--resume"),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                 env=cpu_env(**common, RANK=str(rank), LOCAL_RANK=str(rank)))
                for rank in range(2)]

    processes = start(free_port())
    wait_for(lambda: (directory / "metrics.jsonl").is_file(), processes[0])  # epoch 1 done
    processes[1].send_signal(signal.SIGTERM)  # to rank 1 only: rank 0 stops with it and writes the checkpoint
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [REQUEUE_EXIT_CODE] * 2, outputs[0][1][-3000:]
    assert all("Traceback" not in err for _, err in outputs)
    assert "a stop signal (on another rank) received: stopped at epoch 2" in outputs[0][1]
    assert checkpoint_position(directory)[0] == 1  # in epoch 2 (its middle, or its end)
    processes = start(free_port())
    outputs = [process.communicate(timeout=600) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs[0][1][-3000:]
    assert "world size 2," in outputs[0][0] and "resuming from" in outputs[0][0]
    assert_same_run(directory, two_process_run)


@pytest.mark.slow
def test_two_nodes_train_like_one_node_and_only_rank_0_needs_the_run_directory(tmp_path, two_process_run):
    elsewhere = tmp_path / "not_on_node_0"  # machine 1's --output-dir: it must never be needed
    node0, node1 = run_two_nodes(LAUNCHER, lambda machine: [*TWO_RANKS, "--output-dir",
                                                            str(tmp_path / "run" if machine == 0 else elsewhere)])
    assert (node0.returncode, node1.returncode) == (0, 0), node0.stderr[-3000:] + node1.stderr[-3000:]
    assert "world size 2," in node0.stdout and "world size" not in node1.stdout  # rank 0 reports
    assert not elsewhere.exists()
    assert_same_run(tmp_path / "run", two_process_run)


# --- random kills and a held directory (README "Reliability") -------------------------------------------------

def pauses_reached(stderr_file, point: str) -> int:
    return stderr_file.read_text().count(f"test pause: {point}")


def snapshot(directory) -> dict:
    """Every file's size and modification time."""
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")
            if p.is_file()}


@pytest.mark.slow
def test_a_second_run_into_a_held_directory_exits_2_at_once_and_the_first_ends_as_if_alone(tmp_path, uninterrupted):
    directory = tmp_path / "run"
    with open(tmp_path / "err", "w") as err:
        first = subprocess.Popen(one_process(*DIGITS, "--output-dir", str(directory)), stdout=subprocess.DEVNULL,
                                 stderr=err, cwd=ROOT, env=cpu_env(OMP_NUM_THREADS="1", **{PAUSE: "evaluation:1"}))
        wait_for(lambda: pauses_reached(tmp_path / "err", "evaluation") >= 1, first)
        os.kill(first.pid, signal.SIGSTOP)  # alive and holding the directory, in the middle of the run: frozen there
        try:
            before = snapshot(directory)
            for resume in ([], ["--resume"]):
                started = time.monotonic()
                second = subprocess.run(one_process(*DIGITS, "--output-dir", str(directory), *resume), text=True,
                                        capture_output=True, cwd=ROOT, env=cpu_env(OMP_NUM_THREADS="1"), timeout=60)
                assert second.returncode == 2 and time.monotonic() - started < 10, second.stderr[-3000:]
                assert second.stderr.startswith(f"error: {directory} is in use by pid {first.pid} on "
                                                f"{os.uname().nodename} (since ")
                assert second.stderr.count("\n") == 1 and second.stdout == ""
            assert snapshot(directory) == before  # the second runs touched nothing
        finally:
            os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=600) == 0, (tmp_path / "err").read_text()[-3000:]
    assert_same_run(directory, uninterrupted)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (torchrun starts its ranks in sessions of their own: a process group kill
    would miss them)."""
    tree = [pid]
    for child in child_pids(pid):
        tree += process_tree(child)
    return tree


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL a run and every process it started, as a node failure would."""
    for pid in process_tree(process.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)


def kill_randomly(tmp_path, command_of, env: dict, kinds: list[str], rng: random.Random,
                  writes: tuple[int, int]) -> list[str]:
    """Run ``command_of()`` again and again, SIGKILLing it (all its processes) once per kind of ``kinds``:
    ``checkpoint_write`` (paused in a write, the ``writes[0]``th to ``writes[1]``th of the run, with the checkpoint
    in its temporary file: the file is asserted to be there),
    ``evaluation`` (paused in an epoch's evaluation) or ``anywhere`` (a random moment after the run saved some
    progress). Returns the kinds of the kills that happened (a run that ends first is not killed)."""
    directory, err = tmp_path / "run", tmp_path / "err"
    done = []
    for kind in kinds:
        pause = {"checkpoint_write": f"checkpoint_write:{rng.randint(*writes)}",
                 "evaluation": "evaluation:1"}.get(kind)
        with open(err, "w") as stderr:
            process = subprocess.Popen(command_of(), stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT,
                                       env={**env, **({PAUSE: pause, SECONDS: "60"} if pause else {})})
            try:
                if kind == "anywhere":
                    position = checkpoint_position(directory)
                    wait_for(lambda: checkpoint_position(directory) not in (None, position), process)
                    time.sleep(rng.uniform(0, 1))
                else:
                    wait_for(lambda: pauses_reached(err, kind) >= 1, process)
                if process.poll() is not None:
                    assert process.returncode == 0, err.read_text()[-3000:]
                    continue
                if kind == "checkpoint_write":
                    assert list(directory.glob(".checkpoint.pt.*.tmp")), "not killed during a checkpoint write"
                kill_tree(process)
                assert process.returncode == -signal.SIGKILL
                done.append(kind)
            finally:
                if process.poll() is None:
                    kill_tree(process)
    return done


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_random_kills_then_the_same_resume_command_ends_bit_identical(tmp_path, processes, request):
    """SIGKILLs of the whole process group at seeded random moments, one at least in a checkpoint write and one in
    an evaluation, each followed by the same --resume command: the final run equals an uninterrupted one, each
    epoch is recorded once, and no temporary file is left."""
    rng = random.Random(25 + processes)
    directory = tmp_path / "run"
    if processes == 1:
        reference = request.getfixturevalue("uninterrupted")

        def command():
            return one_process(*DIGITS, "--output-dir", str(directory), "--resume", "--checkpoint-every-min", "0")

        env, writes = cpu_env(OMP_NUM_THREADS="1"), (2, 4)  # a checkpoint every step: each run saves some first
        kinds = ["checkpoint_write", "checkpoint_write", "evaluation", "anywhere", "anywhere"]
    else:  # checkpoints at steps 10 and 20 of each epoch: 4 in all, so kills that let a run progress are few
        reference = request.getfixturevalue("two_process_run")

        def command():  # a fresh rendezvous port each time: a killed run's may linger
            return accelerate_command(LAUNCHER, *TWO_RANKS, "--output-dir", str(directory), "--resume",
                                      "--checkpoint-every-min", "0", processes=2,
                                      launcher_flags=("--main_process_port", str(free_port())))

        env, writes = accelerate_env(), (1, 1)
        kinds = ["checkpoint_write", "checkpoint_write", "evaluation", "anywhere", "anywhere"]
    rng.shuffle(kinds)
    killed = kill_randomly(tmp_path, command, env, kinds, rng, writes)
    assert len(killed) >= 5 and {"checkpoint_write", "evaluation"} <= set(killed), killed
    final = subprocess.run(command(), capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    assert_same_run(directory, reference)
    assert [record["epoch"] for record in Run(directory).records()] == list(range(len(Run(reference).records())))
    assert not list(directory.rglob("*.tmp"))

"""README "Reliability": a run directory has one owner (a live holder refuses a second run; a dead one's lock never
blocks); data files run no code (a crafted CIFAR batch); trackers through Accelerate (`--report-to`; the TensorBoard
file a launcher run writes: test_training.py). The launcher runs with kills and a held directory are in
test_long_runs.py (-m slow)."""

import json
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

from sdbnn.engine import cli
from sdbnn.engine.config import TrainConfig
from sdbnn.engine.run_lock import LOCK_FILE, RunDirectoryInUse, hold_run_directory, release_run_directory
from sdbnn.io import atomic_write, remove_stale_temporary_files
from sdbnn.pipelines import read_cifar

# a process that holds a run directory, loading only sdbnn/engine/run_lock.py (no torch: it starts in a blink)
HOLDER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("run_lock", sys.argv[1])
run_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(run_lock)
run_lock.hold_run_directory(sys.argv[2])
print("holding", flush=True)
time.sleep(600)
"""


def start_holder(directory) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT / "sdbnn" / "engine" / "run_lock.py"),
                               str(directory)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "holding\n"
    return holder


def test_a_live_holder_refuses_the_directory_and_a_killed_one_never_blocks(tmp_path):
    holder = start_holder(tmp_path / "run")
    try:
        with pytest.raises(RunDirectoryInUse, match=f"in use by pid {holder.pid} on {os.uname().nodename} "
                                                    r"\(since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)"):
            hold_run_directory(tmp_path / "run")
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == holder.pid  # refusing changed nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "run" / LOCK_FILE).read_text()  # the dead holder's name is still in the file ...
    key = hold_run_directory(tmp_path / "run")  # ... and does not block
    assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert hold_run_directory(tmp_path / "run") == key  # this process again (runs one after another): shared
    release_run_directory(key)
    release_run_directory(key)
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # given back
    start_holder(tmp_path / "run").kill()  # and free for others


def test_both_launchers_refuse_a_held_directory_before_writing_anything(tmp_path, capsys):
    stage1 = tmp_path / "imagenet" / "stage1"
    holders = [start_holder(tmp_path / "cifar"), start_holder(stage1)]
    try:
        assert cli.cifar_main(["--dataset", "digits", "--epochs", "1", "--max-images", "64", "--report-to", "none",
                               "--output-dir", str(tmp_path / "cifar"), "--resume"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / 'cifar'} is in use by pid {holders[0].pid} ") and err.count("\n") == 1
        # the ImageNet launcher: per stage (the data is never read: the lock comes first)
        assert cli.imagenet_main(["--data-dir", str(tmp_path / "no_data"), "--no-teacher", "--stage", "both",
                                  "--output-dir", str(tmp_path / "imagenet")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: stage1: {stage1} is in use by pid {holders[1].pid} ") and err.count("\n") == 1
        for directory in (tmp_path / "cifar", stage1):
            assert [p.name for p in directory.iterdir()] == [LOCK_FILE]
        assert sorted(p.name for p in (tmp_path / "imagenet").iterdir()) == ["stage1"]  # stage 2 never started
    finally:
        for holder in holders:
            holder.kill()
            holder.wait()


def test_stale_temporary_files_of_atomic_writes_are_recognised(tmp_path):
    atomic_write(tmp_path / "checkpoint.pt", lambda tmp: tmp.write_bytes(b"x"))
    left = [tmp_path / ".checkpoint.pt.a1b2_c3d.tmp", tmp_path / ".metrics.jsonl.zzzzzzzz.tmp"]
    kept = [tmp_path / ".hidden.tmp", tmp_path / "notes.tmp"]  # not atomic_write's names
    for path in left + kept:
        path.write_bytes(b"half")
    assert sorted(remove_stale_temporary_files(tmp_path)) == sorted(left)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint.pt", *(p.name for p in kept)])


class _RunsAShellCommand:
    """What a crafted "CIFAR batch" holds: unpickling it would run ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_cifar_batch_is_one_clear_error_and_runs_nothing(tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    marker = tmp_path / "the_payload_ran"
    payload = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1], b"trap": _RunsAShellCommand(marker)}
    (folder / "data_batch_1").write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError) as raised:
        read_cifar(tmp_path, train=True)
    message = str(raised.value)
    assert message.startswith(f"{folder / 'data_batch_1'} is not a CIFAR batch file")
    assert "names posix.system" in message and "\n" not in message
    assert not marker.exists()
    # the same through the launcher: exit status 2, one line
    assert cli.cifar_main(["--data-dir", str(tmp_path), "--epochs", "1", "--report-to", "none",
                           "--output-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a CIFAR batch file" in err and "posix.system" in err
    assert not marker.exists()


def test_report_to_a_tracker_that_is_not_installed_is_one_clear_error(monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name in ("wandb", "mlflow") else find_spec(name, *args))
    for tracker in ("wandb", "mlflow"):
        assert cli.cifar_main(["--dataset", "digits", "--report-to", tracker, "--output-dir", "never_made"]) == 2
        err = capsys.readouterr().err
        assert err == f"error: --report-to {tracker} needs the {tracker} package, which is not installed: pip install " \
                      f"{tracker}\n"
    assert not (ROOT / "never_made").exists()
    assert TrainConfig().trackers() == TrainConfig(report_to="all").trackers() == ["tensorboard"]  # installed ones
    assert TrainConfig(report_to="none").trackers() == []
    with pytest.raises(ValueError, match="unknown report_to 'comet'"):
        TrainConfig(report_to="comet")


def test_a_file_system_without_locks_is_warned_about_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    import errno
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    key = hold_run_directory(tmp_path / "run")
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {key} is on a file system without locks") and "README" in err
    release_run_directory(key)  # nothing was held: nothing to give back
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""

"""One owner per run directory: the process that writes a run (rank 0) holds an exclusive lock on
``<run>/run.lock`` from before its first write to the end, so that a second invocation into the same directory — the
same command submitted twice, a requeued job started while the old one is being torn down — stops at once instead
of training twice into one set of checkpoints.

The lock is a POSIX record lock (``fcntl.lockf``): the kernel drops it when the holding process dies, however it
dies, so a lock left by a killed run never blocks. Unlike ``flock``, it is not inherited by forked data-loading
workers, which may outlive a SIGKILL of their parent by seconds. The file also names the holder (host, pid, start
time) for the message the second invocation prints; it stays in the directory, emptied when the run releases it.
A POSIX lock belongs to the process and goes when that process closes ANY descriptor of the file: only this module
opens ``run.lock``, once per process and directory.
On network file systems the lock is only as good as the file system's locking: see README "Reliability".
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = "run.lock"
# this process's locks: {resolved directory: [file descriptor, holders]}. The ablation runner and tests train several
# Trainers one after another in one process; a POSIX lock is the process's, so they share one descriptor.
_held: dict[Path, list[int]] = {}


class RunDirectoryInUse(RuntimeError):
    """Another live process holds the run directory."""


def _holder_text(info: dict) -> str:
    try:
        started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(info["started"])))
        return f"pid {info['pid']} on {info['host']} (since {started})"
    except (KeyError, TypeError, ValueError):
        return "another process"


def hold_run_directory(directory: str | Path) -> Path:
    """Lock ``directory`` (created if missing) for this process, or raise RunDirectoryInUse naming the holder.
    Returns the key for `release_run_directory`. Nothing in a directory held by another process is changed."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    if key in _held:
        _held[key][1] += 1
        return key
    fd = os.open(key / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.EACCES):
            try:
                info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:  # the holder is writing its name this very moment
                info = {}
            os.close(fd)
            raise RunDirectoryInUse(
                f"{directory} is in use by {_holder_text(info)}: wait for that run to end, or choose another "
                f"--output-dir ({key / LOCK_FILE})") from None
        os.close(fd)
        if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            print(f"warning: {key} is on a file system without locks ({error.strerror}): nothing stops a second "
                  "run from writing into it (README \"Reliability\")", file=sys.stderr, flush=True)
            return key
        raise
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    _held[key] = [fd, 1]
    return key


def release_run_directory(key: Path) -> None:
    """Give up one hold of `hold_run_directory`; the last one empties the file and unlocks it."""
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] == 0:
        del _held[key]
        os.ftruncate(entry[0], 0)  # still locked here: nobody reads a half-cleared holder
        os.close(entry[0])  # closing drops the lock


def hold_on_main_process(accelerator, directory: str | Path) -> Path | None:
    """The run directory's lock, taken by the main process (the one that writes the run); every rank raises
    RunDirectoryInUse when another process holds it. Returns the key on the main process, else None."""
    key, problem = None, None
    if accelerator.is_main_process:
        try:
            key = hold_run_directory(directory)
        except RunDirectoryInUse as error:
            problem = error
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        problem = broadcast_object_list([problem])[0]
    if problem is not None:
        raise problem
    return key

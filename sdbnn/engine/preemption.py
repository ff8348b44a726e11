"""Stopping when a cluster asks: SIGTERM or SIGUSR1 make the Trainer write a checkpoint at the next step boundary and
end with `REQUEUE_EXIT_CODE`, so that a scheduler requeues the job and the same command with ``--resume`` continues
it exactly (docs/clusters.md)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

# EX_TEMPFAIL of sysexits.h: a temporary failure, the command is meant to be run again
REQUEUE_EXIT_CODE = 75
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM: SIGTERM before SIGKILL; SIGUSR1 with --signal=USR1@SECONDS


class Preempted(Exception):
    """Training stopped on a signal after writing a checkpoint of where it stopped."""

    def __init__(self, signal_name: str, checkpoint: Path, epoch: int, batch: int):
        self.signal_name, self.checkpoint, self.epoch, self.batch = signal_name, checkpoint, epoch, batch
        super().__init__(f"{signal_name} received: stopped at epoch {epoch + 1}, step {batch}, saved in {checkpoint}; "
                         f"exit code {REQUEUE_EXIT_CODE} asks for a requeue, and the same command with --resume "
                         "continues")


class StopSignals:
    """While active, SIGTERM and SIGUSR1 are recorded in `received` (the signal's name) instead of ending the
    process; the previous handlers come back on exit. Outside the main thread (where Python cannot install handlers)
    nothing changes."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict = {}

    def _record(self, number: int, frame) -> None:
        self.received = self.received or signal.Signals(number).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._record) for number in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """The ``worker_init_fn`` of data-loading worker processes: they outlive a stop signal sent to the whole process
    group (as schedulers do), so that the training process can finish its step and checkpoint; it ends them itself."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)

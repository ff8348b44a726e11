"""Writing files so that a crash never leaves a truncated one where a good one was."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

_TEMPORARY_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # what atomic_write's mkstemp names look like


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path`` in one step,
    so that a crash mid-write never leaves a truncated file where a good one was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        # mkstemp makes 0600 files (and some writers, safetensors among them, recreate the file): after writing,
        # give the result ordinary permissions
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def remove_stale_temporary_files(directory: str | Path) -> list[Path]:
    """Delete the temporary files that `atomic_write` left in ``directory`` when its process was killed mid-write
    (a SIGKILL skips its clean-up). Call it only while holding the directory (`sdbnn.engine.run_lock`): another
    live writer's temporary file looks the same. Returns what was removed."""
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        if _TEMPORARY_NAME.fullmatch(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed

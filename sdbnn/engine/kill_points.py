"""Test-only: a run can be made to pause at a named point, so that a test can kill it exactly there
(tests/test_long_runs.py, the random-kill tests). Outside such a test the variable is unset and a point costs one
environment lookup.

    SDBNN_TEST_PAUSE=checkpoint_write:3,evaluation:1   # pause at the 3rd checkpoint write and the 1st evaluation

At a chosen point the process prints ``test pause: <point> <n>`` to stderr and sleeps SDBNN_TEST_PAUSE_SECONDS
(default 3). Points: ``checkpoint_write`` (the new checkpoint is in its temporary file, not yet renamed) and
``evaluation`` (an epoch's evaluation has begun).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter

PAUSE, SECONDS = "SDBNN_TEST_PAUSE", "SDBNN_TEST_PAUSE_SECONDS"
_reached: Counter = Counter()


def kill_point(name: str) -> None:
    wanted = os.environ.get(PAUSE)
    if not wanted:
        return
    _reached[name] += 1
    for item in wanted.split(","):
        point, _, occurrence = item.partition(":")
        if point == name and _reached[name] == int(occurrence or 1):
            print(f"test pause: {name} {_reached[name]}", file=sys.stderr, flush=True)
            time.sleep(float(os.environ.get(SECONDS, "3")))

"""The determinism promised to users: on CPU, a run is a function of its config, its seed, its thread count (and the
CPU kind and library versions); recording diagnostics does not change it."""

import pytest
from helpers import LAUNCH, cpu_env, run_script

from sdbnn.engine.runs import Run


def _train(directory, *flags):
    result = run_script(LAUNCH / "cifar.py", "--dataset", "digits", "--epochs", "3", "--batch-size", "64",
                        "--max-images", "320", "--seed", "3", "--output-dir", str(directory), *flags,
                        env=cpu_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-2000:]
    return Run(directory).weights()


@pytest.mark.slow  # two training subprocesses
def test_diagnostics_leave_a_whole_schedule_bit_identical(tmp_path):
    # the whole EDE schedule (t from t_min to t_max) in 3 epochs: the same seed and one thread, with and without the
    # per-epoch diagnostics (which run extra forward and backward passes on a held-out batch)
    plain = _train(tmp_path / "plain")
    diagnosed = _train(tmp_path / "diagnosed", "--diagnostics")
    assert plain.keys() == diagnosed.keys()
    different = [name for name in plain if not (plain[name] == diagnosed[name]).all()]
    assert not different, f"diagnostics changed the trained weights: {different[:5]}"

import os
import sys


def pytest_configure(config):
    config.addinivalue_line("markers", "optional(*modules): needs these optional modules: skipped without them, failed "
                            "instead when SDBNN_REQUIRE_OPTIONAL lists them (CI; see tests/helpers.require_optional)")
    # Triton picks interpreter or compiler when a kernel is defined, so this is decided before sdbnn is imported:
    # CPU tests define the kernels for the interpreter (run through `sdbnn.backend("triton")` or the launchers
    # directly); a `-m gpu` run compiles them for CUDA (the two cannot share a process).
    markexpr = config.getoption("markexpr") or ""
    gpu_run = "gpu" in markexpr and "not gpu" not in markexpr
    if gpu_run:
        if os.environ.get("TRITON_INTERPRET") == "1" or any(name.startswith("sdbnn") for name in sys.modules):
            raise RuntimeError("run `-m gpu` without TRITON_INTERPRET=1: the GPU tests compile the Triton kernels")
    else:
        os.environ.setdefault("TRITON_INTERPRET", "1")


import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.hookimpl(tryfirst=True)  # before any fixture is set up
def pytest_runtest_setup(item):
    from helpers import require_optional

    for marker in item.iter_markers("optional"):
        for module in marker.args:
            require_optional(module)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

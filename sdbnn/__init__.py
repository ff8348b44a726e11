"""sdbnn: Self-Distribution Binary Neural Networks (Xue et al., Applied Intelligence 2022).

    model = sdbnn.create_model("resnet20")       # the paper's SD-BNN ResNet-20
    sdbnn.set_ede(model, *sdbnn.ede_schedule(epoch, epochs, t_min=1e-3))
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _alias_source_folders() -> None:
    """Make the top-level kernels/ and pipelines/ folders importable as sdbnn.kernels / sdbnn.pipelines when
    running from a source tree (``PYTHONPATH=.``), where no installed package-dir mapping exists."""
    root = Path(__file__).resolve().parent.parent
    for folder in ("kernels", "pipelines"):
        full_name = f"{__name__}.{folder}"
        init = root / folder / "__init__.py"
        if full_name in sys.modules or not init.is_file() or importlib.util.find_spec(full_name) is not None:
            continue
        spec = importlib.util.spec_from_file_location(full_name, init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[full_name] = module
        spec.loader.exec_module(module)
        globals()[folder] = module


_alias_source_folders()

from sdbnn.checkpoints import CheckpointError, load_state_dict_file, save_weights  # noqa: E402
from sdbnn.layers import SDConv2d, SEGate, StaticShift, set_ede  # noqa: E402
from sdbnn.models import create_model, list_models  # noqa: E402
from sdbnn.official import OfficialCheckpointError, from_official, official_layout  # noqa: E402
from sdbnn.ops import backend  # noqa: E402
from sdbnn.reference import ede_schedule  # noqa: E402

# Deployment tools load on first use: `python -m sdbnn.summary` / `-m sdbnn.export` must not find their module
# already imported by the package (runpy warns), and `import sdbnn` stays as fast as before.
_LAZY = {"summary": ("sdbnn.summary", None), "export_packed": ("sdbnn.export", "export_packed"),
         "load_packed": ("sdbnn.export", "load_packed")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'sdbnn' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)  # sdbnn.summary is a callable module: sdbnn.summary(model, size)
    return module if attribute is None else getattr(module, attribute)


__all__ = [
    "CheckpointError",
    "OfficialCheckpointError",
    "SDConv2d",
    "SEGate",
    "StaticShift",
    "backend",
    "create_model",
    "ede_schedule",
    "export_packed",
    "from_official",
    "list_models",
    "load_packed",
    "load_state_dict_file",
    "official_layout",
    "save_weights",
    "set_ede",
    "summary",
]

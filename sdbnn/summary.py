"""``sdbnn.summary``: the cost table of a model (binary/real parameters, BOPs, FLOPs, OPs, size), as a function and
a command line. The counting lives in `sdbnn.deploy.cost` (its convention is described there), the table in
`sdbnn.deploy.cost_table`, the command line in `sdbnn.deploy.cli`.

    cost = sdbnn.summary(model, (3, 32, 32))         # a ModelSummary; print(cost) shows the table
    cost = sdbnn.summary("resnet18_imagenet", 224)   # a registered name: its full-precision twin is found too
    sdbnn.summary.model_cost(model, (3, 32, 32))     # totals only, JSON-able (what a training run records)
    python -m sdbnn.summary resnet20                 # or a run directory (config.yaml + model.safetensors)
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence

from sdbnn.deploy.cost import (
    default_input_size,
    model_cost,
    run_cost,
    run_input_size,
    run_summary,
    summary,
    twin_name,
)
from sdbnn.deploy.cost_table import LayerCost, ModelSummary, markdown_table

__all__ = ["LayerCost", "ModelSummary", "default_input_size", "main", "markdown_table", "model_cost", "run_cost",
           "run_input_size", "run_summary", "summary", "twin_name"]


def main(argv: Sequence[str] | None = None) -> int:
    from sdbnn.deploy.cli import summary_main

    return summary_main(argv)


class _CallableModule(types.ModuleType):
    """``sdbnn.summary`` is both this module and the function: once the module is imported, Python binds the
    package attribute to the module, so the module itself forwards calls to `summary`."""

    def __call__(self, *args, **kwargs) -> ModelSummary:
        return summary(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())

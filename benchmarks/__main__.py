"""Every measurement in one command: fused kernels, training-step throughput per model, data loaders; the files
<out>/<device>-<date>.json and .md are rewritten as each section and row ends (docs/benchmarks.md).

    python -m benchmarks --quick         # CPU smoke run, a few minutes (the test suite runs it)
    python -m benchmarks --only training --out /tmp/results --budget-s 600    # a GPU machine: PYTHONPATH=. first
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

SECTIONS = ("kernels", "training", "loaders")


def main(argv: list[str] | None = None) -> int:
    from benchmarks import common, kernels, loaders, training
    from sdbnn.reference import SURROGATES

    parser = common.parser("python -m benchmarks", __doc__, SECTIONS, Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="tiny shapes and datasets (CPU smoke run)")
    parser.add_argument("--models", nargs="+", choices=list(training.FULL_CASES), help="training: these models only")
    parser.add_argument("--variants", nargs="+", choices=list(training.VARIANTS), help="training: these variants only")
    parser.add_argument("--surrogate", default="ede", choices=SURROGATES, help="kernels: the backward's surrogate")
    args = parser.parse_args(argv)
    budgets = common.budgets(parser, args, dict.fromkeys(SECTIONS))
    device = torch.device(args.device)
    report = common.start_report(args.out, "", "Benchmarks", device, "python -m benchmarks", argv, quick=args.quick,
                                 budget_s=args.total_s)
    if device.type == "cpu":
        report.notes.append("No GPU: the fused ops run their CPU path; these numbers only check that everything runs.")
    loader_args = loaders.parse_args([*(loaders.QUICK_ARGS if args.quick else []), "--device", args.device])
    sections = {
        "kernels": ("Kernels", lambda section: kernels.run(args.quick, device, args.surrogate, section=section),
                    kernels.markdown_table),
        "training": ("Training", lambda section: training.run(args.quick, device, args.models, variants=args.variants,
                                                             section=section), training.markdown_table),
        "loaders": ("Loaders", lambda section: section.data.update(loaders.run(loader_args)), loaders.markdown_table)}
    status = common.run_sections(report, {name: sections[name] for name in args.only}, budgets, args.total_s,
                                 args.inject_failure)
    print(report.markdown())
    return status


if __name__ == "__main__":
    sys.exit(main())

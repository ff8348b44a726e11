"""Every measurement in one command: fused kernels, training-step throughput per model, data loaders.

    python -m benchmarks                 # on a GPU machine: PYTHONPATH=. python -m benchmarks
    python -m benchmarks --quick         # CPU smoke run, a few minutes (the test suite runs it)
    python -m benchmarks --only training --out /tmp/results --budget-s 600
    python -m benchmarks --only kernels --surrogate approx      # one section alone (python -m benchmarks.loaders too)

Writes <out>/<device>-<date>.json (everything, with the software versions) and .md (one table per section), and
rewrites both the moment each section ends (and after every measured row), so nothing finished is lost. A section
that fails is recorded with its traceback and the other sections still run (exit status 1). ``--budget-s`` stops
starting new work once that many seconds have passed; what was skipped is listed in both files. The GPU session
(`python -m benchmarks.gpu_session`) is the same runner (`benchmarks.common.run_sections`) with its own stages.
Every ratio compares providers measured in this same run; numbers from different runs or devices do not compare.
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
    parser.add_argument("--models", nargs="+", choices=list(training.FULL_CASES),
                        help="training section: a subset of the models (default: all)")
    parser.add_argument("--variants", nargs="+", choices=list(training.VARIANTS),
                        help="training section: a subset of the variants (default: all the device runs)")
    parser.add_argument("--surrogate", default="ede", choices=SURROGATES,
                        help="kernels section: the backward's surrogate (default: ede)")
    args = parser.parse_args(argv)
    budgets = common.budgets(parser, args, dict.fromkeys(SECTIONS))
    device = torch.device(args.device)
    report = common.start_report(args.out, "", "Benchmarks", device, "python -m benchmarks", argv, quick=args.quick,
                                 budget_s=args.total_s)
    if device.type == "cpu":
        report.notes.append("No GPU: the fused ops run their CPU path, so these numbers check that everything runs; "
                            "they are not the project's speed.")

    def run_loaders(section):
        options = loaders.parse_args([*(loaders.QUICK_ARGS if args.quick else []), "--device", args.device])
        section.data.update(loaders.run(options))

    sections = {
        "kernels": ("Kernels", lambda section: kernels.run(args.quick, device, args.surrogate, section=section),
                    kernels.markdown_table),
        "training": ("Training", lambda section: training.run(args.quick, device, args.models, section=section,
                                                             variants=tuple(args.variants or ()) or None),
                     training.markdown_table),
        "loaders": ("Loaders", run_loaders, loaders.markdown_table),
    }
    status = common.run_sections(report, {name: sections[name] for name in args.only}, budgets, args.total_s,
                                 args.inject_failure)
    print(report.markdown())
    return status


if __name__ == "__main__":
    sys.exit(main())

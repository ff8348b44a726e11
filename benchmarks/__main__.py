"""Every measurement in one command: fused kernels, training-step throughput per model, data loaders.

    python -m benchmarks                 # on a GPU machine: PYTHONPATH=. python -m benchmarks
    python -m benchmarks --quick         # CPU smoke run, a few minutes (the test suite runs it)
    python -m benchmarks --only training --out /tmp/results --budget-s 600
    python -m benchmarks --only kernels --surrogate approx      # one section alone (python -m benchmarks.loaders too)

Writes <out>/<device>-<date>.json (everything, with the software versions) and .md (one table per section), and
rewrites both the moment each section ends (and after every measured row), so nothing finished is lost. A section
that fails is recorded with its traceback and the other sections still run (exit status 1). ``--budget-s`` stops
starting new work once that many seconds have passed; what was skipped is listed in both files.
Every ratio compares providers measured in this same run; numbers from different runs or devices do not compare.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

SECTIONS = ("kernels", "training", "loaders")


class InjectedFailure(RuntimeError):
    """Raised by --inject-failure: tests prove that one failing section leaves the others' results."""


def main(argv: list[str] | None = None) -> int:
    from benchmarks import kernels, loaders, training
    from benchmarks.common import Budget, Report, environment, result_stem
    from sdbnn.reference import SURROGATES

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and datasets (CPU smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and markdown")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--models", nargs="+", choices=list(training.FULL_CASES),
                        help="training section: a subset of the models (default: all)")
    parser.add_argument("--variants", nargs="+", choices=list(training.VARIANTS),
                        help="training section: a subset of the variants (default: all the device runs)")
    parser.add_argument("--surrogate", default="ede", choices=SURROGATES,
                        help="kernels section: the backward's surrogate (default: ede)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, help="start no new work after this many seconds (default: no limit)")
    parser.add_argument("--inject-failure", choices=SECTIONS, action="append", default=[],
                        help="make this section raise at its start (tests the failure path)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    info = {**environment(device), "quick": args.quick, "budget_s": args.budget_s,
            "command": " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])}
    notes = [f"`{info['command']}`; torch {info['torch']}, triton {info['triton']}, fused path: {info['fused_path']}."]
    if device.type == "cpu":
        notes.append("No GPU: the fused ops run their CPU path, so these numbers check that everything runs; "
                     "they are not the project's speed.")
    report = Report(args.out, result_stem("", info), info, f"Benchmarks — {info['device']} — {info['date']}", notes)
    budget = Budget(args.budget_s)

    def guarded(name, body):
        def run(section):
            if name in args.inject_failure:
                raise InjectedFailure(f"--inject-failure {name}")
            return body(section)
        return run

    def run_loaders(section):
        options = loaders.parse_args([*(loaders.QUICK_ARGS if args.quick else []), "--device", args.device])
        section.data.update(loaders.run(options))

    bodies = {
        "kernels": (lambda section: kernels.run(args.quick, device, args.surrogate, section=section),
                    kernels.markdown_table),
        "training": (lambda section: training.run(args.quick, device, args.models, section=section,
                                                  variants=tuple(args.variants) if args.variants else None),
                     training.markdown_table),
        "loaders": (run_loaders, loaders.markdown_table),
    }
    for name in args.only:
        body, table = bodies[name]
        report.run(name, guarded(name, body), table, budget)
    print(report.markdown())
    return report.finish("sections")


if __name__ == "__main__":
    sys.exit(main())

"""Every measurement in one command: fused kernels, training-step throughput per model, data loaders.

    python -m benchmarks                 # on a GPU machine: PYTHONPATH=. python -m benchmarks
    python -m benchmarks --quick         # CPU smoke run, a few minutes (the test suite runs it)
    python -m benchmarks --only training --out /tmp/results

Writes <out>/<device>-<date>.json (everything, with the software versions) and .md (one table per section).
Every ratio compares providers measured in this same run; numbers from different runs or devices do not compare.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

SECTIONS = ("kernels", "training", "loaders")


def main(argv: list[str] | None = None) -> int:
    from benchmarks import kernels, loaders, training
    from benchmarks.common import environment, write_results

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and datasets (CPU smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="folder for the JSON and markdown")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--models", nargs="+", choices=list(training.FULL_CASES),
                        help="training section: a subset of the models (default: all)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    result = {**environment(device), "quick": args.quick, "command": " ".join(["python -m benchmarks", *(argv or sys.argv[1:])])}
    sections = []
    if device.type == "cpu":
        sections.append("No GPU: the fused ops run their CPU path, so these numbers check that everything runs; "
                        "they are not the project's speed.\n")
    for name in args.only:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        if name == "kernels":
            result[name] = kernels.run(args.quick, device)
            table = kernels.markdown_table(result[name])
        elif name == "training":
            result[name] = training.run(args.quick, device, args.models)
            table = training.markdown_table(result[name])
        else:
            options = loaders.parse_args([*(loaders.QUICK_ARGS if args.quick else []), "--device", args.device])
            result[name] = loaders.run(options)
            table = loaders.markdown_table(result[name])
        result[name]["seconds"] = time.perf_counter() - started
        sections.append(f"## {name.capitalize()}\n\n{table}")
    header = (f"# Benchmarks — {result['device']} — {result['date']}\n\n`{result['command']}`; torch {result['torch']}, "
              f"triton {result['triton']}, fused path: {result['fused_path']}.\n")
    markdown = "\n".join([header, *sections])
    print(markdown)
    write_results(args.out, "", result, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

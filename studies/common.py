"""What the CPU training-step studies share: their flags and the command line that reproduces a run."""

from __future__ import annotations

import argparse
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def model_step_parser(prog: str, description: str, batch_size: int, steps: int, out: str) -> argparse.ArgumentParser:
    """One CIFAR model, a batch, interleaved rounds of timed steps; results go to ``studies/results/<out>``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", choices=["resnet20", "vgg_small", "resnet18_cifar"])
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=steps, help="timed steps per round and path")
    parser.add_argument("--out", type=Path, default=RESULTS / out)
    return parser


def model_step_command(prog: str, args: argparse.Namespace) -> str:
    """The command line that reproduces a run of a `model_step_parser` study (everything but --out)."""
    return f"{prog} --model {args.model} --batch-size {args.batch_size} --rounds {args.rounds} --steps {args.steps}"

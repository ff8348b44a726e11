"""The flags both launchers share, and how given flags override a recipe: defined once for launch/*.py."""

from __future__ import annotations

import argparse

# config keys whose flags every launcher takes
RUN_KEYS = ("epochs", "batch_size", "accumulation_steps", "lr", "compile", "seed")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global: split evenly over the processes")
    parser.add_argument("--accumulation-steps", type=int,
                        help="micro-batches per process per optimizer step (global batch unchanged)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--seed", type=int)


def recipe_overrides(args: argparse.Namespace, keys: tuple[str, ...] = ()) -> dict:
    """The config values of the flags that were given (a flag left out keeps the recipe's value)."""
    return {key: getattr(args, key) for key in (*RUN_KEYS, *keys) if getattr(args, key) is not None}

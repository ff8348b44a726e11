"""Train an SD-BNN (or its twin) on scikit-learn's real digits, offline, on CPU or GPU.

    python launch/digits.py --model resnet20 --epochs 15

Writes <output-dir>/metrics.jsonl (one line per epoch) and <output-dir>/model.safetensors (atomically).
The full CIFAR / ImageNet launchers (accelerate) build on the same library.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import sdbnn
from sdbnn.checkpoints import atomic_write
from sdbnn.engine import fit_classifier
from sdbnn.pipelines import load_digits_split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20", help=f"one of: {', '.join(sdbnn.list_models())}")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.11)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--t-min", type=float, default=1e-3, help="EDE schedule start temperature (Tmax = 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output-dir", type=Path, default=Path("runs/digits"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    try:
        model = sdbnn.create_model(args.model).to(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    data = load_digits_split(seed=args.seed)
    to_device = lambda tensor: tensor.to(args.device)  # noqa: E731
    print(
        f"{args.model}: {sum(p.numel() for p in model.parameters()):,} parameters; digits "
        f"{len(data.train_labels)} train / {len(data.val_labels)} held out; device {args.device}"
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    metrics_lines = []

    def report(record) -> None:
        metrics_lines.append(json.dumps(record.as_dict()))
        print(
            f"epoch {record.epoch + 1:3d}/{args.epochs}  lr {record.lr:.4f}  t {record.t:.3g}  "
            f"train loss {record.train_loss:.3f} acc {record.train_accuracy:.3f}  "
            f"held-out acc {record.val_accuracy:.3f}  ({record.seconds:.1f}s)",
            flush=True,
        )
        atomic_write(args.output_dir / "metrics.jsonl", lambda tmp: tmp.write_text("\n".join(metrics_lines) + "\n"))

    started = time.perf_counter()
    history = fit_classifier(
        model,
        to_device(data.train_images),
        to_device(data.train_labels),
        to_device(data.val_images),
        to_device(data.val_labels),
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        t_min=args.t_min,
        seed=args.seed,
        on_epoch=report,
    )
    sdbnn.save_weights(model, args.output_dir / "model.safetensors")
    best = max(history, key=lambda record: record.val_accuracy)
    print(
        f"final held-out accuracy {history[-1].val_accuracy:.3f} (best {best.val_accuracy:.3f} at epoch "
        f"{best.epoch + 1}); {time.perf_counter() - started:.0f}s; wrote {args.output_dir}/"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

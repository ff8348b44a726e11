"""ONNX against PyTorch on a trained model's whole held-out set: the numbers the README's ONNX paragraph quotes.

    python -m studies.onnx_agreement                        # trains the demo's digits run first
    python -m studies.onnx_agreement --run runs/my_run --out /tmp/onnx   # a finished run whose data is here

Without --run it trains ResNet-20 on the bundled digits with the demo's recipe (launch/demo.sh: 15 epochs, batch 64,
--t-cap 1; seed 0, one thread) into a scratch folder. It exports the run as ``python -m sdbnn.export --format onnx``
does and runs `sdbnn.deploy.onnx_export.agreement` on every held-out image, with onnxruntime's graph optimisations
off (what the export command checks) and on (onnxruntime's default). Writes
onnx-agreement-<dataset>-<epochs>ep-<device>-<date>.{json,md} to ``--out`` (default ``studies/results/onnx-agreement``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import environment, result_stem, write_named_results
from studies.common import RESULTS

DEMO_FLAGS = ["--model", "resnet20", "--dataset", "digits", "--batch-size", "64", "--t-cap", "1"]


def train_demo(directory: Path, epochs: int, seed: int) -> None:
    from sdbnn.engine import cli

    if cli.cifar_main([*DEMO_FLAGS, "--epochs", str(epochs), "--seed", str(seed), "--output-dir", str(directory)]):
        raise RuntimeError("training the digits run failed (see its error above)")


def held_out_images(config) -> torch.Tensor:
    """Every held-out image of the run's dataset, preprocessed as the run evaluated it."""
    from sdbnn.pipelines.loaders import build_loaders

    _, held_out = build_loaders(config, 0, 1, "cpu")
    return torch.cat([images.float() for images, _ in held_out]).contiguous()


def measure(run_dir: Path, scratch: Path) -> dict:
    from sdbnn.deploy import cost, onnx_export
    from sdbnn.engine.runs import Run

    run = Run(run_dir)
    config, model, summary = run.config(), run.model(), run.summary()
    path = onnx_export.export_onnx(model, scratch / "model.onnx", cost.run_input_size(config))
    images = held_out_images(config)
    return {
        "run": {"model": config.model, "dataset": config.dataset, "epochs": config.epochs, "seed": config.seed,
                "t_cap": config.t_cap, "final_top1": summary["final"]["val_top1"],
                "best_top1": summary["best"]["val_top1"]},
        "optimizations_off": onnx_export.agreement(path, model, images),
        "optimizations_on": onnx_export.agreement(path, model, images, optimize_graph=True),
    }


def markdown(result: dict) -> str:
    run = result["run"]
    lines = [
        f"# ONNX vs PyTorch — {run['model']} on {run['dataset']}, {result['device']}, {result['date']}",
        "",
        f"`{result['command']}`; commit {result['environment']['commit']}. The run: {run['epochs']} epochs, seed "
        f"{run['seed']}, t_cap {run['t_cap']}; held-out top-1 {100 * run['final_top1']:.1f}% (final), "
        f"{100 * run['best_top1']:.1f}% (best).",
        "",
        "*decided*: every binarized value x + shift of the image lies farther than the margin from 0 in PyTorch "
        "(fp32); elsewhere the two runtimes' last-bit differences may pick the other sign.",
        "",
        "| onnxruntime graph optimisations | images | top-1 agrees | decided images | max logit difference, decided "
        "(relative) | max logit difference, all | images over the tolerance | check |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("optimizations_off", "off (sdbnn's check)"), ("optimizations_on", "on (default)")):
        item = result[key]
        decided, relative = item["max_logit_difference_decided"], item["max_relative_difference_decided"]
        worst = "—" if decided is None else f"{decided:.2g} ({relative:.2g})"
        lines.append(f"| {label} | {item['images']} | {item['top1_agreement']} | {item['decided_images']} "
                     f"(margin {item['decided_margin']:g}) | {worst} | {item['max_logit_difference']:.2g} "
                     f"| {item['images_over_tolerance']} (relative {item['logit_rtol']:g}) "
                     f"| {'passed' if item['passed'] else 'FAILED'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies.onnx_agreement", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a finished run directory (default: train the demo's digits run)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the digits run trained without --run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the digits run trained without --run")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: the run is reproducible)")
    parser.add_argument("--out", type=Path, default=RESULTS / "onnx-agreement", help="folder for the JSON and markdown")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run
        if run_dir is None:
            run_dir = Path(scratch) / "digits_demo"
            train_demo(run_dir, args.epochs, args.seed)
        try:
            measured = measure(run_dir, Path(scratch))
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    command = " ".join(["python -m studies.onnx_agreement", *(sys.argv[1:] if argv is None else argv)])
    result = {**environment(torch.device("cpu")), "command": command, **measured}
    run = result["run"]
    stem = result_stem(f"onnx-agreement-{run['dataset']}-{run['epochs']}ep", result)
    path = write_named_results(args.out, stem, result, markdown(result))
    print(markdown(result) + f"\nwrote {path} and .md")
    return 0 if result["optimizations_off"]["passed"] else 1  # what sdbnn checks; the default is only measured


if __name__ == "__main__":
    sys.exit(main())

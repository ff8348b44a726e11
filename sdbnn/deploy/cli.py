"""The deployment command lines, on registered models and on finished run directories (read by
`sdbnn.engine.runs`):

    python -m sdbnn.summary resnet20 runs/my_run --json                 # cost tables (summary_main)
    python -m sdbnn.export runs/my_run model.sdbnn.safetensors          # packed; reloaded and checked (export_main)
    python -m sdbnn.export runs/my_run model.onnx --format onnx --report check.json   # ONNX; checked with onnxruntime

Both print one clear error and exit 1 for a bad target; the export exits 1 when its own check of the written file
fails (packed: the reloaded logits differ; ONNX: see `sdbnn.deploy.onnx_export.agreement`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from sdbnn.deploy import cost, onnx_export
from sdbnn.deploy.cost_table import ModelSummary, markdown_table
from sdbnn.deploy.packed import export_packed, load_packed
from sdbnn.engine.runs import WEIGHTS, Run
from sdbnn.io import atomic_write

CHECK_IMAGES = 32  # random images the export's check runs through both sides


def _input_size(values: Sequence[int] | None):
    """--input-size: one side or C H W (None: the model's or run's own)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def summary_of_run(run_dir: str | Path, input_size: int | Sequence[int] | None = None) -> ModelSummary:
    """Summary of a finished run: the model of its config.yaml (loaded from its model.safetensors, which checks
    that they fit), against its twin built with the same number of classes, at the run's evaluation input size
    unless ``input_size`` is given."""
    run = Run(run_dir)
    return cost.run_summary(run.model(), run.config(), input_size)


def summary_main(argv: Sequence[str] | None = None) -> int:
    from sdbnn.models import list_models

    parser = argparse.ArgumentParser(
        prog="python -m sdbnn.summary",
        description="Per-layer binary/real parameters, BOPs, FLOPs, OPs and size of models or finished runs.",
    )
    parser.add_argument("targets", nargs="+", metavar="MODEL_OR_RUN_DIR",
                        help=f"model names ({', '.join(list_models())}) or run directories")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="N",
                        help="C H W, or one side (default: 224 for ImageNet models and runs, else 32)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print rows and totals as JSON")
    output.add_argument("--markdown", action="store_true", help="print one Markdown table row per target")
    parser.add_argument("--all-rows", action="store_true", help="also list modules that hold and do nothing")
    args = parser.parse_args(argv)
    input_size = _input_size(args.input_size)
    results = []
    try:
        for target in args.targets:
            if Path(target).is_dir():
                results.append(summary_of_run(target, input_size))
            elif target in list_models():
                results.append(cost.summary(target, input_size))
            else:
                raise ValueError(f"{target!r} is neither a run directory nor a model name ({', '.join(list_models())})")
    except (FileNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.markdown:
        print(markdown_table(results))
    elif args.json:
        documents = [result.to_dict() for result in results]
        print(json.dumps(documents[0] if len(documents) == 1 else documents, indent=2))
    else:
        print("\n\n".join(result.table(all_rows=args.all_rows) for result in results))
    return 0


def _export_packed(run: Run, model, config, out: Path, images: torch.Tensor) -> dict:
    from sdbnn.ops import backend

    export_packed(model, out, config)
    with torch.no_grad(), backend("reference"):
        expected, reloaded = model(images), load_packed(out)(images)
    trained_size, size = (run.directory / WEIGHTS).stat().st_size, out.stat().st_size
    print(f"wrote {out}: {size:,} bytes, 1/{trained_size / size:.1f} of {WEIGHTS} ({trained_size:,} bytes)")
    exact = torch.equal(reloaded, expected)
    print("reloaded logits " + ("equal the trained model's exactly" if exact
                                else f"DIFFER (max {(reloaded - expected).abs().max().item():.3g})"))
    return {"bytes": size, "trained_bytes": trained_size, "images": len(images), "reloaded_logits_equal": exact,
            "passed": exact}


def _export_onnx(model, out: Path, input_size, images: torch.Tensor) -> dict:
    onnx_export.export_onnx(model, out, input_size)
    op_types = sorted(onnx_export.onnx_op_types(out))
    print(f"wrote {out}: {out.stat().st_size:,} bytes; ops: {', '.join(op_types)}")
    try:
        result = onnx_export.agreement(out, model, images)
    except ImportError:
        print("onnxruntime is not installed (pip install 'sdbnn[deploy]'): the graph was not run")
        return {"bytes": out.stat().st_size, "op_types": op_types, "checked": False, "passed": True}
    print(onnx_export.describe_agreement(result))
    return {"bytes": out.stat().st_size, "op_types": op_types, "checked": True, **result}


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdbnn.export",
        description="Export a finished run (config.yaml + model.safetensors) as a 1-bit packed file or as ONNX, then "
                    "check the file: the packed one reloaded (logits equal exactly), the ONNX one run by onnxruntime "
                    "if installed. Exits 1 when the check fails.",
    )
    parser.add_argument("run_dir", help="run directory with config.yaml and model.safetensors")
    parser.add_argument("out", help="output file (packed: e.g. model.sdbnn.safetensors; onnx: model.onnx)")
    parser.add_argument("--format", choices=("packed", "onnx"), default="packed")
    parser.add_argument("--input-size", type=int, nargs="+", metavar="N",
                        help="input of the export and of the check batch: C H W or one side "
                             "(default: 224 for ImageNet runs, else 32)")
    parser.add_argument("--check-images", type=int, default=CHECK_IMAGES, metavar="N",
                        help=f"random images of the check (default {CHECK_IMAGES})")
    parser.add_argument("--report", type=Path, metavar="FILE", help="also write the check's numbers as JSON")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 1
    if args.check_images < 1:
        print("error: --check-images must be at least 1", file=sys.stderr)
        return 1
    try:
        run = Run(args.run_dir)
        config, model = run.config(), run.model()
        given = _input_size(args.input_size)
        input_size = cost.input_shape(given) if given is not None else cost.run_input_size(config)
        images = torch.randn(args.check_images, *input_size, generator=torch.Generator().manual_seed(0))
        if args.format == "packed":
            result = _export_packed(run, model, config, out, images)
        else:
            result = _export_onnx(model, out, input_size, images)
    except (FileNotFoundError, ValueError) as error:  # CheckpointError is a ValueError
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # the ONNX exporter's own packages
        print(f"error: {error.name or error} is missing: pip install 'sdbnn[deploy]'", file=sys.stderr)
        return 1
    if args.report:
        report = {"run": str(run.directory), "out": str(out), "format": args.format,
                  "input_size": list(input_size), **result}
        atomic_write(args.report, lambda tmp: tmp.write_text(json.dumps(report, indent=2) + "\n"))
    return 0 if result["passed"] else 1

"""Train an SD-BNN on CIFAR (or a small real dataset) with the paper's recipe.

    accelerate launch launch/cifar.py --model resnet20 --data-dir ~/data          # SPEC §4 recipe, one GPU
    accelerate launch launch/cifar.py --model resnet20 --dataset digits --epochs 15 --batch-size 64

With no flags beyond --model the recipe is the paper's (launch/configs/cifar10_<model>.yaml); flags override it.
Writes <output-dir>/{config.yaml, metrics.jsonl, metrics.csv, training_curve.png, checkpoint.pt,
model.safetensors, summary.json}; --resume continues a run exactly from its last epoch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe_flags import add_run_flags, recipe_overrides

CONFIGS = Path(__file__).resolve().parent / "configs"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--recipe", type=Path, help="YAML recipe (default: launch/configs/cifar10_<model>.yaml)")
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", choices=["cifar10", "cifar100", "imagefolder", "digits", "mnist5k"])
    add_run_flags(parser)
    parser.add_argument("--t-min", type=float)
    parser.add_argument("--no-asd", action="store_true", help="ablation: no activation self-distribution")
    parser.add_argument("--static-asd", action="store_true", help="ablation: one learnable shift per channel")
    parser.add_argument("--no-wsd", action="store_true", help="ablation: no weight self-distribution")
    parser.add_argument("--backend", choices=["ops", "reference"])
    parser.add_argument("--output-dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--stop-after-epoch", type=int, help="end this invocation after N epochs (resume later)")
    return parser.parse_args(argv)


def build_config(args):
    from sdbnn.engine.config import TrainConfig, load_recipe

    recipe = args.recipe or CONFIGS / f"cifar10_{args.model}.yaml"
    values = load_recipe(recipe) if (args.recipe or recipe.is_file()) else {"model": args.model}
    values["model"] = args.model
    values.update(recipe_overrides(args, ("data_dir", "dataset", "t_min", "backend", "output_dir")))
    options = dict(values.get("model_options") or {})
    if args.no_asd and args.static_asd:
        raise ValueError("--no-asd and --static-asd exclude each other")
    if args.no_asd or args.static_asd:
        options["asd"] = "off" if args.no_asd else "static"
    if args.no_wsd:
        options["wsd"] = False
    values["model_options"] = options
    values.setdefault("output_dir", f"runs/{values.get('dataset', 'cifar10')}_{args.model}")
    return TrainConfig.from_dict(values)


def main(argv=None) -> int:
    args = parse_args(argv)
    import sdbnn
    from sdbnn.engine.trainer import Trainer

    try:
        config = build_config(args)
        sdbnn.models.model_spec(config.model)  # an unknown model fails before anything starts
        trainer = Trainer(config, resume=args.resume, stop_after_epoch=args.stop_after_epoch)
        summary = trainer.fit()
    except (ValueError, FileNotFoundError, FileExistsError, sdbnn.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if trainer.main and "best" in summary:
        best = summary["best"]
        print(f"final top-1 {summary['final'].get('val_top1', float('nan')):.4f}; best top-1 {best.get('val_top1', float('nan')):.4f} "
              f"(epoch {best.get('epoch', -1) + 1}); full held-out set")
    return 0


if __name__ == "__main__":
    sys.exit(main())

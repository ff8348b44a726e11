"""Reproduce one row of the paper (docs/method.md §Published results): train its recipe, then print achieved vs published accuracy.

    python launch/reproduce.py --list                                      # rows, recipes, published numbers
    accelerate launch launch/reproduce.py cifar10_resnet20 --data-dir ~/data
    accelerate launch --multi_gpu --num_processes 2 launch/reproduce.py imagenet_stage2 \\
        --data-dir ~/imagenet --teacher-weights resnet34.pth               # runs stage 1, then stage 2
    python launch/reproduce.py cifar10_resnet20 --compare runs/cifar10_resnet20   # a finished run; no training

A row is a recipe in launch/configs/ with a ``paper`` block. Arguments after the row go to its launcher
(launch/cifar.py or launch/imagenet.py) unchanged, e.g. --resume or --output-dir. The comparison shows top-1 (and
top-5 where published) at the final and at the best epoch, scored on the whole held-out set, warns when the run's
setup differs from the recipe, and is saved as <run>/reproduction.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdbnn.engine import cli
from sdbnn.engine.config import TrainConfig, load_paper_result, load_recipe
from sdbnn.engine.runs import Run
from sdbnn.io import atomic_write

# the recipe keys that define a paper row's setup; a run that changes one is not the paper's experiment
SETUP_KEYS = ("model", "dataset", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "lr_schedule", "t_min",
              "model_options", "teacher", "kd_temperature", "kd_alpha", "max_images", "t_cap")


def rows() -> dict[str, dict]:
    """recipe name -> its paper block, for every recipe that records one."""
    found = {}
    for recipe in sorted(cli.RECIPES.glob("*.yaml")):
        paper = load_paper_result(recipe)
        if paper:
            found[recipe.stem] = paper
    return found


def launcher_call(row: str, launcher_args: list[str]) -> tuple:
    """(launcher main, its argv, the run directory it writes)."""
    recipe = cli.recipe_path(row)
    if row.startswith("imagenet_stage"):
        argv = ["--stage", "1" if row == "imagenet_stage1" else "both", *launcher_args]
        configs, _ = cli.imagenet_configs(argv)
        return cli.imagenet_main, argv, Path(configs[-1].output_dir)
    argv = ["--model", load_recipe(recipe)["model"], "--recipe", str(recipe), *launcher_args]
    return cli.cifar_main, argv, Path(cli.cifar_config(argv)[0].output_dir)


def compare(row: str, run_dir: Path) -> dict:
    """Achieved vs published for a finished run; printed and saved as <run_dir>/reproduction.json."""
    run = Run(run_dir)
    if not run.finished:
        raise FileNotFoundError(f"{run_dir} holds no finished run (no summary.json)")
    paper = rows()[row]
    summary, config = run.summary(), run.config_values()
    recipe = load_recipe(cli.recipe_path(row))
    # a key the recipe leaves out means the default (max_images: the whole dataset)
    defaults = TrainConfig()
    differences = {key: {"run": config.get(key), "recipe": recipe.get(key, getattr(defaults, key))}
                   for key in SETUP_KEYS if config.get(key) != recipe.get(key, getattr(defaults, key))}
    result = {"row": paper["row"], "recipe": row, "run": str(run_dir), "paper": paper, "differs_from_recipe": differences}
    lines = [f"{paper['row']} — {run_dir} ({config['model']} on {config['dataset']}, {config['epochs']} epochs)",
             f"{'':14}{'achieved':>10}{'paper':>8}{'difference':>12}"]
    for which in ("final", "best"):
        record = summary[which]
        result[which] = {"epoch": record.get("epoch")}
        for metric in ("top1", "top5"):
            achieved = 100 * record[f"val_{metric}"]
            result[which][metric] = achieved
            published = paper.get(metric)
            shown = f"{published:8.1f}{achieved - published:+12.2f}" if published is not None else f"{'—':>8}"
            lines.append(f"{which + ' ' + metric.replace('top', 'top-'):14}{achieved:10.2f}{shown}"
                         + (f"   (epoch {record['epoch'] + 1})" if metric == "top1" else ""))
    lines.append(f"the paper reports its {paper.get('epoch', 'final')} epoch"
                 + (f"; IR-Net, same code base: {paper['irnet_top1']}" if paper.get("irnet_top1") else ""))
    if differences:
        changed = ", ".join(f"{key} {d['run']} (recipe {d['recipe']})" for key, d in differences.items())
        lines.append(f"warning: this run is not the paper's setup: {changed}")
    print("\n".join(lines))
    atomic_write(run_dir / "reproduction.json", lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    return result


def main(argv=None) -> int:
    # no abbreviations: every flag this parser does not own passes to the launcher as typed
    parser = argparse.ArgumentParser(prog="launch/reproduce.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("row", nargs="?", help="a recipe name from --list, e.g. cifar10_resnet20")
    parser.add_argument("--list", action="store_true", help="list the paper's rows and their recipes")
    parser.add_argument("--compare", type=Path, metavar="RUN_DIR", help="compare a finished run; do not train")
    args, launcher_args = parser.parse_known_args(argv)
    known = rows()
    if args.list or not args.row:
        print(f"{'recipe':26}{'row':42}{'top-1':>7}{'top-5':>7}")
        for name, paper in known.items():
            top5 = paper.get("top5")
            print(f"{name:26}{paper['row']:42}{paper['top1']:7.1f}{'' if top5 is None else f'{top5:7.1f}'}")
        return 0 if args.list else 2
    try:
        if args.row not in known:
            raise ValueError(f"unknown row {args.row!r}; choose one of {', '.join(known)}")
        if args.compare:
            compare(args.row, args.compare)
            return 0
        launcher, launcher_argv, run_dir = launcher_call(args.row, launcher_args)
        status = launcher(launcher_argv)
        if status != 0:
            return status
        from accelerate import PartialState

        if PartialState().is_main_process:
            compare(args.row, run_dir)
    except cli.USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

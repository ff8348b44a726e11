"""The launchers' logic: flags derived from the config declarations, recipes, and the two training commands.

``launch/cifar.py`` and ``launch/imagenet.py`` only call `cifar_main` / `imagenet_main`. Every config key's flag
comes from its declaration in `sdbnn.engine.config.TrainConfig` (name, type, choices, help): a key is declared
once. A flag that is given overrides the recipe; a flag left out keeps the recipe's value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbnn.checkpoints import CheckpointError
from sdbnn.layers import ASD_MODES
from sdbnn.engine.config import CIFAR, IMAGENET, TrainConfig, config_fields, field_type, load_recipe
from sdbnn.engine.preemption import REQUEUE_EXIT_CODE, Preempted
from sdbnn.engine.run_lock import RunDirectoryInUse

RECIPES = Path(__file__).resolve().parents[2] / "launch" / "configs"
# what a launcher reports in one line (exit status 2): bad flags, recipes, paths, checkpoints, missing packages, a
# run directory another live run holds
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, ImportError, CheckpointError, RunDirectoryInUse)

# model_options keys with flags of their own (CIFAR launcher), and shorthand flags for common values
MODEL_OPTION_FLAGS = {
    "asd": {"choices": ASD_MODES, "help": "activation self-distribution: the dynamic SE gate "
            "(SD-BNN), one learned shift per channel (ablation), or off"},
    "wsd": {"type": bool, "help": "weight self-distribution"},
}
SHORTHANDS = {  # flag -> (model option, value)
    "--no-asd": ("asd", "off"),
    "--static-asd": ("asd", "static"),
}
# flags that steer one invocation and are not part of a run's configuration
RUN_CONTROL = {
    CIFAR: ("--recipe", "--resume", "--stop-after-epoch"),
    IMAGENET: ("--stage", "--resume", "--no-teacher"),
}


def flag_of(key: str) -> str:
    return "--" + key.replace("_", "-")


def recipe_path(name: str) -> Path:
    """A recipe of launch/configs by name (e.g. ``cifar10_resnet20``)."""
    if not RECIPES.is_dir():
        raise FileNotFoundError(f"the recipes folder {RECIPES} is missing: run from the sdbnn source tree")
    return RECIPES / f"{name}.yaml"


def add_config_flags(parser: argparse.ArgumentParser, launcher: str) -> dict[str, str]:
    """Add a flag for every config key this launcher offers; returns {flag: config key}."""
    flags = {}
    for item in config_fields():
        if launcher not in item.metadata["launchers"]:
            continue
        kind, name = field_type(item), flag_of(item.name)
        help_text = item.metadata["help"]
        options = {"dest": item.name, "default": None, "help": help_text}
        if kind is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, **options)
            flags[name.replace("--", "--no-", 1)] = item.name
        elif kind is list:
            metavar = item.metadata["metavar"]
            parser.add_argument(name, type=int, nargs=len(metavar), metavar=metavar, **options)
        else:
            parser.add_argument(name, type=kind, choices=item.metadata["choices"], **options)
        flags[name] = item.name
    return flags


def add_model_option_flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """--asd MODE, --wsd/--no-wsd and the shorthands; returns {flag: "model_options.<key>"}."""
    flags = {}
    for key, spec in MODEL_OPTION_FLAGS.items():
        name = flag_of(key)
        if spec.get("type") is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, dest=f"option_{key}", default=None,
                                help=spec["help"])
            flags[name.replace("--", "--no-", 1)] = f"model_options.{key}"
        else:
            parser.add_argument(name, choices=spec["choices"], dest=f"option_{key}", default=None, help=spec["help"])
        flags[name] = f"model_options.{key}"
    for name, (key, value) in SHORTHANDS.items():
        parser.add_argument(name, action="store_const", const=value, dest=f"shorthand_{name[2:].replace('-', '_')}",
                            help=f"same as {flag_of(key)} {value}")
        flags[name] = f"model_options.{key}"
    return flags


def given_values(args: argparse.Namespace, flags: dict[str, str]) -> dict:
    """The config values of the flags that were given, model options gathered under ``model_options``."""
    values, options = {}, {}
    for key in set(flags.values()):
        if key.startswith("model_options."):
            continue
        if getattr(args, key, None) is not None:
            values[key] = getattr(args, key)
    for key in MODEL_OPTION_FLAGS:
        chosen = {name: value for name, value in vars(args).items() if value is not None
                  and (name == f"option_{key}" or (name.startswith("shorthand_")
                                                   and SHORTHANDS["--" + name[10:].replace("_", "-")][0] == key))}
        if len(set(chosen.values())) > 1:
            given = ", ".join(flag_of(name.split("_", 1)[1]) for name in chosen)
            raise ValueError(f"{given} contradict each other")
        if chosen:
            options[key] = next(iter(chosen.values()))
    if options:
        values["model_options"] = options
    return values


def merge(recipe: dict, given: dict) -> dict:
    values = {**recipe, **{key: value for key, value in given.items() if key != "model_options"}}
    values["model_options"] = {**(recipe.get("model_options") or {}), **given.get("model_options", {})}
    return values


RESUME_HELP = ("continue the run in --output-dir from its newest checkpoint, or start it there if it has none; a "
               "finished run is reported and left as it is (exit 0). Without --resume an existing run is never touched")


# --- CIFAR launcher -------------------------------------------------------------------------------------------

CIFAR_DESCRIPTION = """Train an SD-BNN on CIFAR (or a small real dataset) with the paper's recipe.

    accelerate launch launch/cifar.py --model resnet20 --data-dir ~/data          # the paper's recipe, one GPU
    accelerate launch launch/cifar.py --model resnet20 --dataset digits --epochs 15 --batch-size 64

With no flags beyond --model the recipe is the paper's (launch/configs/cifar10_<model>.yaml); flags override it.
Writes <output-dir>/{config.yaml, metrics.jsonl, metrics.csv, training_curve.png, checkpoint.pt,
model.safetensors, summary.json}. SIGTERM or SIGUSR1 stop it at the next step with a checkpoint and exit code 75;
the same command with --resume continues exactly, so it can simply be run again (docs/clusters.md).
"""


def cifar_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="launch/cifar.py", description=CIFAR_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, help="YAML recipe (default: launch/configs/cifar10_<model>.yaml)")
    parser.add_argument("--resume", action="store_true", help=RESUME_HELP)
    parser.add_argument("--stop-after-epoch", type=int, help="end this invocation after N epochs (resume later)")
    flags = add_config_flags(parser, CIFAR)
    flags.update(add_model_option_flags(parser))
    return parser, flags


def cifar_config(argv: list[str] | None = None) -> tuple[TrainConfig, argparse.Namespace]:
    """The resolved config of a CIFAR launcher command line, and its parsed arguments."""
    parser, flags = cifar_parser()
    args = parser.parse_args(argv)
    given = given_values(args, flags)
    model = given.get("model")
    recipe = args.recipe or recipe_path(f"cifar10_{model or TrainConfig.model}")
    values = load_recipe(recipe) if (args.recipe or recipe.is_file()) else {}
    if model:
        values["model"] = model
    values = merge(values, given)
    values.setdefault("output_dir", f"runs/{values.get('dataset', TrainConfig.dataset)}_"
                                    f"{values.get('model', TrainConfig.model)}")
    return TrainConfig.from_dict(values), args


def cifar_main(argv: list[str] | None = None) -> int:
    try:
        config, args = cifar_config(argv)
        summary, main_process = train(config, resume=args.resume, stop_after_epoch=args.stop_after_epoch)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Preempted:  # the Trainer said where it stopped
        return REQUEUE_EXIT_CODE
    if main_process and "best" in summary:
        final, best = summary["final"], summary["best"]
        print(f"final top-1 {final.get('val_top1', float('nan')):.4f}; best top-1 "
              f"{best.get('val_top1', float('nan')):.4f} (epoch {best.get('epoch', -1) + 1}); full held-out set")
    return 0


# --- ImageNet launcher ----------------------------------------------------------------------------------------

IMAGENET_DESCRIPTION = """Two-stage ImageNet training of the Bi-Real SD-BNN ResNet-18 with distillation from ResNet-34.

    accelerate launch --multi_gpu --num_processes 2 launch/imagenet.py --data-dir ~/imagenet \\
        --teacher-weights resnet34.pth --stage both

--data-dir holds train/ and val/ (ImageFolder) or train.beton and val.beton (FFCV). Stage 1 (W32/A1) writes
<output-dir>/stage1; stage 2 (W1/A1, WSD on) starts from stage 1's weights and writes <output-dir>/stage2.
With --resume the same command continues where it stopped: finished stages are skipped, the unfinished one resumes
from its newest checkpoint (mid-epoch ones every --checkpoint-every-min minutes). The recipes distill from a
ResNet-34: give its weights (--teacher-weights), or --no-teacher to train with cross-entropy.
"""
IMAGENET_OUTPUT = "runs/imagenet"


def imagenet_parser() -> tuple[argparse.ArgumentParser, dict[str, str]]:
    parser = argparse.ArgumentParser(prog="launch/imagenet.py", description=IMAGENET_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["1", "2", "both"], default="both", help="which stage(s) to train")
    parser.add_argument("--resume", action="store_true", help=RESUME_HELP + " (per stage)")
    parser.add_argument("--no-teacher", action="store_true",
                        help="no distillation: train with cross-entropy (ablations; the paper distills)")
    flags = add_config_flags(parser, IMAGENET)
    return parser, flags


def imagenet_stage_config(stage: int, args: argparse.Namespace, flags: dict[str, str]) -> TrainConfig:
    values = merge(load_recipe(recipe_path(f"imagenet_stage{stage}")), given_values(args, flags))
    if args.no_teacher:
        values.update(teacher=None, teacher_weights=None)
    if "data_dir" not in values:
        raise ValueError("--data-dir is required (train/ and val/, or train.beton and val.beton)")
    root = Path(values.get("output_dir") or IMAGENET_OUTPUT)
    values["output_dir"] = str(root / f"stage{stage}")
    if stage == 2:
        values["init_from"] = str(root / "stage1" / "model.safetensors")
    return TrainConfig.from_dict(values)


def imagenet_configs(argv: list[str] | None = None) -> tuple[list[TrainConfig], argparse.Namespace]:
    parser, flags = imagenet_parser()
    args = parser.parse_args(argv)
    stages = [1, 2] if args.stage == "both" else [int(args.stage)]
    return [imagenet_stage_config(stage, args, flags) for stage in stages], args


def imagenet_main(argv: list[str] | None = None) -> int:
    try:
        configs, args = imagenet_configs(argv)
        for config in configs:  # a stage's problems are reported before any stage starts
            config.check_runnable()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for config in configs:
        stage = Path(config.output_dir).name
        try:
            if config.init_from and not Path(config.init_from).is_file():
                raise FileNotFoundError(f"stage 2 starts from stage 1's weights, {config.init_from}: "
                                        "run --stage 1 first")
            summary, main_process = train(config, resume=args.resume)
        except USER_ERRORS as error:
            print(f"error: {stage}: {error}", file=sys.stderr)
            return 2
        except Preempted:
            return REQUEUE_EXIT_CODE
        if main_process:
            final, best = summary["final"], summary["best"]
            print(f"{stage}: final top-1 {final['val_top1']:.4f} top-5 {final['val_top5']:.4f}; "
                  f"best top-1 {best['val_top1']:.4f} (epoch {best['epoch'] + 1})")
    return 0


# --- shared ---------------------------------------------------------------------------------------------------


def train(config: TrainConfig, *, resume: bool = False, stop_after_epoch: int | None = None) -> tuple[dict, bool]:
    """Train one config with the Trainer; (its summary, whether this is the main process)."""
    import sdbnn
    from sdbnn.engine.trainer import Trainer

    config.check_runnable()
    sdbnn.models.model_spec(config.model)  # an unknown model fails before anything starts
    trainer = Trainer(config, resume=resume, stop_after_epoch=stop_after_epoch)
    return trainer.fit(), trainer.main

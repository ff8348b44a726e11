"""Two-stage ImageNet training of the Bi-Real SD-BNN ResNet-18 with distillation from a ResNet-34 teacher.

    accelerate launch --multi_gpu --num_processes 2 launch/imagenet.py --data-dir ~/imagenet \\
        --teacher-weights resnet34.pth --stage both

--data-dir holds train/ and val/ (ImageFolder) or train.beton and val.beton (FFCV). Stage 1 (W32/A1) writes
<output-dir>/stage1; stage 2 (W1/A1, WSD on) starts from stage 1's weights and writes <output-dir>/stage2.
Each stage is resumable (--resume continues the stage that has a checkpoint and no final weights).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recipe_flags import add_run_flags, recipe_overrides

CONFIGS = Path(__file__).resolve().parent / "configs"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--stage", choices=["1", "2", "both"], default="both")
    parser.add_argument("--teacher-weights", help="ResNet-34 state dict file ('torchvision' downloads, online only)")
    add_run_flags(parser)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--kd-temperature", type=float)
    parser.add_argument("--kd-alpha", type=float)
    parser.add_argument("--output-dir", default="runs/imagenet")
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def stage_config(stage: int, args):
    from sdbnn.engine.config import TrainConfig, load_recipe

    values = load_recipe(CONFIGS / f"imagenet_stage{stage}.yaml")
    values.update(recipe_overrides(
        args, ("data_dir", "resolution", "workers", "kd_temperature", "kd_alpha", "teacher_weights")))
    values["output_dir"] = str(Path(args.output_dir) / f"stage{stage}")
    if stage == 2:
        values["init_from"] = str(Path(args.output_dir) / "stage1" / "model.safetensors")
    return TrainConfig.from_dict(values)


def main(argv=None) -> int:
    args = parse_args(argv)
    import sdbnn
    from sdbnn.engine.trainer import Trainer

    stages = [1, 2] if args.stage == "both" else [int(args.stage)]
    for stage in stages:
        try:
            config = stage_config(stage, args)
            finished = (Path(config.output_dir) / "model.safetensors").is_file()
            if args.resume and finished:
                print(f"stage {stage} already finished in {config.output_dir}")
                continue
            if stage == 2 and not Path(config.init_from).is_file():
                raise FileNotFoundError(f"stage 2 starts from stage 1's weights, {config.init_from}: run --stage 1 first")
            resume = args.resume and (Path(config.output_dir) / "checkpoint.pt").is_file()
            trainer = Trainer(config, resume=resume)
            summary = trainer.fit()
        except (ValueError, FileNotFoundError, FileExistsError, ImportError, sdbnn.CheckpointError) as error:
            print(f"error: stage {stage}: {error}", file=sys.stderr)
            return 2
        if trainer.main:
            final, best = summary["final"], summary["best"]
            print(f"stage {stage}: final top-1 {final['val_top1']:.4f} top-5 {final['val_top5']:.4f}; "
                  f"best top-1 {best['val_top1']:.4f} (epoch {best['epoch'] + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

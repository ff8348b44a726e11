"""Write a dataset to an FFCV .beton file.

    python -m sdbnn.pipelines.write ~/imagenet/train imagenet_train.beton --max-resolution 512 --mode smart
    python -m sdbnn.pipelines.write ~/data cifar10_train.beton --kind cifar10 --split train --mode raw
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdbnn.pipelines.ffcv_data import WRITE_MODES, write_beton


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdbnn.pipelines.write", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="an ImageFolder tree, or torchvision's CIFAR root (with --kind)")
    parser.add_argument("output", type=Path, help="the .beton file to write")
    parser.add_argument("--kind", choices=["imagefolder", "cifar10", "cifar100"], default="imagefolder")
    parser.add_argument("--split", choices=["train", "test"], default="train", help="CIFAR split")
    parser.add_argument("--mode", choices=WRITE_MODES, default="smart", help="raw: exact; jpg; smart: JPEG for large images")
    parser.add_argument("--max-resolution", type=int, default=None, help="longest side kept (default: as stored)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--workers", type=int, default=-1, help="writer processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        path = write_beton(
            args.source, args.output, kind=args.kind, train=args.split == "train", write_mode=args.mode,
            max_resolution=args.max_resolution, jpeg_quality=args.quality, workers=args.workers,
            overwrite=args.overwrite,
        )
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

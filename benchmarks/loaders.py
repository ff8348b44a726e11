"""Loader throughput: FFCV vs torchvision on the ImageNet train pipeline, device-resident vs torchvision for CIFAR.

    python -m benchmarks.loaders --json benchmarks/results/loaders-cpu.json

Both ImageNet pipelines do RandomResizedCrop(224, 0.08–1) + flip + PCA lighting + normalisation with the same number
of workers, on real JPEGs: foolbox's 20 ImageNet photos (~500 px) copied to ``--images`` files (or ``--data-dir``, an
ImageFolder of your own). CIFAR compares the device-resident loader with torchvision's CIFAR10 + DataLoader on
foolbox's 20 real CIFAR-10 images repeated to ``--cifar-images``. One warm-up epoch each (FFCV compiles its
pipeline then), then the median of timed epochs. Ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sdbnn.pipelines import DeviceResidentLoader, read_cifar
from sdbnn.pipelines.ffcv_data import FFCVImageLoader, ffcv_available, write_beton
from sdbnn.pipelines.loaders import cifar_torchvision_loader, imagenet_loader


def foolbox_data() -> Path | None:
    spec = importlib.util.find_spec("foolbox")
    return None if spec is None else Path(spec.submodule_search_locations[0]) / "data"


def synthetic_photos(root: Path, count: int = 20) -> list[Path]:
    """Stand-in JPEGs (smooth colour fields plus noise, 500×375) for machines without foolbox: speed only."""
    from PIL import Image

    generator = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    y, x = np.mgrid[0:375, 0:500]
    for index in range(count):
        phase = generator.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(x / (40 + 9 * index) + p) * np.cos(y / 55 + p) for p in phase], -1)
        pixels = np.clip(127 + 90 * field + generator.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        path = root / f"synthetic_{index:03d}_{index % 10}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def make_imagenet_folder(root: Path, count: int) -> Path:
    data = foolbox_data()
    photos = sorted(data.glob("imagenet_*.jpg")) if data else synthetic_photos(root.parent / "synthetic")
    for index in range(count):
        photo = photos[index % len(photos)]
        folder = root / photo.stem.split("_")[-1]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, folder / f"{index:06d}.jpg")
    return root


def make_cifar_root(root: Path, count: int) -> Path:
    from PIL import Image

    data = foolbox_data()
    if data:
        files = sorted(data.glob("cifar10_*.png"))
        images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1).reshape(-1) for f in files])
        labels = [int(f.stem.split("_")[-1]) for f in files]
    else:  # speed only: the loaders do the same work on any uint8 pixels
        images = np.random.default_rng(0).integers(0, 256, (20, 3 * 32 * 32), dtype=np.uint8)
        labels = [index % 10 for index in range(20)]
    repeat = -(-count // len(images))
    batch = {b"data": np.tile(images, (repeat, 1))[:count], b"labels": (labels * repeat)[:count]}
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle)
    return root


def images_per_second(loader, epochs: int) -> float:
    rates = []
    for epoch in range(epochs + 1):  # the first epoch warms up (workers start, FFCV compiles)
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        started, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += images.shape[0]
        if epoch > 0:
            rates.append(seen / (time.perf_counter() - started))
    return statistics.median(rates)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="an ImageFolder to use instead of copied foolbox photos")
    parser.add_argument("--images", type=int, default=2000, help="JPEG files to make from the 20 photos")
    parser.add_argument("--cifar-images", type=int, default=10000)
    parser.add_argument("--write-mode", default="proportion", help="FFCV image storage (default: FFCV's ImageNet recipe)")
    parser.add_argument("--max-resolution", type=int, default=500, help="longest side stored in the .beton")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args(argv)


QUICK_ARGS = ["--images", "64", "--cifar-images", "1024", "--epochs", "1", "--batch-size", "32",
              "--max-resolution", "256", "--workers", "2"]


def run(args: argparse.Namespace) -> dict:
    """Images/s of each pipeline and the ratios, measured in this run."""
    result = {"workers": args.workers, "batch_size": args.batch_size, "images": args.images,
              "real_images": foolbox_data() is not None or args.data_dir is not None}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = args.data_dir or make_imagenet_folder(scratch / "imagenet", args.images)
        torchvision_rate = images_per_second(
            imagenet_loader(folder, args.batch_size, train=True, device=args.device, workers=args.workers), args.epochs
        )
        result["imagenet_torchvision_images_per_s"] = torchvision_rate
        print(f"ImageNet train, torchvision ImageFolder + DataLoader: {torchvision_rate:8.0f} images/s")
        if ffcv_available():
            beton = write_beton(folder, scratch / "imagenet.beton", write_mode=args.write_mode,
                                max_resolution=args.max_resolution, workers=args.workers)
            result["ffcv_storage"] = f"{args.write_mode}, max {args.max_resolution} px"
            ffcv_rate = images_per_second(
                FFCVImageLoader(beton, args.batch_size, train=True, device=args.device, num_workers=args.workers),
                args.epochs,
            )
            result["imagenet_ffcv_images_per_s"] = ffcv_rate
            result["imagenet_ffcv_over_torchvision"] = ffcv_rate / torchvision_rate
            print(f"ImageNet train, FFCV:                                {ffcv_rate:8.0f} images/s "
                  f"({ffcv_rate / torchvision_rate:.2f}x torchvision)")
        else:
            print("ffcv is not installed: no FFCV row")

        cifar_root = make_cifar_root(scratch / "cifar", args.cifar_images)
        cifar_torchvision = images_per_second(
            cifar_torchvision_loader(cifar_root, 128, train=True, device=args.device, workers=args.workers),
            args.epochs,
        )
        device_loader = DeviceResidentLoader(read_cifar(cifar_root, train=True), 128, train=True, device=args.device)
        cifar_device = images_per_second(device_loader, args.epochs)
        result.update(
            cifar_torchvision_images_per_s=cifar_torchvision,
            cifar_device_resident_images_per_s=cifar_device,
            cifar_device_over_torchvision=cifar_device / cifar_torchvision,
        )
        print(f"CIFAR train, torchvision CIFAR10 + DataLoader:        {cifar_torchvision:8.0f} images/s")
        print(f"CIFAR train, device-resident loader ({args.device}):        {cifar_device:8.0f} images/s "
              f"({cifar_device / cifar_torchvision:.1f}x torchvision)")
    return result


def markdown_table(result: dict) -> str:
    images = "real JPEGs" if result["real_images"] else "synthetic JPEGs (foolbox not installed)"
    lines = [f"{result['workers']} workers each, {images}; ratios measured in the same run.", "",
             "| pipeline | images/s | ratio |", "|---|---|---|",
             f"| ImageNet train, torchvision ImageFolder + DataLoader | {result['imagenet_torchvision_images_per_s']:,.0f} | 1.00 |"]
    if "imagenet_ffcv_images_per_s" in result:
        lines.append(f"| ImageNet train, FFCV ({result['ffcv_storage']}) | {result['imagenet_ffcv_images_per_s']:,.0f} | "
                     f"{result['imagenet_ffcv_over_torchvision']:.2f}× |")
    lines += [f"| CIFAR train, torchvision-style dataset + DataLoader | {result['cifar_torchvision_images_per_s']:,.0f} | 1.00 |",
              f"| CIFAR train, device-resident loader | {result['cifar_device_resident_images_per_s']:,.0f} | "
              f"{result['cifar_device_over_torchvision']:.1f}× |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.common import environment

    args = parse_args(argv)
    result = {**environment(torch.device(args.device)), **run(args)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

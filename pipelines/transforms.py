"""The paper's input statistics and augmentations (docs/method.md §Recipes), as torchvision transforms and as
batched tensor ops."""

from __future__ import annotations

import functools

import torch

# ImageNet statistics: used for ImageNet and, as in the official code, for CIFAR too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# AlexNet-style PCA lighting (ImageNet RGB eigen-decomposition), as in ReActNet's recipe.
PCA_EIGENVALUES = (0.2175, 0.0188, 0.0045)
PCA_EIGENVECTORS = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
LIGHTING_STD = 0.1


def batch_memory_format(device: torch.device | str) -> torch.memory_format:
    """The layout loaders emit batches in: channels_last on CUDA (what cuDNN's fast convolutions and the FFCV
    decoders use), NCHW on CPU (channels_last costs CPU training 15–25% of its step time)."""
    return torch.channels_last if torch.device(device).type == "cuda" else torch.contiguous_format


@functools.lru_cache(maxsize=None)
def _constants(device: torch.device) -> dict[str, torch.Tensor]:
    """Normalisation and PCA constants on ``device``, made once per device (a host-to-device copy per batch would
    synchronise the host with the GPU)."""
    std = torch.tensor(IMAGENET_STD, device=device)
    return {
        "std": std,
        "scale": (1.0 / (255.0 * std)).view(1, 3, 1, 1),
        "bias": (-torch.tensor(IMAGENET_MEAN, device=device) / std).view(1, 3),
        "eigenvalues": torch.tensor(PCA_EIGENVALUES, device=device),
        "eigenvectors": torch.tensor(PCA_EIGENVECTORS, device=device),
    }


def constants(device: torch.device | str) -> dict[str, torch.Tensor]:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _constants(device)


def lighting_offsets(batch_size: int, std: float = LIGHTING_STD, generator: torch.Generator | None = None,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Per-image RGB offsets eigvec · (alpha ∘ eigval), alpha ~ N(0, std): shape [batch, 3]."""
    alpha = torch.randn(batch_size, 3, generator=generator, device=generator.device if generator else device) * std
    pca = constants(alpha.device)
    return (alpha * pca["eigenvalues"]) @ pca["eigenvectors"].t()


def normalize(images: torch.Tensor, dtype: torch.dtype = torch.float32, lighting: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 [B, 3, H, W] (any layout) → (x/255 + lighting − mean) / std as ``dtype``, in one fused multiply-add
    pass over the batch; ``lighting`` [B, 3] offsets are on the 0–1 scale."""
    fixed = constants(images.device)
    bias = fixed["bias"]
    if lighting is not None:
        bias = bias + lighting.to(images.device) / fixed["std"]
    return torch.addcmul(bias[:, :, None, None], images, fixed["scale"]).to(dtype)  # uint8 promotes inside the fused op


class Lighting:
    """torchvision-style PCA lighting on a [3, H, W] tensor in 0–1 scale (applied before Normalize)."""

    def __init__(self, std: float = LIGHTING_STD):
        self.std = std

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.std == 0:
            return image
        return image + lighting_offsets(1, self.std)[0].view(3, 1, 1)


def imagenet_train_transform(size: int = 224):
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        Lighting(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def imagenet_val_transform(size: int = 224, resize: int | None = None):
    """Resize(256) + CenterCrop(224), or the same 224/256 ratio at other sizes."""
    from torchvision import transforms as T

    resize = resize or round(size * 256 / 224)
    return T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def cifar_train_transform():
    from torchvision import transforms as T

    return T.Compose([
        T.RandomCrop(32, padding=4),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def cifar_test_transform():
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

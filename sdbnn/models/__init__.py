"""The paper's architectures behind one registry; importing this package registers them all."""

from sdbnn.models import resnet_cifar, resnet_imagenet, vgg  # noqa: F401  (registration side effects)
from sdbnn.models.registry import ModelSpec, create_model, list_models, model_spec

__all__ = ["ModelSpec", "create_model", "list_models", "model_spec"]

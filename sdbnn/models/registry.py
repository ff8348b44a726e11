"""Model registry: ``create_model(name, **overrides)`` and ``list_models()``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from torch import nn

from sdbnn.layers import SD_OPTIONS


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    summary: str
    binary: bool  # True: has SD convs and accepts the SDConv2d switches as overrides
    options: frozenset[str]  # every override create_model accepts for this model


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, summary: str, *, binary: bool, **fixed_kwargs):
    """Register ``builder`` under ``name``; ``fixed_kwargs`` are bound (e.g. full_precision=True for a twin)."""

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(builder).parameters.values()
        own = {p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY} - set(fixed_kwargs)
        options = frozenset(own | (set(SD_OPTIONS) if binary else set()))

        def build(**overrides):
            return builder(**fixed_kwargs, **overrides)

        _MODELS[name] = ModelSpec(name, build, summary, binary, options)
        return builder

    return decorator


def list_models() -> list[str]:
    """Names accepted by `create_model`, sorted."""
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available models: {', '.join(list_models())}") from None


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered model. Overrides are the model's own options (``num_classes``, ...) and, for SD-BNN
    models, the `SDConv2d` switches (``asd``, ``wsd``, ``binary_weights``, ``act_surrogate``, ...)."""
    spec = model_spec(name)
    unknown = sorted(set(overrides) - spec.options)
    if unknown:
        raise ValueError(
            f"model {name!r} does not accept option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(sorted(spec.options)) or 'none'}"
        )
    return spec.builder(**overrides)

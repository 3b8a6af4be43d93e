"""The explicit registry of model architectures: name -> builder, kind and supported scales."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.base import ModelSpec, SRModel
from models.interp import Interpolation


class UnknownModelError(LookupError):
    """Raised for a model name that is not registered (pipeline re-raises its typed twin)."""


class UnsupportedScaleError(ValueError):
    """Raised when a model cannot upscale by the requested factor."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., SRModel]
    kind: str  # "interpolation", "single-image", "multi-frame"
    scales: tuple[int, ...]
    trained: bool  # whether the model has weights (interpolation needs none)
    description: str
    defaults: tuple[tuple[str, Any], ...] = ()


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(f"model {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def build(name: str, **config: Any) -> SRModel:
    """Build a registered architecture (no weights loaded)."""
    e = entry(name)
    cfg = {**dict(e.defaults), **config}
    scale = cfg.get("scale")
    if scale is not None and scale not in e.scales:
        raise UnsupportedScaleError(f"model {name!r} supports scales {list(e.scales)}, not {scale}")
    return e.builder(**cfg)


def spec_for(name: str, *, scale: int) -> ModelSpec:
    """The spec of a registered model at ``scale``, checked before any work starts."""
    e = entry(name)
    if scale not in e.scales:
        raise UnsupportedScaleError(f"model {name!r} supports scales {list(e.scales)}, not {scale}")
    return ModelSpec.of(name, scale=scale)


for _mode, _desc in (("nearest", "nearest-neighbour upsampling (each pixel becomes scale x scale)"),
                     ("bilinear", "bilinear interpolation baseline"),
                     ("bicubic", "bicubic interpolation baseline (a = -0.75, as torch/OpenCV)")):
    register(ModelEntry(_mode, lambda mode=_mode, **kw: Interpolation(mode=mode, **kw), "interpolation",
                        scales=tuple(range(2, 9)), trained=False, description=_desc))

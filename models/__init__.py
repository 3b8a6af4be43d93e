"""srcube models: one module per architecture, an explicit registry, one interface.

>>> from srcube.models import list_models, build, load_model
>>> m = build("esrgan", scale=4, features=16, blocks=2)       # random init, for training
>>> m = load_model("bicubic", scale=4)                        # baselines need no weights
>>> m = load_model("path/to/weights.safetensors")             # checked against its metadata
"""

from __future__ import annotations

from collections.abc import Sequence

from srcube.models.base import ModelSpec, SRModel
from srcube.models.errors import (
    IncompatibleWeightsError,
    ModelConfigError,
    ModelError,
    UnknownModelError,
    UnsupportedScaleError,
    UntrainedWeightsError,
    WeightsIntegrityError,
    WeightsNotFoundError,
)
from srcube.models.registry import (
    ModelEntry,
    architecture_config,
    build,
    default_model,
    default_sharpener,
    entry,
    list_models,
    resolve,
    spec_for,
    test_report,
)
from srcube.models.weights import Normalisation, WeightsMeta, load_weights, save_weights, shipped_weights


def load_model(model: str, *, scale: int | None = None, bands: Sequence[str] | None = None,
               allow_untrained: bool = False) -> SRModel:
    """A ready-to-run model (eval mode) by architecture name, shipped-weights name or weights path."""
    return resolve(model, scale=scale, bands=bands, allow_untrained=allow_untrained)[1]


__all__ = [
    "IncompatibleWeightsError",
    "ModelConfigError",
    "ModelEntry",
    "ModelError",
    "ModelSpec",
    "Normalisation",
    "SRModel",
    "UnknownModelError",
    "UnsupportedScaleError",
    "UntrainedWeightsError",
    "WeightsIntegrityError",
    "WeightsMeta",
    "WeightsNotFoundError",
    "architecture_config",
    "build",
    "default_model",
    "default_sharpener",
    "entry",
    "list_models",
    "load_model",
    "load_weights",
    "resolve",
    "save_weights",
    "shipped_weights",
    "spec_for",
    "test_report",
]

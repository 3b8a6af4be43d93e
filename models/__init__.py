"""srcube models: one module per architecture, an explicit registry, one interface.

>>> from models import list_models, build
>>> m = build("bicubic", scale=4)
"""

from models.base import ModelSpec, SRModel
from models.registry import (
    ModelEntry,
    UnknownModelError,
    UnsupportedScaleError,
    build,
    entry,
    list_models,
    spec_for,
)

__all__ = [
    "ModelEntry",
    "ModelSpec",
    "SRModel",
    "UnknownModelError",
    "UnsupportedScaleError",
    "build",
    "entry",
    "list_models",
    "spec_for",
]

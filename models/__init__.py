"""srcube models: one module per architecture, an explicit registry, one interface.

>>> from srcube.models import list_models, build, load_model
>>> m = build("esrgan", scale=4, features=16, blocks=2)       # random init, for training
>>> m = load_model("bicubic", scale=4)                        # baselines need no weights
>>> m = load_model("path/to/weights.safetensors")             # checked against its metadata
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

# The public names, one line each: what type checkers read, and (srcube._lazy.declared) what this face imports on
# first use at run time: `from srcube import models` and the typed errors import no torch.
if TYPE_CHECKING:
    from srcube.models.base import ModelSpec as ModelSpec
    from srcube.models.base import SRModel as SRModel
    from srcube.models.errors import IncompatibleWeightsError as IncompatibleWeightsError
    from srcube.models.errors import ModelConfigError as ModelConfigError
    from srcube.models.errors import ModelError as ModelError
    from srcube.models.errors import OnnxExportError as OnnxExportError
    from srcube.models.errors import OnnxUnavailableError as OnnxUnavailableError
    from srcube.models.errors import UnknownModelError as UnknownModelError
    from srcube.models.errors import UnsupportedScaleError as UnsupportedScaleError
    from srcube.models.errors import UntrainedWeightsError as UntrainedWeightsError
    from srcube.models.errors import WeightsIntegrityError as WeightsIntegrityError
    from srcube.models.errors import WeightsNotFoundError as WeightsNotFoundError
    from srcube.models.registry import ModelEntry as ModelEntry
    from srcube.models.registry import architecture_config as architecture_config
    from srcube.models.registry import build as build
    from srcube.models.registry import default_model as default_model
    from srcube.models.registry import default_sharpener as default_sharpener
    from srcube.models.registry import entry as entry
    from srcube.models.registry import list_models as list_models
    from srcube.models.registry import resolve as resolve
    from srcube.models.registry import spec_for as spec_for
    from srcube.models.registry import test_report as test_report
    from srcube.models.weights import Normalisation as Normalisation
    from srcube.models.weights import WeightsMeta as WeightsMeta
    from srcube.models.weights import load_weights as load_weights
    from srcube.models.weights import save_weights as save_weights
    from srcube.models.weights import shipped_weights as shipped_weights
else:
    from srcube import _lazy

    _public = _lazy.declared(__file__)
    __getattr__, __dir__ = _lazy.attach(__name__, _public)
    __all__ = sorted([*_public, "load_model"])


def load_model(model: str, *, scale: int | None = None, bands: Sequence[str] | None = None,
               allow_untrained: bool = False) -> SRModel:
    """A ready-to-run model (eval mode) by architecture name, shipped-weights name or weights path."""
    from srcube.models.registry import resolve

    return resolve(model, scale=scale, bands=bands, allow_untrained=allow_untrained)[1]

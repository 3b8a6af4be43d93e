"""What planning needs to know about a run's inference, without running any: the model resolved and checked
(:func:`resolve_model`), whether the consistency projection runs (:func:`wants_consistency`) and the tiles with
the margin they borrow (:func:`tile_margin`, :func:`tile_spec`).

:mod:`srcube.pipeline.plan` checks a request with these before any search, read or write, and
:mod:`srcube.pipeline.sr.infer` runs the model with the same answers. This module imports no array or model
library itself (numpy only): the model layer is imported inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from srcube.pipeline.errors import InvalidOptionError, UnknownModelError, UnsupportedScaleError, as_pipeline_error
from srcube.pipeline.params import safe_name
from srcube.pipeline.sr.tiling import TileSpec, choose_tile

if TYPE_CHECKING:
    from srcube.models import ModelSpec, SRModel
    from srcube.models.consistency import Projection

#: the input tile (px) of a model with a small margin; deep models get larger ones (:func:`tile_spec`)
DEFAULT_TILE = 256


@dataclass(frozen=True)
class ResolvedModel:
    """A model already resolved (weights read, hashed and checked once per run): what goes into the graph
    and the local instance. :func:`resolve_model` hands it back as it is."""

    ref: ModelSpec | SRModel
    local: SRModel


def resolve_model(model: str | Path | ModelSpec | SRModel | ResolvedModel, scale: int | None, *,
                  bands: Sequence[str] | None = None,
                  allow_untrained: bool = False) -> tuple[ModelSpec | SRModel, SRModel]:
    """(what goes into the graph, a local instance to read scale/receptive field/metadata from).

    Names and weights files are checked (registry, sha256, scale, bands, trained) before any work.
    A string that is neither a plain name nor the path of an existing weights file (``.safetensors``
    or ``.json``, or their common stem) is refused: names never reach the filesystem (no traversal).
    """
    from srcube import models
    from srcube.models import ModelSpec, SRModel

    if isinstance(model, ResolvedModel):
        if scale is not None and model.local.scale != scale:
            raise UnsupportedScaleError(f"model {model.local.name} has scale {model.local.scale}, not {scale}")
        return model.ref, model.local
    if isinstance(model, str):
        _check_model_name(model)
    if isinstance(model, (str, Path)):
        try:
            return models.resolve(str(model), scale=scale, bands=bands, allow_untrained=allow_untrained)
        except models.ModelError as exc:
            raise as_pipeline_error(exc) from None
    if isinstance(model, ModelSpec):
        try:
            local = model.build()
        except models.ModelError as exc:
            raise as_pipeline_error(exc) from None
        if scale is not None and local.scale != scale:
            raise UnsupportedScaleError(f"model spec {model.name} has scale {local.scale}, not {scale}")
        return model, local
    if isinstance(model, SRModel):
        if scale is not None and model.scale != scale:
            raise UnsupportedScaleError(f"model {model.name or type(model).__name__} has scale "
                                        f"{model.scale}, not {scale}")
        return model, model
    raise UnknownModelError(f"model must be a registered name, a weights path, a ModelSpec or an SRModel, "
                            f"got {type(model).__name__}; known names: {', '.join(models.list_models())}")


def _check_model_name(model: str) -> None:
    """UnknownModelError unless ``model`` is a plain name, a weights path (``.safetensors``/``.json``, or
    the stem of existing weights) or an existing file with a suffix (``.pt``: :func:`models.resolve` says
    it is not srcube weights)."""
    from srcube import models

    if model.endswith((".safetensors", ".json")):
        return  # an explicit weights path: checked (exists, sha256, metadata) by models.resolve
    try:
        is_file = (bool(Path(model).suffix) and Path(model).is_file()) or models.weights._paths(model)[0].is_file()
    except (ValueError, OSError):  # "" or "." has no file name
        is_file = False
    if is_file:
        return
    try:
        safe_name(model, "model", UnknownModelError)
    except UnknownModelError:
        raise UnknownModelError(
            f"model {model!r} is neither a model name (letters, digits and '.', '_', ':', '+', '-'; no '/' or '..') "
            f"nor an existing weights file; use one of {', '.join(models.list_models())}, a shipped weights name "
            f"({', '.join(sorted(models.shipped_weights())) or 'none'}) or the path of a .safetensors file") from None


def is_interpolation(model: SRModel) -> bool:
    """Whether ``model`` is one of the interpolation baselines (nearest, bilinear, bicubic, Lanczos)."""
    from srcube.models.interp import Interpolation, Lanczos

    return isinstance(model, (Interpolation, Lanczos))


def wants_consistency(model: SRModel, consistency: bool | None) -> bool:
    """Whether the consistency projection runs: as asked, or (``None``) for learned single-image models
    only. Multi-frame models never: their input is several views at unknown sub-pixel shifts, not one
    image the sensor's degradation of the output should give back (InvalidOptionError if asked)."""
    if consistency is not None and not isinstance(consistency, (bool, np.bool_)):
        raise InvalidOptionError(f"consistency must be True, False or None (learned models only), got {consistency!r}")
    if model.multi_frame:
        if consistency:
            raise InvalidOptionError(
                f"consistency=True: model {model.name} is multi-frame; its views are separate acquisitions at "
                "unknown sub-pixel shifts, so there is no single input its output should degrade to (srcube "
                "leaves the projection off for multi-frame models); pass consistency=None or False")
        return False
    return bool(consistency) if consistency is not None else not is_interpolation(model)


def tile_margin(model: SRModel, projection: Projection | None, margin: int | None = None) -> int:
    """Input pixels each tile borrows: the model's receptive field plus the projection's reach (when it
    runs), or ``margin`` if that is larger."""
    need = max(int(model.receptive_field), 0) + (projection.margin if projection is not None else 0)
    return max(need, int(margin or 0))


def tile_spec(tile: int | None, m: int, scale: int, projection: Projection | None) -> TileSpec:
    """The tiles of a run: ``tile`` input pixels (default :data:`DEFAULT_TILE`, or larger where a deep model's
    margin ``m`` would cost over 15 %: :func:`~srcube.pipeline.sr.tiling.choose_tile`), each borrowing ``m``
    (InvalidOptionError when the tile is smaller than that)."""
    t = choose_tile(tile, m, DEFAULT_TILE)
    if m > t:
        extra = f" (the receptive field plus {projection.margin} for the consistency projection)" if projection else ""
        raise InvalidOptionError(f"tile {t} is smaller than the margin each tile borrows, {m} input pixels{extra}; "
                                 f"use tile >= {m}" + (" or consistency=False" if projection else ""))
    return TileSpec(tile=t, margin=m, scale=scale)

"""Band sharpening: coarser bands of an acquisition on the grid of its finer bands, tiled over Dask.

``sharpen(low, guide)`` takes the 20 m bands of a Sentinel-2 acquisition (``low``) and its 10 m bands
(``guide``) and returns the 20 m bands on the 10 m grid, computed by a sharpener model
(:mod:`models.sharpen`: ``forward(low, guide)``). It runs on the engine of ``super_resolve``
(:func:`~srcube.pipeline.sr.engine.tiled_map`): tiles are chunks of the low grid that borrow
``margin >= receptive_field`` low pixels from their neighbours (none beyond the scene edge); the
guide's tiles are the matching ``ratio x`` windows, with ``ratio x margin`` borrowed guide pixels.
Each tile goes through the model once and is cropped back to its own extent, so for a model whose
output depends on the input only within its receptive field, the tiled result equals a whole-image
pass. Models enter the graph as a ``ModelSpec`` and are built once per worker process.

:func:`choose_sharpener` turns the run option ``sharpen`` (``"auto"``, ``"bilinear"``, a sharpener
name or a weights path) into what the cube path uses and records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from odc.geo.geobox import GeoBox

from srcube import models
from srcube.models import ModelSpec, SRModel
from srcube.models.sharpen import Sharpener
from srcube.pipeline.errors import (
    IncompatibleWeightsError,
    InvalidDataError,
    InvalidOptionError,
    UnknownModelError,
    as_pipeline_error,
)
from srcube.pipeline.sr.engine import (
    InferenceSpec,
    TiledInput,
    checked_batch,
    checked_pass_tile,
    crop,
    forward,
    graph_model,
    inference_spec,
    materialise,
    nodata,
    tile_context,
    tiled_map,
)
from srcube.pipeline.sr.infer import _normalise, grid_coords, input_geobox
from srcube.pipeline.sr.spec import DEFAULT_TILE, resolve_model
from srcube.pipeline.sr.tiling import TileSpec, choose_tile

#: registry kinds of band sharpeners: learned ones need weights, baselines build from the data's bands
SHARPENER_KINDS = ("sharpen", "sharpen-baseline")
#: the run option that keeps odc-stac's bilinear resampling of coarser bands (no sharpening)
BILINEAR = "bilinear"


def sharpener_of(model: SRModel) -> Sharpener:
    """The band sharpener inside ``model`` (weights with a normalisation wrap it), or UnknownModelError."""
    inner = getattr(model, "inner", model)
    if not isinstance(inner, Sharpener):
        raise UnknownModelError(
            f"model {model.name or type(model).__name__} is not a band sharpener (forward(low, guide)); use one of "
            f"{', '.join(n for n in models.list_models() if models.entry(n).kind in SHARPENER_KINDS)} or "
            "sharpener weights")
    return inner


def _is_baseline_name(model: object) -> bool:
    if not isinstance(model, str) or model.endswith((".safetensors", ".json")) or "/" in model:
        return False
    if model in models.shipped_weights():
        return False
    try:
        return models.entry(model).kind == "sharpen-baseline"
    except models.UnknownModelError:
        return False


def resolve_sharpener(model: str | Path | ModelSpec | SRModel, ratio: int, low_bands: Sequence[str] | None,
                      guide_bands: Sequence[str] | None, n_low: int, n_guide: int, *,
                      allow_untrained: bool = False) -> tuple[ModelSpec | SRModel, SRModel, Sharpener]:
    """(what goes into the graph, a local instance, the sharpener inside it), checked before any work.

    ``"auto"`` is :func:`models.default_sharpener`. A registered baseline (``"hpf"``) is built for the
    bands at hand; learned sharpeners come from weights (a path or shipped name), a ``ModelSpec`` or a
    model object, and must fit the bands: a wrong number of bands is an InvalidDataError, other names
    or another order an IncompatibleWeightsError.
    """
    if isinstance(model, str) and model == "auto":
        model = models.default_sharpener(low_bands)
    if _is_baseline_name(model):
        name = str(model)
        if ratio not in models.entry(name).scales:
            raise InvalidDataError(f"sharpener {name!r} works at ratios {list(models.entry(name).scales)}, the guide's "
                                   f"pixels are 1/{ratio} of the low bands'")
        spec = ModelSpec.of(name, scale=ratio, channels=n_low, guide_channels=n_guide,
                            bands=list(low_bands) if low_bands is not None else None,
                            guide_bands=list(guide_bands) if guide_bands is not None else None)
        try:
            local = spec.build()
        except models.ModelError as exc:
            raise as_pipeline_error(exc) from None
        ref: ModelSpec | SRModel = spec
    else:
        ref, local = resolve_model(model, None, allow_untrained=allow_untrained)
    inner = sharpener_of(local)
    if int(local.scale) != ratio:
        raise InvalidDataError(f"model {local.name} sharpens x{local.scale} (each low pixel covers "
                               f"{local.scale} x {local.scale} guide pixels), but the guide's pixels are 1/{ratio} "
                               "of the low bands'")
    for what, n, want, names, want_names in (
            ("low", n_low, inner.channels, low_bands, inner.bands),
            ("guide", n_guide, inner.guide_channels, guide_bands, inner.guide_bands)):
        if n != want:
            raise InvalidDataError(
                f"model {local.name} takes {want} {what} band(s){f' {list(want_names)}' if want_names else ''}, "
                f"the {what} array has {n}{f' {list(names)}' if names is not None else ''}")
        if want_names is not None and names is not None and list(names) != list(want_names):
            raise IncompatibleWeightsError(f"model {local.name} takes {what} bands {list(want_names)} (in that "
                                           f"order), the {what} array has {list(names)}")
    return ref, local, inner


def _ratio_and_check(gl: GeoBox, gg: GeoBox) -> int:
    """The integer ratio of the low grid's pixels to the guide's; InvalidDataError unless every low
    pixel covers exactly ``ratio x ratio`` guide pixels and the two grids cover the same area."""
    al, ag = gl.affine, gg.affine
    if al.b != 0 or al.d != 0 or ag.b != 0 or ag.d != 0:
        raise InvalidDataError("sharpen takes north-up grids (no rotation or shear); warp the arrays first")
    rx, ry = al.a / ag.a, al.e / ag.e
    r = round(rx)
    if r < 2 or abs(rx - r) > 1e-6 or abs(ry - r) > 1e-6:
        raise InvalidDataError(
            f"the low pixels ({abs(al.a):g} x {abs(al.e):g}) must be an integer multiple >= 2 of the guide pixels "
            f"({abs(ag.a):g} x {abs(ag.e):g}); got a ratio of {rx:g} x {ry:g} (20 m bands with a 10 m guide: 2)")
    dx, dy = (ag.c - al.c) / ag.a, (ag.f - al.f) / ag.e
    if abs(dx) > 1e-6 or abs(dy) > 1e-6:
        raise InvalidDataError(
            f"the grids are misaligned: the guide's first pixel starts {dx:+g} guide pixel(s) along x and {dy:+g} "
            f"along y from the low grid's first pixel; every low pixel must cover exactly {r} x {r} guide pixels. "
            "Crop both to a common edge (e.g. guide.isel(x=slice(1, None))) or load them on aligned grids")
    want = (gl.shape[0] * r, gl.shape[1] * r)
    if tuple(gg.shape) != want:
        raise InvalidDataError(
            f"the guide covers {gg.shape[0]} x {gg.shape[1]} pixels, the low grid's {gl.shape[0]} x {gl.shape[1]} "
            f"pixels need exactly {want[0]} x {want[1]} guide pixels (the same area); crop the larger one")
    return r


def _sharpen_block(low: np.ndarray, guide: np.ndarray, ref: ModelSpec | SRModel, spec: InferenceSpec,
                   block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Sharpen one (time, band, y, x) low tile and its guide tile, both carrying borrowed margins."""
    assert block_info is not None  # supplied by map_blocks
    model, device, sides = tile_context(ref, spec, block_info)
    r = spec.scale
    low_ok, guide_ok = np.isfinite(low), np.isfinite(guide)
    if sharpener_of(model).nodata_aware:
        x, g = low.astype(np.float32, copy=False), guide.astype(np.float32, copy=False)
    else:  # as super_resolve: holes are zeros for the model and NaN again in the output
        x = np.where(low_ok, low, 0.0).astype(np.float32, copy=False)
        g = np.where(guide_ok, guide, 0.0).astype(np.float32, copy=False)
    y = crop(forward(model, device, spec, x, g).cpu().numpy(), sides, r)
    y = nodata(y, low_ok.all(axis=1), sides, r)  # NaN under no-data low pixels and (below) guide pixels
    gv = crop(guide_ok.all(axis=1), sides, r)
    if not gv.all():
        y = np.where(gv[:, None], y, np.float32(np.nan))
    return np.ascontiguousarray(y, dtype=np.float32)


def _band_names(data: xr.DataArray) -> list[str] | None:
    return [str(b) for b in data.band.values] if "band" in data.coords else None


def sharpen(low: xr.DataArray, guide: xr.DataArray, model: str | Path | ModelSpec | SRModel = "auto", *,
            client: Any | None = None, tile: int | None = None, margin: int | None = None,
            torch_threads: int | None = None, allow_untrained: bool = False, precision: str = "fp32",
            resources: dict[str, float] | None = None, frames_per_task: int = 1, pass_tile: int | None = None,
            batch: int | None = None) -> xr.DataArray:
    """The ``low`` bands on the ``guide``'s grid, sharpened with the guide's detail.

    ``low`` and ``guide`` are georeferenced ``(band, y, x)`` or ``(time, band, y, x)`` reflectance
    arrays of the same acquisition(s) and CRS: ``low`` the coarser bands (Sentinel-2: B05 B06 B07 B8A
    B11 B12 at 20 m), ``guide`` the finer ones (B02 B03 B04 B08 at 10 m), on aligned grids covering the
    same area, each low pixel exactly ``ratio x ratio`` guide pixels (InvalidDataError otherwise,
    before any work). Returns ``(time,) band, y, x`` with ``low``'s bands on the guide's grid (its
    CRS and transform): lazily when either input is Dask-backed, else computed here (on ``client``
    if given).

    ``model``:

    * ``"auto"`` (default): the learned sharpener srcube ships (``models/weights/s2-sharpen-x2``) when
      its weights exist, are marked trained, the low bands are exactly its bands (in its order) and its
      test report shows a gain over hpf whose 95 % interval lies above zero; otherwise ``"hpf"``. See
      :func:`models.default_sharpener`;
    * a registered sharpener: ``"hpf"`` (linear high-pass injection, no weights, built for the arrays'
      bands). Its regression is fitted per tile, so a tiled result differs slightly from a whole-image
      pass; ``"dsen2"`` is an architecture and needs weights;
    * a weights path or shipped weights name, a ``ModelSpec`` or a model object (a
      :class:`models.sharpen.Sharpener`, or weights wrapping one), as :func:`super_resolve` accepts.

    ``tile`` is the tile size on the low grid (default 256, larger for deep models), ``margin`` the
    borrowed border in low pixels (at least the model's receptive field). NaN is no data: an output
    pixel is NaN where its low pixel (any band) or its guide pixel (any band) is; models that do not
    take NaN themselves (``nodata_aware``) see holes as zeros, as in :func:`super_resolve`.
    ``precision``, ``resources``, ``frames_per_task``, ``torch_threads``, ``pass_tile``, ``batch``: as
    :func:`super_resolve`.
    """
    low, squeeze_low = _normalise(low, "sharpen (low)", "sharpen")
    guide, squeeze_guide = _normalise(guide, "sharpen (guide)", "sharpen")
    if squeeze_low != squeeze_guide:
        raise InvalidDataError(f"low has dims {low.dims if not squeeze_low else low.dims[1:]} and guide "
                               f"{guide.dims if not squeeze_guide else guide.dims[1:]}: give both with a time axis "
                               "or both without")
    if low.sizes["time"] != guide.sizes["time"]:
        raise InvalidDataError(f"low has {low.sizes['time']} time step(s), guide {guide.sizes['time']}: they must be "
                               "the same acquisitions")
    if "time" in low.coords and "time" in guide.coords and not np.array_equal(low.time.values, guide.time.values):
        raise InvalidDataError("low and guide have different times: they must be the same acquisitions")
    if low.odc.crs != guide.odc.crs:
        raise InvalidDataError(f"low is in {low.odc.crs}, guide in {guide.odc.crs}: give both in one CRS")
    gl, gg = input_geobox(low), input_geobox(guide)
    r = _ratio_and_check(gl, gg)
    ref, local, inner = resolve_sharpener(model, r, _band_names(low), _band_names(guide), low.sizes["band"],
                                          guide.sizes["band"], allow_untrained=allow_untrained)
    if frames_per_task < 1:
        raise InvalidDataError(f"frames_per_task must be >= 1, got {frames_per_task}")
    m = max(int(inner.receptive_field), int(margin or 0))
    spec = TileSpec(tile=choose_tile(tile, m, DEFAULT_TILE), margin=m, scale=r)
    lazy = dask.is_dask_collection(low.data) or dask.is_dask_collection(guide.data)
    la = low.data if dask.is_dask_collection(low.data) else da.from_array(np.asarray(low.data))
    ga = guide.data if dask.is_dask_collection(guide.data) else da.from_array(np.asarray(guide.data))
    run = inference_spec(client, torch_threads, m, r, "none", precision, pass_tile=checked_pass_tile(pass_tile),
                         batch=checked_batch(batch))
    # the guide's tiles are the matching r x larger windows, borrowing r x as many pixels
    out = tiled_map(_sharpen_block, [TiledInput(la.astype(np.float32), (frames_per_task, -1)),
                                     TiledInput(ga.astype(np.float32), (frames_per_task, -1), ratio=r)],
                    [graph_model(ref), run], tiles=spec, out_lead=(0, 1), name=f"sharpen-{local.name}",
                    resources=resources)
    coords: dict[str, Any] = {"band": low.band} if "band" in low.coords else {}
    if "time" in low.coords:
        coords["time"] = low.time
    coords.update(grid_coords(gg))
    for name, coord in low.coords.items():
        if name not in coords and set(coord.dims) <= {"time", "band"}:
            coords[str(name)] = coord
    meta = getattr(local, "weights_meta", None)
    attrs = {**low.attrs, "sharpen_model": local.name, "sharpen_ratio": r,
             "sharpen_weights_sha256": meta.sha256 if meta is not None else "none"}
    result = materialise(xr.DataArray(out, dims=("time", "band", "y", "x"), coords=coords, name=low.name,
                                      attrs=attrs), lazy, client, resources)
    return result.isel(time=0) if squeeze_low else result


@dataclass(frozen=True)
class SharpenChoice:
    """What a run's ``sharpen`` option resolves to: the method and the model that :func:`sharpen` gets."""

    option: str  # as given: "auto", "bilinear", "hpf", a weights path or shipped name
    method: str  # "bilinear" or the sharpener's name (hpf, dsen2, ...)
    model: str | ModelSpec | None  # what assemble passes to sharpen(); None for bilinear
    weights: str = "none"  # the weights' name, "none" for bilinear and baselines
    weights_sha256: str = "none"

    @property
    def bilinear(self) -> bool:
        return self.model is None

    def attrs(self) -> dict[str, str]:
        """Provenance: the option, the method, and the weights (name and sha256)."""
        return {"sharpen": self.option, "sharpen_model": self.method, "sharpen_weights": self.weights,
                "sharpen_weights_sha256": self.weights_sha256}


def choose_sharpener(option: str, *, allow_untrained: bool = False, bands: Sequence[str] | None = None
                     ) -> SharpenChoice:
    """The run option ``sharpen`` resolved and checked before any work.

    ``"bilinear"``: no sharpening (odc-stac's bilinear resampling of coarser bands, as before band
    sharpening existed). ``"auto"``: :func:`models.default_sharpener` (the shipped learned sharpener
    when it qualifies for the run's ``bands``, else ``"hpf"``). A registered sharpener name, shipped
    weights name or weights path: that sharpener. Anything else is refused (InvalidOptionError, UnknownModelError,
    WeightsNotFoundError, ... as for ``model``).
    """
    if not isinstance(option, str) or not option.strip():
        raise InvalidOptionError(f"sharpen must be 'auto', 'bilinear', a sharpener name or a weights path, "
                                 f"got {option!r}")
    if option == BILINEAR:
        return SharpenChoice(option, BILINEAR, None)
    name = models.default_sharpener(bands) if option == "auto" else option
    if _is_baseline_name(name):
        return SharpenChoice(option, name, name)
    known = [n for n in models.list_models() if models.entry(n).kind in SHARPENER_KINDS]
    accepted = (f"sharpen takes 'auto', 'bilinear', {', '.join(repr(k) for k in known)} (learned ones as weights) "
                "or the path of sharpener weights")
    if name in models.list_models() and models.entry(name).kind not in SHARPENER_KINDS:
        raise InvalidOptionError(f"sharpen={option!r} is not a band sharpener (it is a model of kind "
                                 f"{models.entry(name).kind!r}); {accepted}")
    try:
        ref, local = resolve_model(name, None, allow_untrained=allow_untrained)
        sharpener_of(local)
    except UnknownModelError as exc:
        raise InvalidOptionError(f"sharpen={option!r}: {exc}. {accepted}") from None
    meta = getattr(local, "weights_meta", None)
    if not isinstance(ref, ModelSpec) or meta is None:
        raise InvalidOptionError(f"sharpen={option!r} names no sharpener weights")
    return SharpenChoice(option, meta.architecture, ref, meta.name, meta.sha256)

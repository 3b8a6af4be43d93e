"""A run's plan: its :class:`~srcube.pipeline.request.RunRequest` checked and resolved before anything is
searched, read or written. :func:`plan` raises srcube's typed errors for everything that needs only the
request (bands, model and weights, scale, sizes, output, credentials); the :class:`RunPlan` it returns
is frozen and is all the later steps read."""

from __future__ import annotations

import logging
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass

from srcube import models
from srcube.models.consistency import Projection
from srcube.models.psf import SENSOR_PSF
from srcube.pipeline import redact
from srcube.pipeline.errors import InvalidOptionError, UnknownBandError, UnknownCollectionError
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import METRES_PER_DEG_LAT, BBox, DateRange, check_region_size, safe_name
from srcube.pipeline.request import RunRequest
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.search.access import AssetAccess, ReadSettings, access_for
from srcube.pipeline.sensors import SensorProfile, get_sensor
from srcube.pipeline.sr.infer import ResolvedModel, resolve_model, tile_margin, tile_spec, wants_consistency
from srcube.pipeline.sr.sharpening import SharpenChoice, choose_sharpener
from srcube.pipeline.sr.tiling import TileSpec
from srcube.pipeline.write.store import CubeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What a run needs before its search, resolved once: the region and dates, the catalog profile and
    collection, the sensor and bands where the request tells them (None: told by the items), the model
    (weights read and checked once per run), the tiles, the sharpener, the output store and the access."""

    request: RunRequest
    region: BBox
    days: DateRange
    profile: cat.CatalogProfile
    collection: str
    sensor: SensorProfile | None
    bands: tuple[str, ...] | None
    model: ResolvedModel
    n_views: int
    tiles: TileSpec
    consistency: bool  # the consistency projection runs (from opts.consistency and the model)
    sharpener: SharpenChoice
    store: CubeStore
    access: AssetAccess
    read_settings: ReadSettings

    @property
    def opts(self) -> RunOptions:
        return self.request.options

    @property
    def multi(self) -> bool:
        return bool(self.model.local.multi_frame)

    @property
    def scale(self) -> int:
        return int(self.model.local.scale)


def plan(req: RunRequest) -> RunPlan:
    """The plan of a request: every check that needs only the request (typed errors, nothing searched or
    written)."""
    redact.install()  # no credentials in any log record of the run (idempotent)
    opts = req.options
    redact.register(redact.option_secrets(opts.storage_options))  # keys given as options, not env
    region, days = BBox.parse(req.bbox), DateRange.parse(req.dates)
    profile = cat.resolve_catalog(req.catalog)
    coll = safe_name(req.collection or profile.collection, "collection", UnknownCollectionError)
    bands = _check_bands(req.bands)
    scale = _check_scale(req.scale)
    if not isinstance(req.out, (str, os.PathLike)) or not str(req.out).strip():
        raise InvalidOptionError(f"out must be the path or URL of the output zarr, got {req.out!r}")
    sensor = get_sensor(opts.sensor) if opts.sensor else profile.sensor_for(coll)
    if sensor is not None and (bands is not None or profile.kind != "kelvins"):
        band_names: tuple[str, ...] | None = sensor.vocabulary.validate(bands)
    else:  # decided by the data: the items' sensor, or the imgset's band
        band_names = tuple(bands) if bands else None
    if sensor is not None:
        _check_sensor_options(sensor, opts)
    model = req.model
    if model == "auto":  # the best shipped model for the sensor and scale (bicubic while none beats it)
        model = models.default_model(sensor.name if sensor else "sentinel-2", scale or 4,
                                     bands=band_names or (sensor.vocabulary.default_bands if sensor else None))
        log.info("model 'auto' is %s", model)
    resolved = ResolvedModel(*resolve_model(model, scale, bands=band_names, allow_untrained=opts.allow_untrained))
    local = resolved.local
    sharpener = choose_sharpener(opts.sharpen, allow_untrained=opts.allow_untrained, bands=band_names)
    n_model = int(getattr(local, "n_views", getattr(getattr(local, "inner", None), "n_views", 0)) or 0)
    n_views = opts.n_views or n_model or 1
    if local.multi_frame and n_model and n_views > n_model:
        raise InvalidOptionError(f"n_views={n_views} but model {local.name} fuses at most {n_model}")
    _check_size(region, profile, sensor, band_names, opts, int(local.scale))
    store = CubeStore(os.fspath(req.out), opts.storage_options)
    store.check_writable(overwrite=opts.overwrite or opts.mode == "append")  # append: a complete cube is the point
    consistency = wants_consistency(local, opts.consistency)
    projection = widest_projection(sensor, int(local.scale)) if consistency else None
    tiles = tile_spec(opts.tile, tile_margin(local, projection), int(local.scale), projection)
    access = access_for(opts.auth or profile.access)
    if profile.kind == "stac":
        access.check()  # credentials the catalog's assets need: missing ones fail now, not at the first read
    return RunPlan(req, region, days, profile, coll, sensor, band_names, resolved, n_views, tiles, consistency,
                   sharpener, store, access, ReadSettings.capture())


def _check_bands(bands: Sequence[str] | None) -> list[str] | None:
    """The requested bands as a list, each a plain name and named once (InvalidOptionError otherwise)."""
    if bands is None:
        return None
    bands = list(bands)
    for band in bands:
        safe_name(band, "band", UnknownBandError)
    twice = sorted({b for b in bands if bands.count(b) > 1})
    if twice:
        raise InvalidOptionError(f"bands {bands} name {', '.join(map(repr, twice))} twice: a cube holds each band "
                                 "once; ask for each band once")
    return bands


def _check_scale(scale: object) -> int | None:
    if scale is not None and (not isinstance(scale, numbers.Integral) or isinstance(scale, bool)):
        raise InvalidOptionError(f"scale must be an integer such as 2, 3 or 4, got {scale!r}")
    return int(scale) if scale is not None else None


def _check_sensor_options(sensor: SensorProfile, opts: RunOptions) -> None:
    try:
        sensor.validate_clear_classes(opts.clear_classes)
    except ValueError as exc:
        raise InvalidOptionError(str(exc)) from None
    if opts.harmonize is not None and opts.harmonize not in sensor.harmonize_modes:
        raise InvalidOptionError(f"harmonize for {sensor.name} must be one of {sensor.harmonize_modes}, "
                                 f"got {opts.harmonize!r}")


def _check_size(region: BBox, profile: cat.CatalogProfile, sensor: SensorProfile | None,
                band_names: Sequence[str] | None, opts: RunOptions, scale: int) -> None:
    """RegionTooLargeError for an output grid above ``max_pixels`` (without ``yes``), estimated from the
    bbox, the input resolution (``resolution`` or the bands' finest native one) and the scale. A Kelvins
    imgset has its own fixed size; without a known sensor the resolution is unknown until the search."""
    if profile.kind == "kelvins" or sensor is None or not band_names:
        return
    if opts.resolution is None:
        res = min(sensor.vocabulary.info(b).resolution for b in band_names)
    else:  # grid units: metres on UTM grids, degrees on native lat/lon grids (PROBA-V)
        res = float(opts.resolution) * (METRES_PER_DEG_LAT if sensor.grid != "utm" else 1.0)
    check_region_size(region, res, scale, n_bands=len(band_names), bytes_per_value=2 if opts.dtype == "int16" else 4,
                      max_pixels=opts.max_pixels, yes=opts.yes)


def widest_projection(sensor: SensorProfile | None, scale: int) -> Projection:
    """The sensor's projection; before the sensor is known, the one with the widest reach (so the tiles
    borrow enough whichever sensor the items turn out to be)."""
    if sensor is not None and sensor.name in SENSOR_PSF:
        return Projection.for_sensor(sensor.name, scale)
    return max((Projection.for_sensor(name, scale) for name in SENSOR_PSF), key=lambda p: p.margin)

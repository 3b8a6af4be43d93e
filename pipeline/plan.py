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
from srcube.models.consistency import Projection, own_projection
from srcube.models.psf import SENSOR_PSF
from srcube.pipeline import redact
from srcube.pipeline.errors import (
    InvalidOptionError,
    OnnxUnavailableError,
    OutputNotWritableError,
    OutputUnreachableError,
    SrcubeError,
    UnknownBandError,
    UnknownCollectionError,
)
from srcube.pipeline.network import gdal_timeouts
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import METRES_PER_DEG_LAT, BBox, DateRange, check_region_size, safe_name
from srcube.pipeline.request import RunRequest
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.search.access import AssetAccess, ReadSettings, access_for
from srcube.pipeline.sensors import SensorProfile, get_sensor
from srcube.pipeline.sr.sharpening import SharpenChoice, choose_sharpener
from srcube.pipeline.sr.spec import ResolvedModel, resolve_model, tile_margin, tile_spec, wants_consistency
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


def auto_model(sensor: str, scale: int, bands: Sequence[str] | None, window: str | None) -> str:
    """What ``model="auto"`` is: with composite windows (``window=``), the shipped multi-frame weights that qualify
    (:func:`models.default_model`), else (and without windows) the single-image default."""
    if window is not None:
        fused = models.default_model(sensor, scale, multi_frame=True, bands=bands)
        if fused != "bicubic":
            return fused
    return models.default_model(sensor, scale, bands=bands)


def plan(req: RunRequest) -> RunPlan:
    """The plan of a request: every check that needs only the request (typed errors, nothing searched or
    written)."""
    redact.install()  # no credentials in any log record of the run (idempotent)
    opts = req.options
    redact.register(redact.option_secrets(opts.storage_options))  # keys given as options, not env
    region, days = req.region(), DateRange.parse(req.dates)
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
        model = auto_model(sensor.name if sensor else "sentinel-2", scale or 4,
                           band_names or (sensor.vocabulary.default_bands if sensor else None), opts.window)
        log.info("model 'auto' is %s", model)
    resolved = ResolvedModel(*resolve_model(model, scale, bands=band_names, allow_untrained=opts.allow_untrained))
    local = resolved.local
    if opts.engine == "onnx":
        _check_onnx_engine(model if isinstance(model, str) else local.name, bool(local.multi_frame))
    sharpener = choose_sharpener(opts.sharpen, allow_untrained=opts.allow_untrained, bands=band_names)
    n_model = int(getattr(local, "n_views", getattr(getattr(local, "inner", None), "n_views", 0)) or 0)
    n_views = opts.n_views or n_model or 1
    if local.multi_frame and n_model and n_views > n_model:
        raise InvalidOptionError(f"n_views={n_views} but model {local.name} fuses at most {n_model}")
    _check_size(region, profile, sensor, band_names, opts, int(local.scale))
    store = open_output(os.fspath(req.out), opts)
    consistency = wants_consistency(local, opts.consistency)
    projection = (own_projection(local) or widest_projection(sensor, int(local.scale))) if consistency else None
    margin = tile_margin(local, projection)
    if local.multi_frame and opts.register_views:  # the tiles borrow the views' resampling too
        from srcube.models.registration import reach

        margin += reach()
    tiles = tile_spec(opts.tile, margin, int(local.scale), projection)
    access = access_for(opts.auth or profile.access, timeout=opts.network_timeout)
    if profile.kind == "stac":
        access.check()  # credentials the catalog's assets need: missing ones fail now, not at the first read
    return RunPlan(req, region, days, profile, coll, sensor, band_names, resolved, n_views, tiles, consistency,
                   sharpener, store, access, read_settings(opts))


def read_settings(opts: RunOptions) -> ReadSettings:
    """GDAL's settings for the run's reads: ``network_timeout`` as GDAL's timeouts, under any ``GDAL_*`` of the
    environment unless the option was given."""
    timeouts = gdal_timeouts(opts.network_timeout)
    return ReadSettings.capture(timeouts if "network_timeout" in opts.model_fields_set else None, defaults=timeouts)


#: fsspec protocols of object stores: the bucket (container) must exist and the credentials open it
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl"})


def open_output(out: str, opts: RunOptions) -> CubeStore:
    """The run's output store, checked before the search: storage options only where a filesystem takes them
    (a local path takes none), the object store reached with the run's credentials and its bucket there
    (:func:`probe_store`), and what is at the path may be written (:meth:`CubeStore.check_writable`)."""
    so = opts.storage_options
    if so:
        local = [f"{name} {url!r}" for name, url in (("out", out), ("stack_cache", opts.stack_cache))
                 if url and _is_local(str(url))]
        if local:
            raise InvalidOptionError(
                f"storage_options {sorted(so)} were given but {' and '.join(local)} is a local path, which takes "
                "no storage options (they are for object stores: s3://, gs://, az://, ...); drop them (CLI: "
                "--storage-option), or write to an object store URL")
    try:
        store = CubeStore(out, opts.store_options(out))  # the run's network timeouts where the options set none
    except (TypeError, ValueError, ImportError) as exc:  # an unknown protocol, its package missing, a bad option
        raise InvalidOptionError(f"out {out!r} cannot be opened with storage_options {sorted(so or {})}: {exc}; "
                                 "check the URL's protocol and the options its filesystem takes") from None
    probe_store(store, opts.network_timeout)
    try:
        store.check_writable(overwrite=opts.overwrite or opts.mode == "append")  # append: a complete cube is the point
    except SrcubeError:
        raise
    except Exception as exc:  # the object store answered the probe, then failed: the same kinds of failure
        raise store_error(store, exc) from exc
    return store


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://") or url.startswith("local://")


def probe_store(store: CubeStore, timeout: float) -> None:
    """Ask an object store for the output's bucket, once, within ``timeout`` s (the run's ``network_timeout``)
    whatever the client's own retries (botocore tries an endpoint that never answers five times): missing or
    refused credentials, a bucket that is not there and an endpoint that does not answer are typed errors now,
    before the search, instead of tracebacks at the first write (local paths: nothing to ask)."""
    protocol = store.fs.protocol if isinstance(store.fs.protocol, str) else store.fs.protocol[0]
    if protocol not in BUCKET_PROTOCOLS:
        return
    bucket = store.path.lstrip("/").split("/", 1)[0]
    try:
        if getattr(store.fs, "async_impl", False):
            from fsspec.asyn import sync

            sync(store.fs.loop, store.fs._info, bucket, timeout=timeout)
        else:
            store.fs.info(bucket)
    except Exception as exc:
        raise store_error(store, exc, timeout) from exc


def store_error(store: CubeStore, exc: BaseException, timeout: float | None = None) -> SrcubeError:
    """The typed error of an object store's failure ``exc`` at ``store``: refused or missing credentials, a
    missing bucket (OutputNotWritableError), or no answer (OutputUnreachableError)."""
    names = {c.__name__ for c in type(exc).__mro__}
    bucket = store.path.lstrip("/").split("/", 1)[0]
    creds = ("give them as storage options (CLI: --storage-option key=... --storage-option secret=...) or in "
             "the environment (e.g. AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)")
    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError", "DefaultCredentialsError"}:
        return OutputNotWritableError(f"output {store.url}: no credentials for the object store ({exc}); {creds}")
    if isinstance(exc, PermissionError) or names & {"ClientAuthenticationError"}:
        return OutputNotWritableError(f"output {store.url}: the object store refused these credentials ({exc}); "
                                      f"check them, or {creds}, with the right to write into {bucket!r}")
    if isinstance(exc, FileNotFoundError):
        return OutputNotWritableError(f"output {store.url}: bucket {bucket!r} does not exist at this endpoint "
                                      f"({exc}); create it first, or check the URL and the endpoint "
                                      "(storage option client_kwargs.endpoint_url)")
    if isinstance(exc, (OSError, TimeoutError)) or names & {"BotoCoreError", "ClientError", "HttpResponseError"}:
        waited = f" within {timeout:g} s" if isinstance(exc, TimeoutError) and timeout else ""
        return OutputUnreachableError(
            f"output {store.url}: the object store did not answer{waited} ({type(exc).__name__}: {exc}); check the "
            "endpoint (storage option client_kwargs.endpoint_url), the network, and that the service is up")
    return OutputNotWritableError(f"output {store.url} cannot be written: {type(exc).__name__}: {exc}")


def _check_onnx_engine(model: str, multi_frame: bool) -> None:
    """engine="onnx" runs single-image models, with onnxruntime installed (looked up, not imported: planning
    imports no inference): InvalidOptionError or OnnxUnavailableError before any work."""
    import importlib.util

    if multi_frame:
        raise InvalidOptionError(f"engine='onnx' runs single-image models; {model} is multi-frame (its graph exports "
                                 "with srcube export-onnx, but runs fuse views in torch): use engine='torch'")
    missing = [p for p in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(p) is None]
    if missing:
        raise OnnxUnavailableError(f"engine='onnx' needs {', '.join(missing)} (not installed): install srcube's onnx "
                                   "extra (pip install 'srcube[onnx]'), or use engine='torch'")


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

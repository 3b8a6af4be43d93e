"""``run_region``: search, assemble, super-resolve and persist one region and date range."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import numbers
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pystac
import xarray as xr

from srcube import models
from srcube.models.consistency import Projection
from srcube.models.psf import SENSOR_PSF
from srcube.pipeline import redact as redact_mod
from srcube.pipeline.assemble.clearance import FrameDecision, WindowPlan, plan_windows, select_frames
from srcube.pipeline.assemble.stack import assemble, sharpening_plan, with_clearance
from srcube.pipeline.assemble.stackcache import StackCache, cache_key
from srcube.pipeline.cluster import compute, dask_client, gpu_resources
from srcube.pipeline.errors import (
    AllCloudyError,
    InvalidOptionError,
    UnknownBandError,
    UnknownCollectionError,
    UnknownSensorError,
)
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import (
    METRES_PER_DEG_LAT,
    BBox,
    BBoxLike,
    DateRange,
    DatesLike,
    check_region_size,
    safe_name,
)
from srcube.pipeline.redact import redact
from srcube.pipeline.request import RunRequest
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.search.access import AssetAccess, ReadSettings, access_for, register_on_workers
from srcube.pipeline.sensors import SensorProfile, get_sensor, sensor_for_items
from srcube.pipeline.sr.infer import (
    ResolvedModel,
    resolve_model,
    tile_margin,
    tile_spec,
    wants_consistency,
)
from srcube.pipeline.sr.sharpening import SharpenChoice, choose_sharpener
from srcube.pipeline.sr.tiling import TileSpec
from srcube.pipeline.write.cube import (
    cube_attrs,
    encoding,
    multi_frame_cube,
    request_hash,
    single_image_cube,
    write_batches,
)
from srcube.pipeline.write.store import CubeStore

log = logging.getLogger(__name__)




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


@dataclass
class RunLog:
    """What a run did, step by step; ``srcube demo`` prints it and the cube keeps it in attrs."""

    steps: dict[str, float] = field(default_factory=dict)
    items_found: int = 0
    frames: list[FrameDecision] = field(default_factory=list)
    windows: list[WindowPlan] = field(default_factory=list)
    from_cache: bool = False
    resumed: bool = False
    chunk_writes: int = 0
    excluded: list[dict[str, Any]] = field(default_factory=list)  # items left out for unusable assets
    _t0: float = field(default_factory=time.perf_counter)

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round(max(0.0, now - self._t0 - sum(self.steps.values())), 3)


@dataclass
class RegionJob:
    """One region run, step by step: :meth:`prepare`, :meth:`load`, :meth:`decide`, :meth:`build`,
    :meth:`writes` (all or a batch), :meth:`finalize`. ``run_region`` does them in a row; the
    Prefect flow runs them as tasks, re-creating the job from ``items`` and ``decisions`` (plain
    JSON) so that no lazy graph has to cross a task boundary."""

    region: BBox
    days: DateRange
    profile: cat.CatalogProfile
    collection: str
    sensor: SensorProfile | None
    bands: tuple[str, ...] | None
    opts: RunOptions
    model_ref: Any
    local_model: Any
    multi: bool
    n_views: int
    tiles: TileSpec
    store: CubeStore
    access: AssetAccess = field(default_factory=AssetAccess)
    read_settings: ReadSettings = field(default_factory=ReadSettings)
    run: RunLog = field(default_factory=RunLog)
    stack: xr.Dataset | None = None
    cube: xr.Dataset | None = None
    encoding: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] | None = None
    cache_key: str = ""
    _ready: bool = False
    on_step: Callable[[str, RunLog], None] | None = None
    consistency: bool = False  # the consistency projection runs (resolved from opts.consistency and the model)
    sharpener: SharpenChoice = field(default_factory=lambda: SharpenChoice("bilinear", "bilinear", None))
    request: RunRequest | None = None  # what the job was planned from

    # --- 1. everything that needs only the arguments ---------------------------------------------

    @classmethod
    def prepare(cls, bbox: BBoxLike, dates: DatesLike, *, catalog: str = "sample", collection: str | None = None,
                bands: Sequence[str] | None = None, model: Any = "auto", scale: int | None = None,
                out: str = "srcube.zarr", on_step: Callable[[str, RunLog], None] | None = None,
                **options: Any) -> RegionJob:
        """:meth:`plan` for a call's arguments."""
        redact_mod.install()  # no credentials in any log record of the run (idempotent)
        req = RunRequest.make(bbox, dates, catalog=catalog, collection=collection, bands=bands, model=model,
                              scale=scale, out=out, options=options)
        return cls.plan(req, on_step=on_step)

    @classmethod
    def plan(cls, req: RunRequest, *, on_step: Callable[[str, RunLog], None] | None = None) -> RegionJob:
        """The job of a request: everything that needs only the request, checked (typed errors, nothing
        searched or written)."""
        redact_mod.install()
        opts = req.options
        redact_mod.register(redact_mod.option_secrets(opts.storage_options))  # keys given as options, not env
        region = BBox.parse(req.bbox)
        days = DateRange.parse(req.dates)
        catalog, collection, model, scale, out = req.catalog, req.collection, req.model, req.scale, req.out
        bands = list(req.bands) if req.bands is not None else None
        profile = cat.resolve_catalog(catalog)
        coll = safe_name(collection or profile.collection, "collection", UnknownCollectionError)
        for band in bands or ():
            safe_name(band, "band", UnknownBandError)
        twice = sorted({b for b in bands or () if list(bands or ()).count(b) > 1})
        if twice:
            raise InvalidOptionError(f"bands {list(bands or ())} name {', '.join(map(repr, twice))} twice: a cube "
                                     "holds each band once; ask for each band once")
        if scale is not None and (not isinstance(scale, numbers.Integral) or isinstance(scale, bool)):
            raise InvalidOptionError(f"scale must be an integer such as 2, 3 or 4, got {scale!r}")
        scale = int(scale) if scale is not None else None
        if not isinstance(out, (str, os.PathLike)) or not str(out).strip():
            raise InvalidOptionError(f"out must be the path or URL of the output zarr, got {out!r}")
        out = os.fspath(out)
        sensor = get_sensor(opts.sensor) if opts.sensor else profile.sensor_for(coll)
        if sensor is not None and (bands is not None or profile.kind != "kelvins"):
            band_names: tuple[str, ...] | None = sensor.vocabulary.validate(bands)
        else:  # decided by the data: the items' sensor, or the imgset's band
            band_names = tuple(bands) if bands else None
        if sensor is not None:
            try:
                sensor.validate_clear_classes(opts.clear_classes)
            except ValueError as exc:
                raise InvalidOptionError(str(exc)) from None
            if opts.harmonize is not None and opts.harmonize not in sensor.harmonize_modes:
                raise InvalidOptionError(f"harmonize for {sensor.name} must be one of {sensor.harmonize_modes}, "
                                         f"got {opts.harmonize!r}")
        if model == "auto":  # the best shipped model for the sensor and scale (bicubic while none beats it)
            model = models.default_model(sensor.name if sensor else "sentinel-2", scale or 4,
                                         bands=band_names or (sensor.vocabulary.default_bands if sensor else None))
            log.info("model 'auto' is %s", model)
        model_ref, local_model = resolve_model(model, scale, bands=band_names, allow_untrained=opts.allow_untrained)
        sharpener = choose_sharpener(opts.sharpen, allow_untrained=opts.allow_untrained, bands=band_names)
        multi = bool(local_model.multi_frame)
        n_model = int(getattr(local_model, "n_views", getattr(getattr(local_model, "inner", None), "n_views", 0)) or 0)
        n_views = opts.n_views or n_model or 1
        if multi and n_model and n_views > n_model:
            raise InvalidOptionError(f"n_views={n_views} but model {local_model.name} fuses at most {n_model}")
        _check_size(region, profile, sensor, band_names, opts, int(local_model.scale))
        store = CubeStore(out, opts.storage_options)
        store.check_writable(overwrite=opts.overwrite)
        consistency = wants_consistency(local_model, opts.consistency)
        margin = tile_margin(local_model, _widest_projection(sensor, int(local_model.scale)) if consistency else None)
        tiles = tile_spec(opts.tile, margin, int(local_model.scale),
                          _widest_projection(sensor, int(local_model.scale)) if consistency else None)
        access = access_for(opts.auth or profile.access)
        if profile.kind == "stac":
            access.check()  # credentials the catalog's assets need: missing ones fail now, not at the first read
        return cls(region, days, profile, coll, sensor, band_names, opts, model_ref, local_model, multi, n_views,
                   tiles, store, access, ReadSettings.capture(), on_step=on_step, consistency=consistency,
                   sharpener=sharpener, request=req)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the output's writer lock (waiting up to ``lock_wait`` s) for the block: two runs
        never write into one store at once. Output checks are repeated under the lock, since the
        other run may have finished or replaced the cube meanwhile."""
        lock = self.store.lock(note=f"{self.model_ref} {self.days} {self.region.as_tuple()}")
        lock.acquire(wait=self.opts.lock_wait)
        try:
            self.store.check_writable(overwrite=self.opts.overwrite)
            yield
        finally:
            lock.release()

    def _workers_ready(self, client: Any) -> None:
        """Before the first computation: the run's read settings and access on every worker."""
        if not self._ready:
            register_on_workers(client, self.read_settings, self.access)
            self._ready = True

    def step(self, name: str) -> None:
        self.run.mark(name)
        if self.on_step is not None:
            self.on_step(name, self.run)

    # --- 2. the stack: cache, given items, or search -------------------------------------------

    def _cache_params(self, bands: Sequence[str], sensor: SensorProfile | None) -> dict[str, Any]:
        from srcube.pipeline.testing import sample

        p = self.profile
        params: dict[str, Any] = {
            "catalog": p.name if p.kind != "stac" else redact(p.url), "collection": self.collection,
            "bbox": self.region.as_tuple(), "dates": str(self.days), "bands": list(bands),
            "sensor": sensor.name if sensor else None, "harmonize": self.opts.harmonize,
            "resolution": self.opts.resolution, "max_cloud_cover": self.opts.max_cloud_cover,
            "max_items": self.opts.max_items,
            "sharpen": [self.sharpener.method, self.sharpener.weights_sha256],
        }
        if p.kind == "sample":
            params["sample"] = f"v{sample.SAMPLE_VERSION}-{sample.SEED}"
        return params

    def search(self) -> list[pystac.Item]:
        """The items of the request (typed errors: unknown collection, empty search, catalog down)."""
        client_api = cat.open_catalog(self.profile, retries=self.opts.catalog_retries,
                                      timeout=self.opts.catalog_timeout, access=self.access)
        cat.check_collection(client_api, self.collection)
        return cat.search(client_api, self.collection, self.region, self.days,
                          max_cloud_cover=self.opts.max_cloud_cover, max_items=self.opts.max_items)

    def screen(self, items: Sequence[pystac.Item]) -> list[pystac.Item]:
        """The items whose assets can be used (see :mod:`pipeline.assets`); the others are recorded
        in ``run.excluded`` (and the cube's ``excluded_items``), or fail the run with ``fail_on_error``."""
        if self.opts.asset_check == "none" or not items:
            return list(items)
        from srcube.pipeline.search.assets import screen_items
        from srcube.pipeline.sensors.bands import asset_key

        sensor = self.sensor or sensor_for_items(items)
        if sensor is None:
            return list(items)  # load() says why it cannot go on
        voc = sensor.vocabulary
        bands = voc.validate(self.bands)
        _, guides = sharpening_plan(sensor, bands, self.opts.resolution, self.sharpener.model)
        keys = sorted({asset_key(items[0], voc.info(b)) for b in (*bands, *guides, voc.qa_band)})
        good, problems = screen_items(items, keys, fail_on_error=self.opts.fail_on_error, access=self.access,
                                      settings=self.read_settings)
        self.run.excluded = [p.to_json() for p in problems]
        return good

    def harmonization_catalog(self) -> str | None:
        """The catalog name the harmonisation rules know this run's items by (None: tell from the items)."""
        return self.profile.name if self.profile.name in cat.PROFILES else None

    def find(self) -> list[pystac.Item]:
        """Search, screen and (``harmonize="auto"``) decide each item's reflectance offset from its pixels:
        the items a run assembles, with their decisions attached (so later steps read nothing again)."""
        searched = self.search()
        self.run.items_found = len(searched)
        found = self.screen(searched)
        sensor = self.sensor or sensor_for_items(found)
        if sensor is not None and (self.opts.harmonize or sensor.harmonize_modes[0]) == "auto":
            from srcube.pipeline.assemble.harmonize import annotate

            found = annotate(found, sensor, sensor.vocabulary.validate(self.bands),
                             catalog=self.harmonization_catalog(), access=self.access, settings=self.read_settings)
        return found

    def load(self, client: Any, items: Sequence[pystac.Item | Mapping[str, Any]] | None = None,
             excluded: Sequence[Mapping[str, Any]] | None = None) -> xr.Dataset:
        """Assemble the stack lazily (from the stack cache when it holds this request).

        Without ``items``, search and screen them; given ``items`` are taken as screened, with
        ``excluded`` the problems the screening found (for the cube's provenance)."""
        opts, tile = self.opts, self.tiles.tile
        cache = StackCache(opts.stack_cache, opts.storage_options) if opts.stack_cache else None
        if self.profile.kind == "kelvins":
            self.stack = self._load_kelvins()
        else:
            if cache is not None and self.sensor is not None and self.bands is not None and not opts.refresh_cache:
                self.cache_key = cache_key(self._cache_params(self.bands, self.sensor))
                self.stack = cache.load(self.cache_key)
            if self.stack is not None:
                self.run.from_cache = True
                self.run.items_found = len({i for ids in self.stack["items"].values for i in str(ids).split(",")})
            else:
                if items is not None:
                    found = [it if isinstance(it, pystac.Item) else pystac.Item.from_dict(dict(it)) for it in items]
                    self.run.excluded = [dict(p) for p in excluded or []]
                    self.run.items_found = len(found) + len({p["item"] for p in self.run.excluded})
                else:
                    found = self.find()
                sensor = self.sensor or sensor_for_items(found)
                if sensor is None:
                    raise UnknownSensorError(
                        f"cannot tell the sensor of collection {self.collection!r} from its id or its items' "
                        "platform; pass sensor='sentinel-2' or 'proba-v'")
                self.sensor = sensor
                self.bands = sensor.vocabulary.validate(self.bands)
                self.stack = assemble(found, self.region, self.bands, sensor=sensor, resolution=opts.resolution,
                                      chunk=tile, harmonize=opts.harmonize, georef_check=opts.georef_check,
                                      catalog=self.harmonization_catalog(), access=self.access,
                                      settings=self.read_settings, sharpen=self.sharpener.model)
                self.stack.attrs["excluded_items"] = json.dumps(self.run.excluded)
                if cache is not None:
                    self._workers_ready(client)
                    self.cache_key = cache_key(self._cache_params(self.bands, sensor))
                    self.stack = cache.save(self.cache_key, self.stack, self._cache_params(self.bands, sensor),
                                            client, tile)
        assert self.sensor is not None and self.stack is not None
        self.stack = with_clearance(self.stack, self.sensor, self.sensor.validate_clear_classes(opts.clear_classes))
        return self.stack

    def _load_kelvins(self) -> xr.Dataset:
        from srcube.pipeline.sensors.probav import PROBAV, kelvins_stack

        stack, band, self.run.items_found = kelvins_stack(self.profile.url, self.bands, self.region, self.days,
                                                          self.tiles.tile)
        self.sensor, self.bands = PROBAV, (band,)
        return stack

    # --- 3. which frames (and windows) -----------------------------------------------------------

    def decide(self, client: Any, decisions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Frame decisions (and composite windows): computed from the clearance, or given back."""
        assert self.stack is not None
        opts = self.opts
        if decisions is not None:
            self.run.frames = [FrameDecision(**f) for f in decisions["frames"]]
            self.run.windows = [WindowPlan(**{**w, "views": tuple(w["views"]), "view_times": tuple(w["view_times"])})
                                for w in decisions.get("windows", [])]
        else:
            self._workers_ready(client)
            fractions, scores = compute(client, [self.stack.clear_fraction, self.stack.clearance_score],
                                         opts.progress, "clearance")
            fractions, scores = np.asarray(fractions), np.asarray(scores)
            if self.multi:
                self.run.windows, self.run.frames = plan_windows(
                    self.stack.time.values, fractions, scores, start=self.days.start, end=self.days.end,
                    window=opts.window, n_views=self.n_views, min_views=opts.min_views, min_clear=opts.min_clear,
                    short_windows=opts.short_windows)
            else:
                self.run.frames = select_frames(self.stack.time.values, fractions, opts.min_clear, scores)
        if not any(f.kept for f in self.run.frames) or (self.multi and not any(w.kept for w in self.run.windows)):
            raise AllCloudyError(
                f"no frame is usable with min_clear={opts.min_clear:.0%}: "
                + ", ".join(f"{f.time} {f.clear_fraction:.1%}" for f in self.run.frames)
                + "; lower min_clear, widen the dates, or add clear classes")
        return {"frames": [dataclasses.asdict(f) for f in self.run.frames],
                "windows": [w.to_json() for w in self.run.windows]}

    # --- 4. the cube graph -----------------------------------------------------------------------

    def build(self, client: Any) -> xr.Dataset:
        """The lazy cube (super-resolution graph + layers) with its provenance attributes."""
        assert self.stack is not None and self.sensor is not None and self.bands is not None
        opts, stack, local_model = self.opts, self.stack, self.local_model
        attrs = cube_attrs(stack, self.model_ref, local_model, multi=self.multi, sensor=self.sensor.name,
                           profile=self.profile, collection=self.collection, region=self.region.as_tuple(),
                           days=str(self.days), bands=self.bands, items_found=self.run.items_found,
                           stack_cache=f"{opts.stack_cache}/stack-{self.cache_key}.zarr" if self.cache_key else "none",
                           from_cache=self.run.from_cache, min_clear=opts.min_clear, sharpener=self.sharpener.attrs(),
                           frames=self._frames_provenance())
        self.resources = gpu_resources(client, opts.gpu)
        attrs["gpu_resources"] = bool(self.resources)
        attrs["consistency_projection"] = self.consistency
        if self.consistency:
            attrs.update(Projection.for_sensor(self.sensor.name, int(local_model.scale)).describe())
        else:
            attrs["consistency_psf"] = "none"
        resolved = ResolvedModel(self.model_ref, local_model)  # weights read and checked once per run
        if self.multi:
            cube = multi_frame_cube(stack, self.run.windows, self.n_views, resolved, self.tiles, client, opts,
                                    self.resources)
            attrs.update(windows=json.dumps([w.to_json() for w in self.run.windows]), n_views=self.n_views,
                         window=opts.window or "all")
            used = [i for w in self.run.windows if w.kept for i in w.views]
        else:
            cube = single_image_cube(stack, self.run.frames, resolved, self.tiles, client, opts, self.resources,
                                     self.consistency, self.sensor.name)
            used = [i for i, f in enumerate(self.run.frames) if f.kept]
        attrs["stac_item_ids"] = sorted({i for t in used for i in str(stack["items"].values[t]).split(",")})
        attrs["request_hash"] = request_hash(attrs, opts)
        cube.attrs = {**attrs, "Conventions": "CF-1.8"}
        self.cube, self.encoding = cube, encoding(cube, self.tiles, opts.dtype)
        return cube

    def _frames_provenance(self) -> list[dict[str, Any]]:
        """The frame decisions, each with what was applied to its items' reflectance and why."""
        assert self.stack is not None
        per_item = {d["item"]: d for d in json.loads(str(self.stack.attrs.get("harmonization", "[]")))}
        out = []
        for i, f in enumerate(self.run.frames):
            doc = dataclasses.asdict(f)
            if per_item:
                ids = str(self.stack["items"].values[i]).split(",")
                doc["harmonization"] = [per_item[k] for k in ids if k in per_item]
            out.append(doc)
        return out

    # --- 5. writes and finalize --------------------------------------------------------------------

    def start(self) -> bool:
        """Write the template, or keep the unfinished cube of the same request; True when resuming."""
        assert self.cube is not None
        resume = self.store.resumable(self.cube.attrs["request_hash"])
        if not resume:
            self.store.write_template(self.cube, self.encoding, template_only=True)
        self.run.resumed = resume
        return resume

    def pending(self) -> list[tuple[str, tuple[int, ...]]]:
        """(variable, chunk) writes not yet in the cube's manifest, in a stable order."""
        assert self.cube is not None
        return self.store.pending(self.cube)

    def batches(self, size: int) -> list[list[tuple[str, tuple[int, ...]]]]:
        """All chunk writes of the cube in batches of ``size`` output locations (see :func:`write_batches`)."""
        assert self.cube is not None
        return write_batches(self.cube, size)

    def write(self, client: Any, only: Sequence[tuple[str, tuple[int, ...]]] | None = None) -> int:
        """Compute and write the pending chunks (or ``only`` these); return how many were written."""
        assert self.cube is not None
        writes = self.store.chunk_writes(self.cube, self.encoding, only=only)
        n = self.store.count_blocks(writes)
        if n:
            self._workers_ready(client)
            compute(client, writes, self.opts.progress, "super-resolve and write")
        self.run.chunk_writes += n
        return n

    def finalize(self) -> xr.Dataset:
        self.store.finalize({"timings_s": dict(self.run.steps),
                             "last_run": {"resumed": self.run.resumed, "chunk_writes": self.run.chunk_writes}})
        return self.store.open()


def run_region(bbox: BBoxLike, dates: DatesLike, *, catalog: str = "sample", collection: str | None = None,
               bands: Sequence[str] | None = None, model: Any = "auto", scale: int | None = None,
               out: str = "srcube.zarr", client: Any | None = None,
               on_step: Callable[[str, RunLog], None] | None = None, yes: bool = False, **options: Any) -> xr.Dataset:
    """Super-resolve a region and date range into an analysis-ready zarr cube; return it, lazily.

    bbox is (min_lon, min_lat, max_lon, max_lat) in EPSG:4326; dates "YYYY-MM-DD/YYYY-MM-DD" or
    a (start, end) pair, both inclusive. catalog is a profile name (``sample``, ``earth-search``,
    ``planetary-computer``, ``cdse``, ``terrascope``), a STAC API URL, or ``kelvins:/path/imgset``.
    ``client`` is a dask.distributed Client; without one the run computes on threads in this process.
    ``scale`` defaults to the weights' scale for trained models and to 4 for the baselines.
    ``model="auto"`` (default) picks :func:`models.default_model` for the sensor, scale and bands: the
    shipped learned model that beat bicubic on its test split (lower end of the 95 % interval of the mean
    gain above zero), else ``"bicubic"``.
    Single-image models give one output frame per clear date; multi-frame models one per
    composite window (``window=``), fusing its clearest views. See :class:`RunOptions`.
    A region whose output grid is estimated above ``max_pixels`` (default 1e9 pixels per band and
    date) is refused with RegionTooLargeError unless ``yes=True``.

    Every check that needs only the arguments runs before the search; the search, the band
    mapping and the clearance run before anything is written. The cube says ``complete = true``
    only after every chunk is in. An unfinished cube of the same request is resumed: only the
    chunks missing from its manifest are computed.
    """
    job = RegionJob.prepare(bbox, dates, catalog=catalog, collection=collection, bands=bands, model=model,
                            scale=scale, out=out, on_step=on_step, yes=yes, **options)
    with job.locked():
        with dask_client(client, n_workers=job.opts.n_workers, processes=job.opts.processes) as dc:
            job.step("cluster")
            job.load(dc)
            job.step("search+assemble")
            job.decide(dc)
            job.step("clearance")
            job.build(dc)
            job.start()
            job.step("template")
            job.write(dc)
            job.step("super-resolve+write")
        result = job.finalize()
        job.step("finalize")
    return result


def _widest_projection(sensor: SensorProfile | None, scale: int) -> Projection:
    """The sensor's projection; before the sensor is known, the one with the widest reach (so the tiles
    borrow enough whichever sensor the items turn out to be)."""
    if sensor is not None and sensor.name in SENSOR_PSF:
        return Projection.for_sensor(sensor.name, scale)
    return max((Projection.for_sensor(name, scale) for name in SENSOR_PSF), key=lambda p: p.margin)



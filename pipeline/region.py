"""``run_region``: search, assemble, super-resolve and persist one region and date range."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

import models
from pipeline import catalog as cat
from pipeline.clearance import DEFAULT_CLEAR_CLASSES, FrameDecision, clear_fraction, select_frames, validate_classes
from pipeline.cluster import dask_client
from pipeline.errors import AllCloudyError, InvalidOptionError
from pipeline.infer import DEFAULT_TILE, resolve_model, super_resolve
from pipeline.params import BBox, BBoxLike, DateRange, DatesLike
from pipeline.stack import assemble
from pipeline.store import CubeStore
from pipeline.tiling import TileSpec, choose_tile

log = logging.getLogger(__name__)

INT16_SCALE = 1e-4
INT16_FILL = -32768


@dataclass(frozen=True)
class RunOptions:
    """Options of run_region beyond the main arguments (all keyword, all validated)."""

    min_clear: float = 0.5  # frames with a smaller clear fraction are dropped
    clear_classes: tuple[int, ...] = DEFAULT_CLEAR_CLASSES  # SCL classes counted as clear
    tile: int | None = None  # input tile size in pixels (default 256, larger for deep models); chunks = tile * scale
    resolution: float | None = None  # input grid resolution (default: finest native of the bands)
    max_cloud_cover: float | None = None  # percent, filters items on eo:cloud_cover
    max_items: int | None = None
    dtype: str = "float32"  # or "int16" (CF scale_factor 1e-4, _FillValue -32768)
    overwrite: bool = False  # replace a complete cube at `out`
    georef_check: str = "first"  # "first", "all" or "none" (see pipeline.stack.reconcile_georef)
    n_workers: int | None = None  # LocalCluster workers when no client is given
    torch_threads: int | None = None
    progress: bool = False  # text progress bars for the long steps
    allow_untrained: bool = False  # accept weights whose metadata says trained = false
    storage_options: Mapping[str, Any] | None = None  # fsspec options for `out`

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.min_clear) <= 1.0:
            raise InvalidOptionError(f"min_clear must be a fraction in [0, 1], got {self.min_clear}")
        try:
            object.__setattr__(self, "clear_classes", validate_classes(self.clear_classes))
        except (TypeError, ValueError) as exc:
            raise InvalidOptionError(str(exc)) from None
        if self.tile is not None and (not isinstance(self.tile, int) or self.tile < 16):
            raise InvalidOptionError(f"tile must be an integer >= 16, got {self.tile!r}")
        if self.dtype not in ("float32", "int16"):
            raise InvalidOptionError(f"dtype must be 'float32' or 'int16', got {self.dtype!r}")
        if self.georef_check not in ("first", "all", "none"):
            raise InvalidOptionError(f"georef_check must be 'first', 'all' or 'none', got {self.georef_check!r}")
        if self.resolution is not None and not float(self.resolution) > 0:
            raise InvalidOptionError(f"resolution must be positive metres, got {self.resolution}")
        if self.max_cloud_cover is not None and not 0 <= float(self.max_cloud_cover) <= 100:
            raise InvalidOptionError(f"max_cloud_cover is a percentage in [0, 100], got {self.max_cloud_cover}")

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> RunOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise InvalidOptionError(f"unknown option(s) {unknown}; run_region accepts {sorted(known)}")
        opts = dict(options)
        if "clear_classes" in opts and opts["clear_classes"] is not None:
            opts["clear_classes"] = tuple(opts["clear_classes"])
        return cls(**opts)


def _model_attrs(ref: Any, local: Any) -> dict[str, Any]:
    """Provenance of the model: name, kind, weights hash, and whether the weights were trained."""
    meta = getattr(local, "weights_meta", None)
    if meta is not None:
        return {"model": local.name, "model_kind": "learned", "weights": meta.name,
                "weights_sha256": meta.sha256, "model_trained": bool(meta.trained),
                "training_data": str(meta.training.get("data", "unknown"))}
    if isinstance(ref, models.ModelSpec):  # a registered baseline: nothing to train
        return {"model": local.name, "model_kind": models.entry(ref.name).kind, "weights": "none",
                "weights_sha256": "none", "model_trained": False, "training_data": "none (no parameters)"}
    return {"model": local.name or type(local).__name__, "model_kind": "model object", "weights": "unknown",
            "weights_sha256": "unknown (model object passed in memory)", "model_trained": "unknown",
            "training_data": "unknown"}


def _version() -> str:
    from pipeline import __version__

    return __version__


def _upsample_mask(clear: xr.DataArray, tiles: TileSpec, like: xr.DataArray) -> xr.DataArray:
    """Nearest-neighbour ``scale x`` upsampling of the (time, y, x) clear mask on the SR tiling."""
    s = tiles.scale
    arr = clear.data.astype(np.uint8).rechunk((1, tiles.chunks(clear.sizes["y"]), tiles.chunks(clear.sizes["x"])))
    out_chunks = (arr.chunks[0], tuple(c * s for c in arr.chunks[1]), tuple(c * s for c in arr.chunks[2]))
    up = arr.map_blocks(lambda b: b.repeat(s, axis=-2).repeat(s, axis=-1), chunks=out_chunks, dtype=np.uint8)
    coords = {k: v for k, v in like.coords.items() if k != "band" and "band" not in v.dims}
    return xr.DataArray(up, dims=("time", "y", "x"), coords=coords, name="clear",
                        attrs={"long_name": "clear pixel (from the scene classification)",
                               "flag_values": [0, 1], "flag_meanings": "not_clear clear",
                               "clear_classes": list(clear.attrs.get("clear_classes", []))})


def build_cube(sr: xr.DataArray, clear_hr: xr.DataArray, fractions: Sequence[float], attrs: Mapping[str, Any],
               dtype: str) -> xr.Dataset:
    refl = sr.rename("reflectance")
    if dtype == "int16":  # keep values representable: int16 would wrap
        lim = 32767 * INT16_SCALE
        refl = refl.clip(-lim, lim)
    refl.attrs = {"long_name": "super-resolved surface reflectance", "units": "1",
                  "sr_model": sr.attrs.get("sr_model"), "sr_scale": sr.attrs.get("sr_scale")}
    cube = xr.Dataset({
        "reflectance": refl,
        "clear": clear_hr,
        "clear_fraction": xr.DataArray(np.asarray(fractions, np.float32), dims="time",
                                       attrs={"long_name": "fraction of clear pixels in the frame (input grid)"}),
    })
    # variable-length strings have a zarr v3 data type; fixed-width numpy unicode has none
    cube = cube.assign_coords(band=np.array([str(b) for b in cube.band.values], dtype=object))
    cube.attrs = dict(attrs)
    cube.attrs["Conventions"] = "CF-1.8"
    for name in cube.data_vars:
        cube[name].encoding["coordinates"] = "spatial_ref"  # keep spatial_ref a coordinate on read
    return cube


def _encoding(cube: xr.Dataset, tiles: TileSpec, dtype: str) -> dict[str, Any]:
    ty = tx = tiles.tile * tiles.scale
    enc: dict[str, Any] = {
        "reflectance": {"chunks": (1, 1, min(ty, cube.sizes["y"]), min(tx, cube.sizes["x"]))},
        "clear": {"chunks": (1, min(ty, cube.sizes["y"]), min(tx, cube.sizes["x"]))},
    }
    if dtype == "int16":
        # float32 packing attributes make readers unpack to float32 (CF: their type is the unpacked type)
        enc["reflectance"].update(dtype="int16", scale_factor=np.float32(INT16_SCALE), add_offset=np.float32(0.0),
                                  _FillValue=INT16_FILL)
    return enc


def _compute(client: Any, collection: Any, progress: bool, label: str) -> Any:
    future = client.compute(collection)
    if progress:
        from distributed import progress as show_progress

        print(label, flush=True)
        show_progress(future)
        print(flush=True)
    return future.result()


@dataclass
class RunLog:
    """What a run did, step by step; ``srcube demo`` prints it and the cube keeps it in attrs."""

    steps: dict[str, float] = field(default_factory=dict)
    items_found: int = 0
    frames: list[FrameDecision] = field(default_factory=list)
    _t0: float = field(default_factory=time.perf_counter)

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round(max(0.0, now - self._t0 - sum(self.steps.values())), 3)


def run_region(bbox: BBoxLike, dates: DatesLike, *, catalog: str = "sample", collection: str | None = None,
               bands: Sequence[str] | None = None, model: Any = "bicubic", scale: int = 4,
               out: str = "srcube.zarr", client: Any | None = None,
               on_step: Callable[[str, RunLog], None] | None = None, **options: Any) -> xr.Dataset:
    """Super-resolve a region and date range into an analysis-ready zarr cube; return it, lazily.

    bbox is (min_lon, min_lat, max_lon, max_lat) in EPSG:4326; dates "YYYY-MM-DD/YYYY-MM-DD" or
    a (start, end) pair, both inclusive. catalog is a profile name (``sample``, ``earth-search``,
    ``planetary-computer``, ``cdse``) or a STAC API URL. ``client`` is a dask.distributed Client;
    without one a LocalCluster is started for the run. See :class:`RunOptions` for ``options``.

    Every check that needs only the arguments runs before the search; the search, the band
    mapping and the clearance run before anything is written. The cube says ``complete = true``
    only after every chunk is in.
    """
    run = RunLog()
    opts = RunOptions.from_kwargs(options)
    region = BBox.parse(bbox)
    days = DateRange.parse(dates)
    profile = cat.resolve_catalog(catalog)
    coll = collection or profile.collection
    band_names = profile.vocabulary.validate(bands)
    model_ref, local_model = resolve_model(model, scale, bands=band_names, allow_untrained=opts.allow_untrained)
    if local_model.multi_frame:
        raise InvalidOptionError(f"model {local_model.name} is multi-frame; run_region runs single-image models "
                                 "(one frame per date) until multi-frame composites land")
    store = CubeStore(out, opts.storage_options)
    store.check_writable(overwrite=opts.overwrite)
    margin = max(local_model.receptive_field, 0)
    tiles = TileSpec(choose_tile(opts.tile, margin, DEFAULT_TILE), margin, int(local_model.scale))

    def step(name: str) -> None:
        run.mark(name)
        if on_step is not None:
            on_step(name, run)

    client_api = cat.open_catalog(profile)
    cat.check_collection(client_api, coll)
    items = cat.search(client_api, coll, region, days, max_cloud_cover=opts.max_cloud_cover,
                       max_items=opts.max_items)
    run.items_found = len(items)
    step("search")

    stack = assemble(items, region, band_names, vocabulary=profile.vocabulary, resolution=opts.resolution,
                     chunk=tiles.tile, clear_classes=opts.clear_classes, georef_check=opts.georef_check)
    step("assemble")

    with dask_client(client, n_workers=opts.n_workers) as dc:
        step("cluster")
        fractions = _compute(dc, clear_fraction(stack.clear), opts.progress, "clearance")
        run.frames = select_frames(stack.time.values, np.asarray(fractions), opts.min_clear)
        step("clearance")
        keep = [i for i, f in enumerate(run.frames) if f.kept]
        if not keep:
            raise AllCloudyError(
                "every frame is below min_clear="
                f"{opts.min_clear:.0%}: " + ", ".join(f"{f.time} {f.clear_fraction:.1%}" for f in run.frames)
                + "; lower min_clear, widen the dates, or add clear classes")
        kept = stack.isel(time=keep)
        sr = super_resolve(kept.reflectance, model_ref, client=dc, tile=tiles.tile,
                           torch_threads=opts.torch_threads, allow_untrained=opts.allow_untrained)
        # a pixel is clear only where the SCL says so and every band has data
        clear_hr = _upsample_mask(kept.clear, tiles, sr) * sr.notnull().all("band").astype(np.uint8)
        kept_items = [i for ids in kept["items"].values for i in str(ids).split(",")]
        attrs = {
            "srcube_version": _version(),
            "title": "srcube super-resolved reflectance cube",
            **_model_attrs(model_ref, local_model),
            "scale": int(local_model.scale),
            "catalog": profile.name,
            "catalog_url": profile.resolved_url(),
            "collection": coll,
            "bbox": list(region.as_tuple()),
            "dates": str(days),
            "bands": list(band_names),
            "crs": f"EPSG:{stack.attrs['grid_epsg']}",
            "input_resolution": float(stack.attrs["resolution"]),
            "resolution": float(stack.attrs["resolution"]) / int(local_model.scale),
            "stac_item_ids": kept_items,
            "stac_items_found": run.items_found,
            "min_clear": opts.min_clear,
            "clear_classes": list(opts.clear_classes),
            "frames": json.dumps([dataclasses.asdict(f) for f in run.frames]),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        cube = build_cube(sr, clear_hr, [run.frames[i].clear_fraction for i in keep], attrs, opts.dtype)
        cube = cube.assign_coords(items=("time", np.array([str(v) for v in kept["items"].values], dtype=object)))
        writes = store.write_template(cube, _encoding(cube, tiles, opts.dtype))
        step("template")
        _compute(dc, writes, opts.progress, "super-resolve and write")
        step("super-resolve+write")
    store.finalize({"timings_s": dict(run.steps)})
    step("finalize")
    return store.open()

"""Assemble STAC items into one lazy multi-temporal stack on one grid (odc-stac).

The result is an ``xarray.Dataset`` with

* ``reflectance`` (time, band, y, x) float32: DN scaled by the sensor's rules (``raster:bands``,
  Sentinel-2 processing-baseline harmonisation), no data as NaN;
* ``qa`` (time, y, x): the sensor's quality band (Sentinel-2 SCL, PROBA-V status map), from which
  :func:`with_clearance` derives ``clear``, ``clear_fraction`` and ``clearance_score``;
* coordinates ``time`` (one per solar day), ``band`` (canonical names), ``items`` (the ids fused
  into each frame), ``x``/``y`` pixel centres and ``spatial_ref``.

Nothing is read from the rasters here except headers (to check item georeferencing); pixel
reads happen when the Dask graph runs, each asset opened once per tile.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import odc.stac
import pystac
import rasterio
import xarray as xr
from odc.geo.geobox import GeoBox

from srcube.models import ModelSpec, SRModel
from srcube.pipeline.assemble import harmonize as harm
from srcube.pipeline.assemble.grid import GridSpec, finer_geobox, region_epsg
from srcube.pipeline.errors import GeorefMismatchWarning, InvalidDataError
from srcube.pipeline.params import BBox
from srcube.pipeline.search.access import AccessDriver, AssetAccess, ReadSettings, with_access
from srcube.pipeline.sensors import SENTINEL2, SensorProfile
from srcube.pipeline.sensors.bands import BandInfo, asset_key
from srcube.pipeline.sr.sharpening import resolve_sharpener
from srcube.pipeline.sr.sharpening import sharpen as sharpen_bands

log = logging.getLogger(__name__)


# --- item georeferencing ---------------------------------------------------------------------


@dataclass(frozen=True)
class AssetGeoref:
    epsg: int | None
    shape: tuple[int, int]
    transform: tuple[float, float, float, float, float, float]


def _read_georef(href: str, access: AssetAccess | None = None, settings: ReadSettings | None = None) -> AssetGeoref:
    def read(target: str) -> AssetGeoref:
        with rasterio.open(target) as src:
            t = src.transform
            epsg = src.crs.to_epsg() if src.crs else None
            return AssetGeoref(epsg, (src.height, src.width), (t.a, t.b, t.c, t.d, t.e, t.f))

    return with_access(href, access or AssetAccess(), settings or ReadSettings.capture(), read)


def _declared_georef(item: pystac.Item, key: str) -> tuple[tuple[int, int] | None, tuple[float, ...] | None]:
    asset = item.assets[key]
    shape = asset.extra_fields.get("proj:shape", item.properties.get("proj:shape"))
    transform = asset.extra_fields.get("proj:transform", item.properties.get("proj:transform"))
    return (tuple(shape) if shape else None, tuple(transform[:6]) if transform else None)


def reconcile_georef(items: Sequence[pystac.Item], keys: Sequence[str], check: str = "first", *,
                     access: AssetAccess | None = None, settings: ReadSettings | None = None) -> list[pystac.Item]:
    """Make the items' ``proj:shape``/``proj:transform`` agree with the asset files.

    The file wins: its georeferencing is what GDAL reads, while item metadata can be stale or
    describe another rendition (e.g. decimated test copies of a 10 m product). ``check`` is
    ``"first"`` (read the headers of the first item's assets; if any disagrees, read all),
    ``"all"`` or ``"none"``. Returns copies; mismatches give a GeorefMismatchWarning.
    """
    if check not in ("first", "all", "none"):
        raise ValueError(f"georef_check must be 'first', 'all' or 'none', got {check!r}")
    out = [it.clone() for it in items]
    if check == "none" or not out:
        return out

    def fix(batch: Sequence[pystac.Item]) -> int:
        pairs = [(it, k) for it in batch for k in keys]
        with ThreadPoolExecutor(max_workers=8) as pool:
            found = list(pool.map(lambda p: _read_georef(p[0].assets[p[1]].href, access, settings), pairs))
        n_bad = 0
        mismatches: dict[str, list[str]] = {}
        for (item, key), geo in zip(pairs, found, strict=True):
            shape, transform = _declared_georef(item, key)
            same = (shape == geo.shape and transform is not None
                    and np.allclose(transform, geo.transform, atol=1e-6))
            if same:
                continue
            n_bad += 1
            asset = item.assets[key]
            asset.extra_fields["proj:shape"] = list(geo.shape)
            asset.extra_fields["proj:transform"] = list(geo.transform)
            if geo.epsg is not None:
                asset.extra_fields["proj:code"] = f"EPSG:{geo.epsg}"
            mismatches.setdefault(item.id, []).append(
                f"{key} declares {shape} @ {transform}, file is {geo.shape} @ {geo.transform}")
        for item_id, lines in mismatches.items():
            warnings.warn(GeorefMismatchWarning(
                f"item {item_id}: proj:shape/proj:transform disagree with the asset files; using the "
                f"files' georeferencing ({'; '.join(lines)})"), stacklevel=3)
        return n_bad

    if check == "all" or fix(out[:1]) > 0:
        fix(out if check == "all" else out[1:])
    return out


# --- grid -------------------------------------------------------------------------------------


def _item_epsg(item: pystac.Item, key: str) -> int | None:
    asset = item.assets[key]
    for src in (asset.extra_fields, item.properties):
        code = src.get("proj:code") or src.get("proj:epsg")
        if code is not None:
            return int(str(code).split(":")[-1])
    return None


def native_grid(items: Sequence[pystac.Item], keys: Sequence[str], bbox: BBox,
                resolution: float | None = None, policy: str = "utm") -> GridSpec:
    """The grid a stack is assembled on; finest native resolution of ``keys``; aligned to the source.

    ``policy="utm"``: the UTM zone of the bbox centre (Sentinel-2). ``policy="native"``: the first
    item's own CRS (PROBA-V's plate carree). When the first item is in the grid's CRS, the pixel
    edges are those of its finest asset, so loading needs no resampling.
    """
    best: tuple[float, tuple[float, float]] | None = None
    for key in keys:
        _, transform = _declared_georef(items[0], key)
        if transform is None:
            continue
        res = abs(float(transform[0]))
        if best is None or res < best[0]:
            best = (res, (float(transform[2]), float(transform[5])))
    source_epsg = _item_epsg(items[0], keys[0])
    if policy == "native":
        if source_epsg is None:
            raise InvalidDataError(f"item {items[0].id} declares no CRS (proj:code/proj:epsg)")
        epsg = source_epsg
    elif policy == "utm":
        epsg = region_epsg(bbox)
    else:
        raise ValueError(f"grid policy must be 'utm' or 'native', got {policy!r}")
    if best is None:
        if resolution is None:
            raise InvalidDataError(
                f"item {items[0].id} has no proj:transform for {list(keys)} and no resolution was given; "
                "pass resolution=<grid units>")
        return GridSpec(epsg, float(resolution))
    res = float(resolution) if resolution is not None else best[0]
    if source_epsg == epsg and abs(res - best[0]) <= 1e-9 * best[0]:
        return GridSpec.aligned_to(epsg, res, best[1])
    return GridSpec(epsg, res)


# --- grouping --------------------------------------------------------------------------------


def solar_day(item: pystac.Item) -> dt.date:
    """Local solar date of an acquisition (UTC time shifted by the footprint's longitude)."""
    when = item.datetime or item.common_metadata.start_datetime
    if when is None:
        raise InvalidDataError(f"item {item.id} has no datetime")
    lon = 0.0
    if item.bbox:
        lon = (item.bbox[0] + item.bbox[2]) / 2.0
    return (when + dt.timedelta(hours=lon / 15.0)).date()


def _solar_day_key(item: pystac.Item, _parsed: Any, _idx: int) -> str:
    return solar_day(item).isoformat()


def group_by_solar_day(items: Sequence[pystac.Item]) -> list[list[pystac.Item]]:
    """Items per solar day, days in order, items in (datetime, id) order, as odc-stac fuses them."""
    groups: dict[str, list[pystac.Item]] = {}
    for it in items:
        groups.setdefault(solar_day(it).isoformat(), []).append(it)
    return [sorted(groups[k], key=lambda it: (it.datetime, it.id)) for k in sorted(groups)]


# --- assembly --------------------------------------------------------------------------------


def _native_resolution(item: pystac.Item, key: str) -> float | None:
    """The pixel size of a band's asset from its (reconciled) proj:transform; None if it declares none."""
    _, tr = _declared_georef(item, key)
    return abs(float(tr[0])) if tr is not None else None


def _same(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def sharpening_plan(sensor: SensorProfile, bands: Sequence[str], resolution: float | None = None,
                    sharpen: Any = "auto") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(bands to sharpen, guide bands) for a request, from the sensor's vocabulary: the bands whose
    native pixels are ``sensor.sharpen_ratio`` x those of the guide bands, when the grid is the guide's
    (``resolution``, else the finest requested band). Empty when ``sharpen`` is ``"bilinear"``/None,
    the sensor has no guide bands (PROBA-V) or nothing is that much coarser (60 m bands stay bilinear).
    :func:`assemble` decides again from the assets' own georeferencing."""
    if sharpen is None or sharpen == "bilinear" or not sensor.guide_bands or not bands:
        return (), ()
    voc = sensor.vocabulary
    guide_res = min(voc.info(g).resolution for g in sensor.guide_bands)
    grid_res = float(resolution) if resolution is not None else min(voc.info(b).resolution for b in bands)
    if not _same(grid_res, guide_res):
        return (), ()
    low = tuple(b for b in bands if _same(voc.info(b).resolution, sensor.sharpen_ratio * guide_res))
    return (low, tuple(sensor.guide_bands)) if low else ((), ())


def _reflectance(ds: xr.Dataset, key: str, groups: Sequence[Sequence[pystac.Item]], sensor: SensorProfile,
                 harmonize: str) -> xr.DataArray:
    """One band of an odc-stac load as reflectance (time, y, x): DN scaled per solar day, no data NaN."""
    da = ds[key]
    per_group = [sensor.scaling(g[0], key, harmonize) for g in groups]
    for g, (s, o, _) in zip(groups, per_group, strict=True):
        for it in g[1:]:
            if sensor.scaling(it, key, harmonize)[:2] != (s, o):
                log.warning("items %s and %s of one solar day scale %s differently; using %s's",
                            g[0].id, it.id, key, g[0].id)
    scale = xr.DataArray(np.array([p[0] for p in per_group], np.float32), dims="time")
    offset = xr.DataArray(np.array([p[1] for p in per_group], np.float32), dims="time")
    nodata = per_group[0][2]
    if nodata is None:
        nodata = da.attrs.get("nodata")
    refl = da.astype(np.float32) * scale + offset
    if nodata is not None:
        refl = refl.where(da != nodata)
    return refl


def _stack_bands(frames: Sequence[xr.DataArray], names: Sequence[str]) -> xr.DataArray:
    """(time, y, x) reflectance frames -> (time, band, y, x) with band names."""
    out = xr.concat(frames, dim="band", coords="minimal", compat="override", join="override")
    return out.assign_coords(band=list(names)).transpose("time", "band", "y", "x")


def _odc_load(items: Sequence[pystac.Item], keys: Sequence[str], geobox: GeoBox, chunk: int,
              resampling: dict[str, str], access: AssetAccess, settings: ReadSettings) -> xr.Dataset:
    with warnings.catch_warnings():
        # rasterio warns about un-georeferenced reprojection scratch buffers during warps
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = odc.stac.load(
            items, bands=list(dict.fromkeys(keys)), geobox=geobox,
            chunks={"time": 1, "y": chunk, "x": chunk}, groupby=_solar_day_key,
            resampling=resampling, fail_on_error=True, driver=AccessDriver(access, settings),
        )
    # geographic grids come back as latitude/longitude: srcube's dims are always (time, band, y, x)
    return ds.rename({k: v for k, v in (("latitude", "y"), ("longitude", "x")) if k in ds.dims})


def assemble(items: Sequence[pystac.Item], bbox: BBox, bands: Sequence[str], *,
             sensor: SensorProfile = SENTINEL2, resolution: float | None = None, chunk: int = 256,
             harmonize: str | None = None, georef_check: str = "first", catalog: str | None = None,
             access: AssetAccess | None = None, settings: ReadSettings | None = None,
             sharpen: str | ModelSpec | SRModel | None = "auto", halo: int = 0) -> xr.Dataset:
    """Lazy stack of ``items`` over ``bbox`` on the sensor's grid, one frame per solar day.

    ``halo``: grid pixels read beyond ``bbox`` on each side (where the items have them; NaN elsewhere), so
    that super-resolution sees the real neighbours of the region's edge pixels. Band sharpening reads its
    own receptive field beyond that. The attribute ``halo`` says how many pixels the stack carries (the
    requested ones, rounded up to whole pixels of the sharpened bands); clearance is the region's only.

    Returns ``reflectance`` (time, band, y, x) float32 (DN scaled per item by the sensor's rules,
    no data as NaN) and ``qa`` (time, y, x): the sensor's raw quality band (SCL, status map), from
    which :func:`with_clearance` derives the clear mask. ``access`` prepares each href right before
    it is read (signing, credentials: :mod:`pipeline.search.access`), with the GDAL ``settings``;
    ``catalog`` (a profile name) tells the harmonisation rules who distributes the items.

    The grid has the finest native resolution of ``bands`` (or ``resolution``). Bands with that
    resolution are copied pixel for pixel. Bands ``sensor.sharpen_ratio`` x coarser than a grid of
    the sensor's guide bands (Sentinel-2: the 20 m bands on a 10 m grid) are band-sharpened unless
    ``sharpen`` is ``"bilinear"`` or None: the grid is snapped so that its origin is a pixel edge of
    the coarse bands' own grid, those bands are loaded on that native grid (each of their pixels
    exactly 2 x 2 grid pixels), and :func:`pipeline.sr.sharpening.sharpen` puts them on the grid with the
    guide bands (B02 B03 B04 B08, loaded for this even when not requested) and the sharpener
    ``sharpen`` (``"auto"``, a name, weights or a model, as :func:`pipeline.sr.sharpening.sharpen` takes).
    Other coarser bands (Sentinel-2's 60 m bands, or every coarser band with ``"bilinear"``) are
    interpolated bilinearly by odc-stac. The attributes ``sharpened_bands``, ``interpolated_bands``
    and ``sharpen_*`` (model, weights sha256) say what was done.
    """
    access = access or AssetAccess()
    settings = settings or ReadSettings.capture()
    if not items:
        raise InvalidDataError("no items to assemble")
    if chunk < 16:
        raise ValueError(f"chunk must be at least 16 pixels, got {chunk}")
    harmonize = harmonize or sensor.harmonize_modes[0]
    if harmonize not in sensor.harmonize_modes:
        raise ValueError(f"harmonize for {sensor.name} must be one of {sensor.harmonize_modes}, got {harmonize!r}")
    vocabulary = sensor.vocabulary
    infos = [vocabulary.info(b) for b in bands]
    qa = vocabulary.info(vocabulary.qa_band)
    _, planned_guide = sharpening_plan(sensor, [b.name for b in infos], resolution, sharpen)
    guides = [vocabulary.info(g) for g in planned_guide]
    keys = {b.name: asset_key(items[0], b) for b in (*infos, *guides, qa)}
    for it in items[1:]:
        for b in (*infos, *guides, qa):
            k = asset_key(it, b)
            if k != keys[b.name]:
                raise InvalidDataError(
                    f"items disagree on the asset of band {b.name}: {items[0].id} has {keys[b.name]!r}, "
                    f"{it.id} has {k!r}; search one collection at a time")
    items = reconcile_georef(items, list(dict.fromkeys(keys.values())), georef_check, access=access,
                             settings=settings)
    if harmonize == "auto":
        items = harm.annotate(items, sensor, [b.name for b in infos], catalog=catalog, access=access,
                              settings=settings)
    grid = native_grid(items, [keys[b.name] for b in infos], bbox, resolution, sensor.grid)
    geobox = grid.geobox(bbox).pad(halo)
    groups = group_by_solar_day(items)
    res_of = {b.name: _native_resolution(items[0], keys[b.name]) for b in (*infos, *guides)}

    # sharpened: coarser by the sensor's ratio than a grid that is the guide bands' own resolution (as
    # the assets declare it: without a proj:transform the bands' grids cannot be aligned)
    ratio = sensor.sharpen_ratio
    extra = 0  # grid pixels read beyond the halo for the sharpener alone
    low: list[BandInfo] = []
    if guides and all(_same(res_of[g.name], grid.resolution) for g in guides):
        low = [b for b in infos if _same(res_of[b.name], ratio * grid.resolution)]
    if low:
        # the coarse bands' native grid, and the grid as its pixels split ratio x ratio: its origin is
        # a pixel edge of the coarse bands (and of the fine ones: Sentinel-2 tiles share their corner)
        _, tr = _declared_georef(items[0], keys[low[0].name])
        epsg = grid.epsg
        low_grid = (GridSpec.aligned_to(epsg, ratio * grid.resolution, (float(tr[2]), float(tr[5])))
                    if tr is not None and _item_epsg(items[0], keys[low[0].name]) == epsg
                    else GridSpec(epsg, ratio * grid.resolution))
        assert sharpen is not None  # sharpening_plan found no guide bands otherwise
        ref, local, inner = resolve_sharpener(sharpen, ratio, [b.name for b in low], [g.name for g in guides],
                                              len(low), len(guides))
        low_halo = -(-halo // ratio)  # whole coarse pixels
        # the sharpened pixels of the halo see their own receptive field of coarse pixels (cropped after)
        extra = inner.receptive_field if halo else 0
        low_geobox = low_grid.geobox(bbox).pad(low_halo + extra)
        geobox = finer_geobox(low_geobox, ratio)
        halo, extra = low_halo * ratio, extra * ratio
        snapped = GridSpec.aligned_to(epsg, grid.resolution, (geobox.affine.c, geobox.affine.f)).anchor
        if any(min(abs(a - b), 1 - abs(a - b)) > 1e-6 for a, b in zip(snapped, grid.anchor, strict=True)):
            log.warning("the %s m bands' pixel edges are not on the %s m bands' grid: the %s m bands are "
                        "resampled (nearest) onto the snapped grid", ratio * grid.resolution, grid.resolution,
                        grid.resolution)

    # bands coarser than the grid and not sharpened are interpolated; same-resolution bands are
    # copied pixel for pixel; the QA band is always taken by nearest neighbour
    low_names = {b.name for b in low}
    fine = [b for b in infos if b.name not in low_names] + ([*guides] if low else [])
    resampling: dict[str, str] = {}
    interpolated: list[str] = []
    for b in fine:
        res = res_of[b.name]
        coarser = res is not None and res > grid.resolution * (1 + 1e-9)
        resampling[keys[b.name]] = "bilinear" if coarser else "nearest"
        if coarser:
            interpolated.append(b.name)
    resampling[keys[qa.name]] = "nearest"
    ds = _odc_load(items, [*(keys[b.name] for b in fine), keys[qa.name]], geobox, chunk, resampling, access,
                   settings)
    if ds.sizes["time"] != len(groups):
        raise RuntimeError(f"odc-stac made {ds.sizes['time']} frames from {len(groups)} solar days")
    frames = {b.name: _reflectance(ds, keys[b.name], groups, sensor, harmonize) for b in fine}

    sharpen_attrs: dict[str, Any] = {}
    if low:
        low_ds = _odc_load(items, [keys[b.name] for b in low], low_geobox, max(chunk // ratio, 8),
                           {keys[b.name]: "nearest" for b in low}, access, settings)
        if not np.array_equal(low_ds.time.values, ds.time.values):
            raise RuntimeError("odc-stac made other frames for the coarse bands than for the fine ones")
        low_da = _stack_bands([_reflectance(low_ds, keys[b.name], groups, sensor, harmonize) for b in low],
                              [b.name for b in low])
        guide_da = _stack_bands([frames[g.name] for g in guides], [g.name for g in guides])
        # tiles of the stack's chunks where the receptive field allows: the result needs no rechunk
        tile = chunk // ratio if chunk // ratio >= inner.receptive_field else None
        sharp = sharpen_bands(low_da, guide_da, ref, tile=tile)
        sharp = sharp.chunk({"y": ds.chunks["y"], "x": ds.chunks["x"]})
        for b in low:
            frames[b.name] = sharp.sel(band=b.name, drop=True)
        meta = getattr(local, "weights_meta", None)
        sharpen_attrs = {"sharpen_model": local.name,
                         "sharpen_weights_sha256": meta.sha256 if meta is not None else "none"}
    else:
        sharpen_attrs = {"sharpen_model": "none", "sharpen_weights_sha256": "none"}

    reflectance = _stack_bands([frames[b.name] for b in infos], [b.name for b in infos])
    reflectance = reflectance.chunk({"band": -1}).rename("reflectance")
    reflectance.attrs = {"long_name": "surface reflectance", "units": "1"}
    qa_da = ds[keys[qa.name]].rename("qa")
    qa_da.attrs = {"long_name": f"{sensor.name} quality band {qa.name}", "classes": sensor.describe_qa()}
    out = xr.Dataset({"reflectance": reflectance, "qa": qa_da})
    out = out.assign_coords(items=("time", [",".join(it.id for it in g) for g in groups]))
    if extra:
        out = out.isel(y=slice(extra, out.sizes["y"] - extra), x=slice(extra, out.sizes["x"] - extra))
    out.attrs.update(sensor=sensor.name, grid_epsg=grid.epsg, resolution=grid.resolution, harmonize=harmonize,
                     halo=halo,
                     sharpened_bands=json.dumps([b.name for b in low]),
                     interpolated_bands=json.dumps([b for b in interpolated if b in {i.name for i in infos}]),
                     **sharpen_attrs)
    if harmonize == "auto":
        out.attrs["harmonization"] = json.dumps([harm.summary(harm.decision_of(it)) for it in items])
    return out


def region_only(stack: xr.Dataset) -> dict[str, slice]:
    """The ``isel`` of a stack's region: without the ``halo`` pixels it carries on each side."""
    h = int(stack.attrs.get("halo", 0))
    return {"y": slice(h, stack.sizes["y"] - h), "x": slice(h, stack.sizes["x"] - h)}


def with_clearance(stack: xr.Dataset, sensor: SensorProfile, classes: Sequence[int] | None = None) -> xr.Dataset:
    """Add ``clear`` (time, y, x), ``clear_fraction`` and ``clearance_score`` (time) to a stack, lazily.

    ``clear_fraction``: share of the region's pixels that the QA band calls clear (no data counts
    as not clear). ``clearance_score``: mean per-pixel clearance weight (1 clear, partial for
    doubtful classes such as thin cirrus or "undefined"), used to rank frames. Both read only the
    QA band, inside the stack's ``halo`` (the region's pixels); the cube's ``clear`` layer also requires
    data in every band.
    """
    classes = sensor.validate_clear_classes(classes)
    bands = [str(b) for b in stack.band.values]
    clear = sensor.clear_mask(stack.qa, classes, bands).rename("clear")
    clear.attrs = {"long_name": "clear pixel", "clear_classes": list(classes)}
    weight = sensor.clearance_weight(stack.qa, classes)
    out = stack.assign(clear=clear)
    core = region_only(stack)
    out["clear_fraction"] = clear.isel(core).mean(("y", "x"), dtype=np.float64).rename("clear_fraction")
    out["clearance_score"] = weight.isel(core).mean(("y", "x"), dtype=np.float64).rename("clearance_score")
    out.attrs["clear_classes"] = list(classes)
    return out

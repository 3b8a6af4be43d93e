"""Assemble STAC items into one lazy multi-temporal stack on one grid (odc-stac).

The result is an ``xarray.Dataset`` with

* ``reflectance`` (time, band, y, x) float32: ``raster:bands`` scale and offset applied, no data
  as NaN;
* ``clear`` (time, y, x) bool: from the SCL classes counted as clear;
* coordinates ``time`` (one per solar day), ``band`` (canonical names), ``items`` (the ids fused
  into each frame), ``x``/``y`` pixel centres and ``spatial_ref``.

Nothing is read from the rasters here except headers (to check item georeferencing); pixel
reads happen when the Dask graph runs, each asset opened once per tile.
"""

from __future__ import annotations

import datetime as dt
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

from pipeline.bands import SENTINEL2, BandVocabulary, asset_key
from pipeline.clearance import DEFAULT_CLEAR_CLASSES, clear_mask
from pipeline.errors import GeorefMismatchWarning, InvalidDataError
from pipeline.grid import GridSpec, utm_epsg
from pipeline.params import BBox

log = logging.getLogger(__name__)


# --- item georeferencing ---------------------------------------------------------------------


@dataclass(frozen=True)
class AssetGeoref:
    epsg: int | None
    shape: tuple[int, int]
    transform: tuple[float, float, float, float, float, float]


def _read_georef(href: str) -> AssetGeoref:
    with rasterio.open(href) as src:
        t = src.transform
        epsg = src.crs.to_epsg() if src.crs else None
        return AssetGeoref(epsg, (src.height, src.width), (t.a, t.b, t.c, t.d, t.e, t.f))


def _declared_georef(item: pystac.Item, key: str) -> tuple[tuple[int, int] | None, tuple[float, ...] | None]:
    asset = item.assets[key]
    shape = asset.extra_fields.get("proj:shape", item.properties.get("proj:shape"))
    transform = asset.extra_fields.get("proj:transform", item.properties.get("proj:transform"))
    return (tuple(shape) if shape else None, tuple(transform[:6]) if transform else None)


def reconcile_georef(items: Sequence[pystac.Item], keys: Sequence[str], check: str = "first") -> list[pystac.Item]:
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
            found = list(pool.map(lambda p: _read_georef(p[0].assets[p[1]].href), pairs))
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
                resolution: float | None = None) -> GridSpec:
    """UTM zone of the bbox centre; finest native resolution of ``keys``; aligned to the source.

    When the first item is in the same CRS, the grid's pixel edges are those of its finest asset,
    so loading needs no resampling.
    """
    epsg = utm_epsg(*bbox.center)
    best: tuple[float, tuple[float, float]] | None = None
    for key in keys:
        _, transform = _declared_georef(items[0], key)
        if transform is None:
            continue
        res = abs(float(transform[0]))
        if best is None or res < best[0]:
            best = (res, (float(transform[2]), float(transform[5])))
    if best is None:
        raise InvalidDataError(
            f"item {items[0].id} has no proj:transform for {list(keys)} and no resolution was given; "
            "pass resolution=<metres>")
    res = float(resolution) if resolution is not None else best[0]
    if _item_epsg(items[0], keys[0]) == epsg and abs(res - best[0]) < 1e-9:
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


# --- scaling ---------------------------------------------------------------------------------


def raster_scaling(item: pystac.Item, key: str) -> tuple[float, float, float | None]:
    """(scale, offset, nodata) of a single-band asset from ``raster:bands`` (1, 0, None if absent)."""
    rb = item.assets[key].extra_fields.get("raster:bands") or [{}]
    b0 = rb[0] if isinstance(rb, list) and rb else {}
    nodata = b0.get("nodata")
    return float(b0.get("scale", 1.0)), float(b0.get("offset", 0.0)), (float(nodata) if nodata is not None else None)


# --- assembly --------------------------------------------------------------------------------


def assemble(items: Sequence[pystac.Item], bbox: BBox, bands: Sequence[str], *,
             vocabulary: BandVocabulary = SENTINEL2, resolution: float | None = None,
             chunk: int = 256, clear_classes: Sequence[int] = DEFAULT_CLEAR_CLASSES,
             georef_check: str = "first") -> xr.Dataset:
    """Lazy stack of ``items`` over ``bbox`` on the native UTM grid, one frame per solar day."""
    if not items:
        raise InvalidDataError("no items to assemble")
    if chunk < 16:
        raise ValueError(f"chunk must be at least 16 pixels, got {chunk}")
    infos = [vocabulary.info(b) for b in bands]
    qa = vocabulary.info(vocabulary.qa_band)
    keys = {b.name: asset_key(items[0], b) for b in (*infos, qa)}
    for it in items[1:]:
        for b in (*infos, qa):
            k = asset_key(it, b)
            if k != keys[b.name]:
                raise InvalidDataError(
                    f"items disagree on the asset of band {b.name}: {items[0].id} has {keys[b.name]!r}, "
                    f"{it.id} has {k!r}; search one collection at a time")
    items = reconcile_georef(items, list(keys.values()), georef_check)
    grid = native_grid(items, [keys[b.name] for b in infos], bbox, resolution)
    geobox = grid.geobox(bbox)
    groups = group_by_solar_day(items)

    # bands coarser than the grid are interpolated; same-resolution bands are copied pixel for
    # pixel; the SCL classes are always taken by nearest neighbour
    resampling: dict[str, str] = {}
    for b in infos:
        _, tr = _declared_georef(items[0], keys[b.name])
        coarser = tr is not None and abs(float(tr[0])) > grid.resolution * (1 + 1e-9)
        resampling[keys[b.name]] = "bilinear" if coarser else "nearest"
    resampling[keys[qa.name]] = "nearest"

    with warnings.catch_warnings():
        # rasterio warns about un-georeferenced reprojection scratch buffers during warps
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        ds = odc.stac.load(
            items, bands=list(dict.fromkeys(keys.values())), geobox=geobox,
            chunks={"time": 1, "y": chunk, "x": chunk}, groupby=_solar_day_key,
            resampling=resampling, fail_on_error=True,
        )
    if ds.sizes["time"] != len(groups):
        raise RuntimeError(f"odc-stac made {ds.sizes['time']} frames from {len(groups)} solar days")

    frames = []
    for b in infos:
        da = ds[keys[b.name]]
        per_group = [raster_scaling(g[0], keys[b.name]) for g in groups]
        for g, (s, o, _) in zip(groups, per_group, strict=True):
            for it in g[1:]:
                if raster_scaling(it, keys[b.name])[:2] != (s, o):
                    log.warning("items %s and %s of one solar day scale %s differently; using %s's",
                                g[0].id, it.id, b.name, g[0].id)
        scale = xr.DataArray(np.array([p[0] for p in per_group], np.float32), dims="time")
        offset = xr.DataArray(np.array([p[1] for p in per_group], np.float32), dims="time")
        nodata = per_group[0][2]
        if nodata is None:
            nodata = da.attrs.get("nodata")
        refl = da.astype(np.float32) * scale + offset
        if nodata is not None:
            refl = refl.where(da != nodata)
        frames.append(refl)
    reflectance = xr.concat(frames, dim="band", coords="minimal", compat="override", join="override")
    reflectance = reflectance.assign_coords(band=[b.name for b in infos]).transpose("time", "band", "y", "x")
    reflectance = reflectance.chunk({"band": -1}).rename("reflectance")
    reflectance.attrs = {"long_name": "surface reflectance", "units": "1"}

    clear = clear_mask(ds[keys[qa.name]], clear_classes)
    clear.attrs = {"long_name": "clear pixel (SCL class in clear_classes)",
                   "clear_classes": list(map(int, clear_classes))}
    out = xr.Dataset({"reflectance": reflectance, "clear": clear})
    out = out.assign_coords(items=("time", [",".join(it.id for it in g) for g in groups]))
    out.attrs["grid_epsg"] = grid.epsg
    out.attrs["resolution"] = grid.resolution
    return out

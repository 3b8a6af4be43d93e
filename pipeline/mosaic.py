"""``open_area``: one lazy xarray mosaic of an area's cell cubes over a bbox (zarr + odc-geo, no GDAL).

The mosaic's grid is the grid a single run over the bbox would have: the UTM zone of the bbox centre (or ``crs``),
the cubes' input grid snapped to the bbox and split ``scale`` times (or ``resolution``). Cells of that zone and
resolution are on that grid already (their squares are whole pixels of it): their pixels are taken as they are,
block by block, so over one zone the mosaic equals the one-bbox run pixel for pixel. Cells of other zones (the
bbox reaches across a zone border) fill what the mosaic's own zone's cells leave empty, reprojected onto its grid
with ``resampling`` (nearest by default: values are the cells' own, placed within half a pixel). Times are the union
of the cells' (within ``dates``); a cell without a time step is NaN there (``clear`` 0).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from srcube.pipeline.cells import Cell, iter_cells
from srcube.pipeline.errors import InvalidOptionError, OutputNotWritableError
from srcube.pipeline.params import BBox, BBoxLike, DateRange, DatesLike

#: variables the mosaic carries, with their fill value where no cell has data
VARIABLES = {"reflectance": np.nan, "clear": 0, "consistency": np.nan}


def _prefix(index: str) -> str:
    text = str(index).rstrip("/")
    return text.removesuffix("/collection.json")


def open_area(index: str, bbox: BBoxLike, dates: DatesLike | None = None, *, crs: int | str | None = None,
              resolution: float | None = None, bands: Sequence[str] | None = None, resampling: str = "nearest",
              storage_options: Mapping[str, Any] | None = None) -> xr.Dataset:
    """The area's cubes over ``bbox`` (lon/lat) as one lazy Dataset: ``reflectance`` (time, band, y, x), ``clear``
    (time, y, x) and ``consistency`` where every cube has it, on the grid described in the module docstring.
    ``index`` is the area's folder or its ``collection.json``; ``dates`` an inclusive range to keep; ``crs`` an EPSG
    code (default: the UTM zone of the bbox centre); ``resolution`` the output pixel size (default the cubes')."""
    import odc.geo.xr  # noqa: F401  (the .odc accessor)

    from srcube.pipeline.assemble.grid import GridSpec, finer_geobox, region_epsg
    from srcube.pipeline.write import areaindex
    from srcube.pipeline.write.store import CubeStore

    prefix = _prefix(index)
    region = BBox.parse(bbox)
    days = DateRange.parse(dates) if dates is not None else None
    collection = areaindex.read_collection(prefix, storage_options)
    if collection is None or not isinstance(collection.get("srcube:cell_size_m"), int):
        raise OutputNotWritableError(f"{prefix} holds no srcube area index (collection.json with srcube:cell_size_m); "
                                     "give the folder run_area wrote")
    size = int(collection["srcube:cell_size_m"])
    present = set(areaindex.cell_ids(prefix, storage_options))
    cells = [c for c in iter_cells(region, size / 1000) if c.id in present]
    if not cells:
        raise InvalidOptionError(f"no cube of {prefix} overlaps the bbox {region.as_tuple()}; the area's cells are "
                                 f"{len(present)}, none of them there")
    cubes = {c: CubeStore(f"{prefix}/{c.id}.zarr", storage_options).open() for c in cells}
    first = next(iter(cubes.values()))
    scale = int(first.attrs["scale"])
    input_res = float(first.attrs["input_resolution"])
    epsg = int(str(crs).split(":")[-1]) if crs is not None else region_epsg(region)
    if resolution is None or abs(float(resolution) - input_res / scale) < 1e-9:
        # the input grid of a run over the bbox, split scale x scale: the cells' own pixels where in this zone
        anchor_of = next((ds for c, ds in cubes.items() if c.epsg == epsg), None)
        grid = (GridSpec.aligned_to(epsg, input_res, (float(anchor_of.x[0]) - input_res / scale / 2,
                                                        float(anchor_of.y[0]) + input_res / scale / 2))
                if anchor_of is not None else GridSpec(epsg, input_res))
        geobox = finer_geobox(grid.geobox(region), scale)
    else:
        geobox = GridSpec(epsg, float(resolution)).geobox(region)
    times = _times(cubes.values(), days)
    if bands is not None:
        missing = sorted(set(bands) - {str(b) for b in first.band.values})
        if missing:
            raise InvalidOptionError(f"bands {missing} are not in the area's cubes "
                                     f"({list(map(str, first.band.values))})")
    names = [n for n in VARIABLES if all(n in ds for ds in cubes.values())]
    out: dict[str, xr.DataArray] = {}
    for name in names:
        native: list[xr.DataArray] = []
        other: list[xr.DataArray] = []
        for cell, ds in cubes.items():
            var = ds[name]
            # per-frame coordinates (items) are each cell's own; the scalar grid mapping (spatial_ref) stays
            var = var.drop_vars([c for c in var.coords if c not in var.dims and var[c].ndim > 0])
            if bands is not None and "band" in var.dims:
                var = var.sel(band=list(bands))
            var = var.sel(time=var.time[var.time.isin(times)]).reindex(time=times, fill_value=VARIABLES[name])
            same = cell.epsg == epsg and abs(abs(float(ds.x[1] - ds.x[0])) - abs(geobox.resolution.x)) < 1e-9
            (native if same else other).append(var)
        mosaic = _blocks(native, geobox, VARIABLES[name], first[name], times, bands)
        for var in other:  # other zones (or resolutions) fill what is left, reprojected
            moved = var.odc.reproject(geobox, resampling=resampling, dst_nodata=VARIABLES[name])
            moved = moved.assign_coords(x=mosaic.x, y=mosaic.y)
            mosaic = mosaic.where(_has(mosaic, VARIABLES[name]), moved)
        mosaic.attrs = dict(first[name].attrs)
        out[name] = mosaic
    ds = xr.Dataset(out)
    ds = ds.odc.assign_crs(f"EPSG:{epsg}")
    ds.attrs = {"title": "srcube area mosaic", "index": prefix, "cells": [c.id for c in cubes],
                "bbox": list(region.as_tuple()), "scale": scale, "model": first.attrs.get("model"),
                "resampling_other_zones": resampling}
    return ds


def _has(arr: xr.DataArray, fill: float) -> xr.DataArray:
    return arr.notnull() if isinstance(fill, float) and np.isnan(fill) else arr != fill


def _times(cubes: Any, days: DateRange | None) -> np.ndarray:
    values = np.unique(np.concatenate([np.asarray(ds.time.values) for ds in cubes]))
    if days is not None:
        start = np.datetime64(days.start.isoformat())
        end = np.datetime64(days.end.isoformat()) + np.timedelta64(1, "D")
        values = values[(values >= start) & (values < end)]
    return values


def _blocks(native: list[xr.DataArray], geobox: Any, fill: float, like: xr.DataArray, times: np.ndarray,
            bands: Sequence[str] | None) -> xr.DataArray:
    """The mosaic of cubes on the mosaic's own grid: each cube's window taken as it is, NaN (or ``fill``) where no
    cube is, as one Dask array of blocks (no resampling, no copy)."""
    ny, nx = geobox.shape
    tx0, ty0 = geobox.affine.c, geobox.affine.f
    res = geobox.resolution.x
    lead = {d: n for d, n in zip(like.dims, like.shape, strict=True) if d not in ("y", "x")}
    lead["time"] = len(times)
    if "band" in lead and bands is not None:
        lead["band"] = len(bands)
    dims = (*lead, "y", "x")
    # each cube's window in the mosaic (rows, columns), clipped to it
    windows = []
    for var in native:
        c0 = round((float(var.x[0]) - res / 2 - tx0) / res)
        r0 = round((ty0 - (float(var.y[0]) + res / 2)) / res)
        r1, c1 = r0 + var.sizes["y"], c0 + var.sizes["x"]
        rr0, rr1, cc0, cc1 = max(r0, 0), min(r1, ny), max(c0, 0), min(c1, nx)
        if rr0 < rr1 and cc0 < cc1:
            windows.append((rr0, rr1, cc0, cc1, var.isel(y=slice(rr0 - r0, rr1 - r0), x=slice(cc0 - c0, cc1 - c0))))
    rows = sorted({0, ny, *[w[0] for w in windows], *[w[1] for w in windows]})
    cols = sorted({0, nx, *[w[2] for w in windows], *[w[3] for w in windows]})
    # NaN where no cube is: a float array keeps its type (float32 reflectance stays float32)
    dtype = like.dtype if not isinstance(fill, float) or np.issubdtype(like.dtype, np.floating) else np.float32
    grid = []
    for ra, rb in itertools.pairwise(rows):
        line = []
        for ca, cb in itertools.pairwise(cols):
            hit = next((w for w in windows if w[0] <= ra and rb <= w[1] and w[2] <= ca and cb <= w[3]), None)
            if hit is None:
                line.append(da.full((*lead.values(), rb - ra, cb - ca), fill, dtype=dtype))
            else:
                rr0, _, cc0, _, var = hit
                line.append(var.transpose(*dims).data[..., ra - rr0:rb - rr0, ca - cc0:cb - cc0].astype(dtype))
        grid.append(line)
    data = da.block(grid)
    coords = {"time": times, "y": geobox.coords["y"].values, "x": geobox.coords["x"].values}
    if "band" in lead:
        coords["band"] = list(bands) if bands is not None else like.band.values
    return xr.DataArray(data, dims=dims, coords=coords)


def cells_in(index: str, bbox: BBoxLike, storage_options: Mapping[str, Any] | None = None) -> list[Cell]:
    """The cells of the area at ``index`` that overlap ``bbox`` and have a cube."""
    from srcube.pipeline.write import areaindex

    prefix = _prefix(index)
    collection = areaindex.read_collection(prefix, storage_options) or {}
    size = int(collection.get("srcube:cell_size_m") or 0)
    present = set(areaindex.cell_ids(prefix, storage_options))
    return [c for c in iter_cells(BBox.parse(bbox), size / 1000) if c.id in present] if size else []

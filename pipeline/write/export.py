"""A cube's dates as Cloud-Optimized GeoTIFFs, for QGIS, GDAL and rasterio users.

One COG per date with every band of the cube (band descriptions = band names, float32, NaN no data),
on the cube's grid (CRS and transform). A date is written chunk by chunk into a tiled GeoTIFF beside the
target and then copied into the COG layout with overviews by GDAL's COG driver, so memory stays at about
one chunk whatever the size of the frame.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
import rasterio.shutil
import xarray as xr
from rasterio.windows import Window

from srcube.pipeline.errors import CubeAttributeError, InvalidOptionError, OutputNotWritableError


def select_dates(cube: xr.Dataset, dates: Sequence[str] | None) -> list[int]:
    """Indices of the cube's time steps on the given days (YYYY-MM-DD), all if None; a day the cube does not
    have is an InvalidOptionError naming the days it has."""
    days = [_day(t) for t in cube.time.values]
    if not dates:
        return list(range(len(days)))
    missing = [d for d in dates if d[:10] not in days]
    if missing:
        raise InvalidOptionError(f"the cube has no date {', '.join(missing)}; it has {', '.join(days)}")
    return [i for i, d in enumerate(days) if d in {x[:10] for x in dates}]


def check_cog_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` as a Path if COGs can be written into it (made if missing), else OutputNotWritableError (a
    file in the way, no permission); checked before the cube is read."""
    folder = Path(folder)
    place = folder
    while not place.exists() and place.parent != place:
        place = place.parent
    if not place.is_dir():
        where = "" if place == folder else f" ({place} is a file)"
        raise OutputNotWritableError(f"--cog {folder} is a file, not a folder{where}: give a folder for the COGs (one "
                                     "per date), e.g. cogs/")
    if not os.access(place, os.W_OK | os.X_OK):
        raise OutputNotWritableError(f"--cog {folder}: no permission to write in {place}; choose another folder")
    return folder


def _day(value: object) -> str:
    """The day (YYYY-MM-DD) of one of the cube's time values; the cube's time is untrusted input (cubes are shared):
    anything but a date is refused before it becomes part of a file name."""
    try:
        day = str(np.datetime64(cast(Any, value), "D"))
    except (TypeError, ValueError):
        day = ""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
        raise CubeAttributeError(f"the cube's time value {str(value)[:60]!r} is not a date; the cube is corrupt or "
                                 "crafted: nothing is written from it")
    return day


def export_cogs(cube: xr.Dataset, folder: str | Path, *, dates: Sequence[str] | None = None, name: str = "srcube",
                overviews: str = "AVERAGE") -> list[Path]:
    """Write one COG per date of ``cube`` (``dates``: those days only) into ``folder`` as
    ``<name>_<YYYY-MM-DD>.tif``; return the paths."""
    folder = check_cog_folder(folder)
    times = select_dates(cube, dates)
    gbox = cube.odc.geobox
    if gbox is None:
        raise InvalidOptionError("the cube has no grid (CRS and transform) to write GeoTIFFs on")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(f"--cog {folder} cannot be made: {exc}; choose another folder") from exc
    refl = cube.reflectance
    bands = [str(b) for b in refl.band.values]
    ny, nx = refl.sizes["y"], refl.sizes["x"]
    ychunks = refl.chunks[refl.dims.index("y")] if refl.chunks else (ny,)
    xchunks = refl.chunks[refl.dims.index("x")] if refl.chunks else (nx,)
    paths = []
    for t in times:
        day = _day(cube.time.values[t])
        target = folder / f"{name}_{day}.tif"
        staging = target.with_suffix(".staging.tif")
        profile = {"driver": "GTiff", "width": nx, "height": ny, "count": len(bands), "dtype": "float32",
                   "crs": gbox.crs.to_wkt(), "transform": gbox.affine, "nodata": np.nan, "tiled": True,
                   "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER"}
        frame = refl.isel(time=t)
        with rasterio.open(staging, "w", **profile) as dst:
            for i, band in enumerate(bands, start=1):
                dst.set_band_description(i, band)
            y0 = 0
            for h in ychunks:
                x0 = 0
                for w in xchunks:  # one chunk in memory at a time
                    block = frame.isel(y=slice(y0, y0 + h), x=slice(x0, x0 + w)).values.astype(np.float32)
                    dst.write(block, window=Window(x0, y0, w, h))
                    x0 += w
                y0 += h
        rasterio.shutil.copy(staging, target, driver="COG", COMPRESS="ZSTD", PREDICTOR="YES",
                             OVERVIEW_RESAMPLING=overviews, BIGTIFF="IF_SAFER")
        os.remove(staging)
        paths.append(target)
    return paths

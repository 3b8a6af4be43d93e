"""Multiscale overviews inside the cube, for viewers and quicklooks: every date's reflectance averaged over
``f x f`` blocks, for ``f`` = 4, 8, 16, ... until the longest side is under :data:`SMALLEST` px.

Each level is a group ``overviews/<f>`` of the cube (xarray: ``xr.open_zarr(cube, group="overviews/8")``):
``reflectance`` (time, band, y, x) float32 in chunks of every band (as the cube's), NaN where a block has no
value, with its own ``x``/``y`` (block centres), ``spatial_ref`` and ``grid_mapping``, so rioxarray and
odc-geo read each level on its own grid. Level ``2f`` is made from level ``f`` (each level reads the one
before, not the full frame). The cube's ``overviews`` attribute lists the factors, the resampling and how
many time steps the levels hold; the GeoZarr ``multiscales`` convention says the same for readers that follow it
(:mod:`pipeline.write.geozarr`, written here with the levels).

They are written before the cube is marked complete (:meth:`CubeStore.finalize`, while its chunk manifest
still says every chunk is in), and an append extends them
by its new time steps only: the levels' arrays are resized to the cube's length and the new steps written
into that region, so an interrupted append that is run again rewrites the same region.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr

from srcube.pipeline.errors import CubeAttributeError
from srcube.pipeline.params import safe_name
from srcube.pipeline.write import geozarr
from srcube.pipeline.write.cube import TIME_ENCODING, compressors
from srcube.pipeline.write.store import EVERY_CHUNK, CubeStore, quiet_consolidated

log = logging.getLogger(__name__)

#: the first level's factor, and the longest side (px) under which no coarser level is made
FIRST = 4
SMALLEST = 256
GROUP = "overviews"


def factors(ny: int, nx: int) -> list[int]:
    """The overview factors of a ``ny x nx`` frame: 4, 8, ... while the level's longest side is at least
    :data:`SMALLEST` (one level at least, however small the frame)."""
    out = [FIRST]
    while max(ny, nx) // (out[-1] * 2) >= SMALLEST:
        out.append(out[-1] * 2)
    return out


def _level(prev: xr.DataArray, k: int, crs_var: xr.DataArray | None) -> xr.Dataset:
    lvl = prev.coarsen(y=k, x=k, boundary="trim").mean()  # NaN-skipping.astype(np.float32)
    lvl = lvl.reset_coords(drop=True)  # the per-frame coordinates (items, scores) stay in the cube
    lvl.attrs = {k2: v for k2, v in prev.attrs.items() if k2 in ("long_name", "units", "standard_name")}
    ds = lvl.to_dataset(name="reflectance")
    if crs_var is not None:
        ds = ds.assign_coords(spatial_ref=crs_var.reset_coords(drop=True))
        ds["reflectance"].attrs["grid_mapping"] = "spatial_ref"
    for var in ds.variables.values():
        var.encoding = {}
    return ds


def write_overviews(store: CubeStore, start: int = 0, stop: int | None = None) -> dict[str, Any]:
    """Write the overview levels of the cube at ``store`` for its time steps ``start`` and later (0: all,
    replacing any), or ``start`` to ``stop`` (a repair rewrites its dates' region of the levels there are);
    return the ``overviews`` attribute, also set on the cube."""
    with quiet_consolidated():
        cube = xr.open_zarr(store.zarr_store(), consolidated=False)
    refl = cube.reflectance
    if refl.dtype != np.float32:  # int16 packing unpacks to float64
        refl = refl.astype(np.float32)
    n = cube.sizes["time"]
    crs_var = cube["spatial_ref"] if "spatial_ref" in cube.variables else None
    steps = factors(cube.sizes["y"], cube.sizes["x"])
    prev = refl.isel(time=slice(start, stop))
    root = zarr.open_group(store.zarr_store(), mode="r+")
    grids: list[tuple[str, int, xr.Dataset]] = []  # each level's path, factor and grid (its coordinates)
    # computed here, in threads: not on whichever Dask cluster is the default (it may lack the store's credentials)
    with dask.config.set(scheduler="threads"):
        for i, f in enumerate(steps):
            _write_level(store, root, prev, i, f, start, n if stop is None else stop, crs_var, whole=stop is None)
            with quiet_consolidated():
                written = xr.open_zarr(store.zarr_store(), group=f"{GROUP}/{f}", consolidated=False)
            grids.append((f"{GROUP}/{f}", f, written))
            prev = written.reflectance.isel(time=slice(start, stop))
    attr = {"factors": steps, "resampling": "mean of the valid pixels of each block", "group": GROUP,
            "time_steps": n}
    root.attrs["overviews"] = attr
    geozarr.write(store.zarr_store(), cube, grids)  # GeoZarr: multiscales over these levels, spatial:, proj:
    log.info("%s: overviews x%s for time steps %d-%d", store.url, ",".join(map(str, steps)), start,
             (n if stop is None else stop) - 1)
    return attr


def _write_level(store: CubeStore, root: zarr.Group, prev: xr.DataArray, i: int, f: int, start: int, n: int,
                 crs_var: xr.DataArray | None, whole: bool = True) -> None:
    """Write level ``f`` (the ``i``-th) from ``prev`` (the cube, or the level before) for time steps ``start:n``
    (``whole``: ``n`` is the cube's length, which the level grows to)."""
    level = _level(prev, FIRST if i == 0 else 2, crs_var)
    path = f"{GROUP}/{f}"
    cy, cx = min(level.sizes["y"], 1024), min(level.sizes["x"], 1024)
    with quiet_consolidated():
        if (start == 0 and whole) or path not in root:
            enc: dict[str, Any] = {str(name): {"compressors": compressors()} for name in level.variables}
            enc["reflectance"]["chunks"] = (1, level.sizes["band"], cy, cx)
            enc["time"].update(TIME_ENCODING)
            level.chunk({"time": 1, "band": -1, "y": cy, "x": cx}).to_zarr(
                store.zarr_store(), group=path, mode="w", zarr_format=3, consolidated=False, encoding=enc,
                write_empty_chunks=True)
            return
        # grow the level to the cube's length, then fill the new steps' region (the same region if run again)
        group = root[path]
        assert isinstance(group, zarr.Group)
        arrays = {name: group[name] for name in ("reflectance", "time")}
        for name, arr in arrays.items():
            assert isinstance(arr, zarr.Array)
            if whole:
                arr.resize((n, *arr.shape[1:]))
            arrays[name] = arr.with_config(EVERY_CHUNK)
        region = level.drop_vars([v for v in level.variables if "time" not in level[v].dims])
        region.chunk({"time": 1, "band": -1, "y": cy, "x": cx}).to_zarr(
            store.zarr_store(), group=path, region={"time": slice(start, n)}, zarr_format=3, consolidated=False,
            write_empty_chunks=True)
        # xarray leaves the index out of a region write: the new times, as the level stores them
        arrays["time"][start:n] = level.time.values.astype("datetime64[ms]").astype(np.int64)  # type: ignore[index]


#: what to do about a cube whose overviews attribute srcube did not write
_ALTERED = ("the cube is corrupt or crafted: write it again (its request, with --overwrite), or ask its sharer for "
            "the cube as srcube wrote it")


def levels(attrs: Mapping[str, Any], url: str) -> tuple[str, list[int]]:
    """The overviews' group and factors from the cube's ``overviews`` attribute; ("", []) without overviews. The
    attribute is untrusted (cubes are shared): a record with a group of plain names and whole factors, checked
    before they name a path in the cube or a STAC asset (CubeAttributeError otherwise)."""
    info = attrs.get("overviews") or {}
    group = info.get("group", "") if isinstance(info, dict) else None
    steps = info.get("factors", []) if isinstance(info, dict) else None
    ok = isinstance(group, str) and isinstance(steps, list) and all(
        isinstance(f, int) and not isinstance(f, bool) and 2 <= f <= 1 << 20 for f in steps)
    if ok and steps:
        try:
            for part in str(group).split("/"):
                safe_name(part, "overview group", CubeAttributeError)
        except CubeAttributeError:
            ok = False
    if not ok:
        raise CubeAttributeError(f"the cube at {url} has overviews {str(info)[:120]!r}, not a group of plain names "
                                 f"and whole factors: {_ALTERED}")
    return str(group), list(steps or [])


def open_level(store: CubeStore, max_side: int) -> xr.Dataset | None:
    """The coarsest overview level whose longest side still has ``max_side`` px (else the finest level), or
    None when the cube has no overviews. A level the ``overviews`` attribute names but the cube does not hold (an
    attribute srcube did not write) is a CubeAttributeError."""
    group, steps = levels(store.attrs(), store.url)
    if not steps:
        return None
    arr = zarr.open_group(store.zarr_store(), mode="r")["reflectance"]
    assert isinstance(arr, zarr.Array)
    ny, nx = arr.shape[-2:]  # level f is ny // f x nx // f (block means, a short last block left out)
    fits = [f for f in steps if max(ny // f, nx // f) >= max_side]
    f = max(fits) if fits else min(steps)
    path = f"{group}/{f}"
    try:
        with quiet_consolidated():
            level = xr.open_zarr(store.zarr_store(), group=path, consolidated=False, decode_coords="all")
    except (FileNotFoundError, ValueError, KeyError) as exc:  # zarr: no such group (or not one xarray can read)
        raise CubeAttributeError(f"the cube at {store.url} has no overview level {path!r}, which its overviews "
                                 f"attribute names ({type(exc).__name__}): {_ALTERED}") from None
    refl = level.get("reflectance")
    if refl is None or refl.dims != ("time", "band", "y", "x") or refl.sizes["time"] != arr.shape[0]:
        raise CubeAttributeError(f"the cube at {store.url} has a group {path!r}, which its overviews attribute names, "
                                 f"that is not an overview level of its {arr.shape[0]} time steps: {_ALTERED}")
    return level

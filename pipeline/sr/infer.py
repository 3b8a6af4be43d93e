"""Tiled, seam-free super-resolution of georeferenced arrays over Dask.

``super_resolve`` (single-image) and ``super_resolve_views`` (multi-frame) check their inputs and the
model, then run it through :func:`~srcube.pipeline.sr.engine.tiled_map`: each input tile (a Dask chunk)
borrows ``margin`` pixels from its neighbours (none beyond the scene edge), goes through the model once,
and is cropped to exactly ``scale x`` its own extent. The output grid is the input
grid with pixels ``scale`` times smaller and the same outer edges, so each input pixel maps to
``scale x scale`` output pixels. Models enter the graph as a small ``ModelSpec`` and are built once
per worker process (or, for a model object, as one shared graph key).

With the consistency projection on (default for learned single-image models, see
:mod:`models.consistency`), each tile's output is projected in the same task so that the sensor's
degradation of it gives back the tile's input, and the per-pixel consistency error comes along as a
``consistency`` coordinate; the tiles borrow the projection's reach on top of the model's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import odc.geo.xr  # noqa: F401  (registers the .odc accessor)
import rioxarray  # noqa: F401  (registers the .rio accessor)
import torch
import xarray as xr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords

from srcube.models import ModelSpec, SRModel
from srcube.models.consistency import Projection, projection_for
from srcube.pipeline.assemble.grid import finer_geobox
from srcube.pipeline.errors import IncompatibleWeightsError, InvalidDataError, InvalidOptionError
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
from srcube.pipeline.sr.onnxrt import OnnxGraph, checked_engine, onnx_graph
from srcube.pipeline.sr.spec import resolve_model, tile_margin, tile_spec, wants_consistency
from srcube.pipeline.sr.tiling import TileSpec

log = logging.getLogger(__name__)


def _sr_block(block: np.ndarray, ref: ModelSpec | SRModel | OnnxGraph, spec: InferenceSpec,
              block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Super-resolve one (time, band, y, x) tile that carries ``margin`` borrowed pixels.

    With a projection, the tile is projected before cropping and its consistency error (NaN where
    the input has no data, each input pixel's value on its ``scale x scale`` output pixels) is
    appended as one more band."""
    assert block_info is not None  # supplied by map_blocks
    model, device, sides = tile_context(ref, spec, block_info)
    finite = np.isfinite(block)
    x, padded = spec.pad_edges(np.where(finite, block, 0.0).astype(np.float32, copy=False), sides)
    yt = forward(model, device, spec, x)
    err = None
    if spec.projection is not None:
        # the model saw invalid pixels filled; the projection gives them no target (zero residual)
        ok = spec.pad_edges(finite.all(axis=1, keepdims=True).astype(np.float32), sides)[0][:, 0] > 0.5
        with torch.inference_mode():
            yt, et = spec.projection.project(torch.from_numpy(x).to(device), yt, torch.from_numpy(ok).to(device))
        err = crop(et.cpu().numpy(), padded, 1)
    y = nodata(crop(yt.cpu().numpy(), padded, spec.scale), finite.all(axis=1), sides, spec.scale)
    if err is not None:
        s = spec.scale
        y = np.concatenate([y, np.repeat(np.repeat(err, s, axis=-2), s, axis=-1)[:, None]], axis=1)
    return np.ascontiguousarray(y, dtype=np.float32)


def _normalise(data: xr.DataArray, who: str = "super_resolve", action: str = "super-resolve"
               ) -> tuple[xr.DataArray, bool]:
    """``data`` as (time, band, y, x) (and whether a time axis was added), checked: InvalidDataError
    naming ``who`` (the function and argument) for a wrong type, dims, CRS, dtype or values."""
    if not isinstance(data, xr.DataArray):
        raise InvalidDataError(f"{who} takes an xarray.DataArray, got {type(data).__name__}")
    squeeze = False
    if data.dims == ("band", "y", "x"):
        data, squeeze = data.expand_dims("time"), True
    if set(data.dims) != {"time", "band", "y", "x"}:
        raise InvalidDataError(f"{who}: expected dims (time, band, y, x) or (band, y, x), got {data.dims}")
    data = data.transpose("time", "band", "y", "x")
    if data.odc.crs is None:
        raise InvalidDataError(f"{who}: the array has no CRS; attach one (rioxarray .rio.write_crs or odc-geo "
                               ".odc.assign_crs) so the output can be georeferenced")
    if data.sizes["y"] < 1 or data.sizes["x"] < 1:
        raise InvalidDataError(f"{who}: the array is empty: {dict(data.sizes)}")
    if data.dtype.kind not in "biuf":
        raise InvalidDataError(f"{who}: the array holds {data.dtype} values; give reflectance as numbers "
                               "(float32)")
    # lazy arrays are not read here: their non-finite pixels are masked as no data, tile by tile
    if not dask.is_dask_collection(data.data) and data.dtype.kind == "f":
        values = np.asarray(data.data)
        n_inf = int(np.isinf(values).sum())
        if n_inf:
            raise InvalidDataError(f"{who}: the array has {n_inf} infinite value(s); srcube reads NaN as no data, "
                                   "so replace them (data.where(np.isfinite(data)))")
        if values.size and np.isnan(values).all():
            raise InvalidDataError(f"{who}: the array has no finite value (all NaN): there is nothing to {action}")
    input_geobox(data)  # fail now, not after the graph is built
    return data, squeeze


def input_geobox(data: xr.DataArray) -> GeoBox:
    """The grid of ``data``: from its coordinates, or its GeoTransform when an axis has one pixel."""
    gbox = data.odc.geobox
    if gbox is not None:
        return gbox
    try:
        transform = data.rio.transform(recalc=False)
    except Exception as exc:  # rioxarray raises several types when it cannot tell
        raise InvalidDataError(f"cannot tell the pixel grid of the array: {exc}") from None
    if transform.is_identity:
        raise InvalidDataError("cannot tell the pixel size of a one-pixel axis: write a GeoTransform "
                               "(rioxarray .rio.write_transform) or give at least two pixels per axis")
    return GeoBox((data.sizes["y"], data.sizes["x"]), transform, data.odc.crs)


def output_geobox(geobox: GeoBox, scale: int) -> GeoBox:
    """The input grid with pixels ``scale`` times smaller and the same outer edges."""
    return finer_geobox(geobox, scale)


def grid_coords(gbox: GeoBox) -> dict[str, Any]:
    """x/y pixel-centre coordinates and ``spatial_ref`` of a grid (also for lat/lon grids, whose
    coordinates odc-geo names latitude/longitude: srcube's dims are always y/x)."""
    out: dict[str, Any] = {}
    for name, coord in xr_coords(gbox, crs_coord_name="spatial_ref").items():
        new = {"latitude": "y", "longitude": "x"}.get(str(name), str(name))
        out[new] = coord.rename({d: {"latitude": "y", "longitude": "x"}.get(str(d), d) for d in coord.dims}).rename(new)
    return out


def with_halo(spec: TileSpec, halo: int, data: xr.DataArray) -> TileSpec:
    """``spec`` for an array that carries ``halo`` context pixels on each side (InvalidDataError when the
    halo is not an integer, is smaller than the margin tiles borrow, or leaves nothing inside)."""
    if isinstance(halo, bool) or not isinstance(halo, (int, np.integer)) or halo < 0:
        raise InvalidDataError(f"halo must be a number of input pixels >= 0, got {halo!r}")
    if not halo:
        return spec
    if halo < spec.margin:
        raise InvalidDataError(f"halo {halo} is smaller than the {spec.margin} input pixels each tile borrows; "
                               f"read at least {spec.margin} pixels beyond the region")
    if min(data.sizes["y"], data.sizes["x"]) <= 2 * halo:
        raise InvalidDataError(f"an array of {data.sizes['y']} x {data.sizes['x']} pixels has nothing inside a "
                               f"halo of {halo} on each side")
    return dataclasses.replace(spec, halo=int(halo))


def core_geobox(gbox: GeoBox, halo: int) -> GeoBox:
    """The grid of an array without ``halo`` pixels on each side."""
    if not halo:
        return gbox
    ny, nx = gbox.shape
    return gbox[halo : ny - halo, halo : nx - halo]


def super_resolve(data: xr.DataArray, model: str | Path | ModelSpec | SRModel, *, client: Any | None = None,
                  scale: int | None = None, tile: int | None = None, margin: int | None = None,
                  torch_threads: int | None = None, allow_untrained: bool = False, boundary: str = "none",
                  precision: str = "fp32", resources: dict[str, float] | None = None,
                  frames_per_task: int = 1, consistency: bool | None = None,
                  sensor: str = "sentinel-2", halo: int = 0, pass_tile: int | None = None,
                  batch: int | None = None, engine: str = "torch",
                  onnx_path: str | Path | None = None) -> xr.DataArray:
    """Super-resolve a georeferenced ``(time, band, y, x)`` or ``(band, y, x)`` reflectance array.

    Returns the array on the finer aligned grid. A Dask-backed input gives a lazy result (compute
    it with your client); an in-memory input is computed here, on ``client`` if given.
    ``model`` is a registered name, shipped weights, a weights path, a ModelSpec or an SRModel.
    ``tile`` is the input tile size (default: 256, or 4 x the margin for deep models), ``margin``
    the borrowed border (at least the model's receptive field). NaN input pixels are filled for
    the model and NaN again in the output. ``boundary`` and ``precision``: see :class:`InferenceSpec`.
    ``resources`` (e.g. ``{"GPU": 1}``) annotates the super-resolution tasks so the scheduler runs
    them only on workers that declare them; compute with ``optimize_graph=False`` (blockwise fusion
    drops annotations). ``frames_per_task`` batches that many frames in one forward pass.

    ``consistency`` (default: on for learned models, off for the interpolation baselines) projects each
    tile so that the ``sensor``'s degradation (:func:`models.psf.sensor_degradation`) of the output gives
    back the input (:mod:`models.consistency`; a low-frequency correction), and attaches the
    ``consistency`` coordinate (time, y, x): the mean absolute difference over bands between the
    degraded output and the input per input pixel, on its ``scale x scale`` output pixels, NaN where
    the input has no data. The tiles then borrow the projection's reach too.

    ``pass_tile`` (input pixels) and ``batch`` (frames x tiles per forward pass): how each task runs its
    tile through the model (default: chosen on the worker for its device; see
    :func:`~srcube.pipeline.sr.engine.forward`). They change the speed and memory, not the result.

    ``halo``: input pixels on each side that are context only (read beyond the region, e.g. by
    ``run_region``): the edge tiles borrow their real neighbours from it, and the output covers the
    array without it. With ``halo >= margin``, two arrays that share pixels give the same output
    wherever both have them inside their halos: neighbouring cubes join without seams.

    ``engine="onnx"`` runs the model's exported ONNX graph in onnxruntime (the ``onnx`` extra; CUDA where the
    worker's device is and ``onnxruntime-gpu`` is installed, else the CPU) through the same tiles, projection and
    no-data handling: the torch result within 1e-4. The graph is ``onnx_path`` (checked to be this model's:
    ``srcube export-onnx`` writes it) or the model exported on the fly into the cache of exported graphs
    (``$SRCUBE_ONNX_CACHE``, default ``~/.cache/srcube/onnx``; keyed by the weights, the model code and the
    versions), once. It takes ``precision="fp32"`` and one tile per pass unless ``batch`` says otherwise; see
    :mod:`srcube.pipeline.sr.onnxrt`.
    """
    checked_engine(engine, precision)
    data, squeeze = _normalise(data)
    band_names = [str(b) for b in data.band.values] if "band" in data.coords else None
    ref, local = resolve_model(model, scale, bands=band_names, allow_untrained=allow_untrained)
    if local.multi_frame:
        raise InvalidDataError(f"model {local.name} is multi-frame; super_resolve runs single-image models")
    if local.bands is not None and band_names != list(local.bands):
        raise IncompatibleWeightsError(f"model {local.name} takes bands {list(local.bands)} (in that order), "
                                       f"the array has {band_names}")
    if local.bands is None and local.channels > 1 and data.sizes["band"] != local.channels:
        raise IncompatibleWeightsError(f"model {local.name} takes {local.channels} bands, the array has "
                                       f"{data.sizes['band']}")
    s = int(local.scale)
    projection = None
    if wants_consistency(local, consistency):
        try:
            projection = projection_for(local, sensor)
        except ValueError as exc:
            raise InvalidOptionError(str(exc)) from None
    m = tile_margin(local, projection, margin)
    spec = with_halo(tile_spec(tile, m, s, projection), halo, data)
    if frames_per_task < 1:
        raise InvalidDataError(f"frames_per_task must be >= 1, got {frames_per_task}")
    runs: ModelSpec | SRModel | OnnxGraph = ref
    if engine == "onnx":
        runs = onnx_graph(local, onnx_path)  # exported (once, into the cache) before any work
        if min(data.sizes["y"], data.sizes["x"]) < runs.min_size:
            raise InvalidDataError(f"engine='onnx': the exported graph of {local.name} takes at least {runs.min_size} "
                                   f"x {runs.min_size} input pixels, the array has {data.sizes['y']} x "
                                   f"{data.sizes['x']}; use engine='torch'")
    elif onnx_path is not None:
        raise InvalidOptionError("onnx_path is the graph engine='onnx' runs; pass engine='onnx' with it")
    lazy = dask.is_dask_collection(data.data)
    arr = (data.data if lazy else da.from_array(np.asarray(data.data))).astype(np.float32)
    # onnxruntime's memory is not torch's: the engine cannot size a CUDA batch by it, so one tile per pass by default
    run = inference_spec(client, torch_threads, m, s, boundary, precision, projection, spec.halo,
                         pass_tile=checked_pass_tile(pass_tile),
                         batch=checked_batch(batch) or (1 if engine == "onnx" else None))
    n_out = data.sizes["band"] + (1 if projection is not None else 0)  # + the consistency layer
    out = tiled_map(_sr_block, [TiledInput(arr, (frames_per_task, -1))], [graph_model(runs), run], tiles=spec,
                    out_lead=(0, (n_out,)), name=f"super-resolve-{local.name}", resources=resources)
    gbox = output_geobox(core_geobox(input_geobox(data), spec.halo), s)
    coords: dict[str, Any] = {"time": data.time, "band": data.band, **grid_coords(gbox)}
    for name, coord in data.coords.items():
        if name not in coords and set(coord.dims) <= {"time", "band"}:
            coords[str(name)] = coord
    if projection is not None:
        layer = out[:, -1]
        out = out[:, :-1]
        coords["consistency"] = xr.Variable(("time", "y", "x"), layer, attrs=consistency_attrs(projection))
    result = xr.DataArray(out, dims=("time", "band", "y", "x"), coords=coords, name=data.name,
                          attrs={**data.attrs, "sr_model": local.name, "sr_scale": s,
                                 "sr_consistency": projection is not None})
    result = materialise(result, lazy, client, resources)
    return result.isel(time=0) if squeeze else result


def consistency_attrs(projection: Projection) -> dict[str, Any]:
    """Attributes of the ``consistency`` layer made with ``projection``."""
    return {"long_name": "consistency error: mean absolute difference over bands between the super-resolved "
                         "reflectance degraded by the sensor PSF and the input reflectance",
            "units": "1", "psf": projection.describe()["consistency_psf"],
            "comment": "one value per input pixel, repeated on its scale x scale output pixels; computed after the "
                       "consistency projection; NaN where the input has no data"}


def _mf_block(views: np.ndarray, masks: np.ndarray, ref: ModelSpec | SRModel, present: np.ndarray,
              spec: InferenceSpec, shifts: np.ndarray | None = None,
              block_info: dict[Any, Any] | None = None) -> np.ndarray:
    """Fuse one (window, view, band, y, x) tile with its (window, view, 1, y, x) masks; ``shifts`` (window, view,
    2): each view is moved by its shift first (registered to its window's reference view)."""
    assert block_info is not None
    iw = block_info[0]["chunk-location"][0]
    model, device, sides = tile_context(ref, spec, block_info)
    finite = np.isfinite(views)
    x = np.where(finite, views, 0.0).astype(np.float32, copy=False)
    m = ((masks[:, :, 0] > 0) & finite.all(axis=2)).astype(np.float32)
    if shifts is not None:  # local resampling: the tile borrows registration_reach() pixels for it
        from srcube.models.registration import apply_shifts

        x, m = x.copy(), m.copy()
        for j in range(x.shape[0]):
            xj, mj = apply_shifts(torch.from_numpy(x[j]), torch.from_numpy(m[j]),
                                  torch.from_numpy(np.asarray(shifts[iw + j], dtype=np.float64)))
            x[j], m[j] = xj.numpy(), mj.numpy()
    windows = present[iw : iw + views.shape[0]]
    y = crop(forward(model, device, spec, x, m, windows).cpu().numpy(), sides, spec.scale)
    # no data where no real view has data
    return np.ascontiguousarray(nodata(y, (finite.all(axis=2) & windows[:, :, None, None]).any(axis=1), sides,
                                       spec.scale), dtype=np.float32)


def super_resolve_views(views: xr.DataArray, masks: xr.DataArray, present: np.ndarray,
                        model: str | Path | ModelSpec | SRModel, *, client: Any | None = None,
                        scale: int | None = None, tile: int | None = None, margin: int | None = None,
                        torch_threads: int | None = None, allow_untrained: bool = False, precision: str = "fp32",
                        resources: dict[str, float] | None = None, halo: int = 0, pass_tile: int | None = None,
                        batch: int | None = None, register: bool = False) -> xr.DataArray:
    """Multi-frame super-resolution of composite windows.

    ``views`` (window, view, band, y, x) reflectance, ``masks`` (window, view, y, x) clear masks and
    ``present`` (window, view) bool saying which views are real (others are padding). Returns
    (window, band, y, x) on the finer aligned grid, lazily if the input is Dask-backed. ``halo``,
    ``pass_tile``, ``batch``: as :func:`super_resolve`. ``register``: each window's views are registered to
    its clearest view first (:func:`measure_view_shifts`; the shifts are in the result's ``view_shifts``
    attribute), resampled in each tile (Lanczos-3; the tiles borrow its reach, so they stay exact).
    """
    if tuple(views.dims) != ("window", "view", "band", "y", "x"):
        raise InvalidDataError(f"views must be (window, view, band, y, x), got {views.dims}")
    if tuple(masks.dims) != ("window", "view", "y", "x"):
        raise InvalidDataError(f"masks must be (window, view, y, x), got {masks.dims}")
    present = np.asarray(present, dtype=bool)
    if present.shape != (views.sizes["window"], views.sizes["view"]):
        raise InvalidDataError(f"present must be (window, view) = {views.shape[:2]}, got {present.shape}")
    band_names = [str(b) for b in views.band.values]
    ref, local = resolve_model(model, scale, bands=band_names, allow_untrained=allow_untrained)
    if not local.multi_frame:
        raise InvalidDataError(f"model {local.name} is single-image; use super_resolve")
    n_model = int(getattr(local, "n_views", getattr(getattr(local, "inner", None), "n_views", 0)))
    if n_model and views.sizes["view"] > n_model:
        raise InvalidDataError(f"{views.sizes['view']} views per window, model {local.name} fuses at most {n_model}")
    s = int(local.scale)
    shifts = measure_view_shifts(views, masks, present) if register else None
    m = tile_margin(local, None, margin) + (registration_reach() if register else 0)
    spec = with_halo(tile_spec(tile, m, s, None), halo, views)
    lazy = dask.is_dask_collection(views.data)
    v = views.data if lazy else da.from_array(np.asarray(views.data))
    k = masks.data if dask.is_dask_collection(masks.data) else da.from_array(np.asarray(masks.data))
    run = inference_spec(client, torch_threads, m, s, "none", precision, halo=spec.halo,
                         pass_tile=checked_pass_tile(pass_tile), batch=checked_batch(batch))
    out = tiled_map(_mf_block, [TiledInput(v.astype(np.float32), (1, -1, -1)),
                                TiledInput(k.astype(np.uint8)[:, :, None], (1, -1, 1))],
                    [graph_model(ref), present, run, shifts], tiles=spec, out_lead=(0, 2), drop_axis=1,
                    name=f"fuse-{local.name}", resources=resources)
    gbox = output_geobox(core_geobox(input_geobox(views.isel(window=0, view=0)), spec.halo), s)
    coords: dict[str, Any] = {"window": views.window, "band": views.band, **grid_coords(gbox)}
    attrs: dict[str, Any] = {"sr_model": local.name, "sr_scale": s}
    if shifts is not None:
        attrs["view_shifts"] = json.dumps(np.round(shifts, 3).tolist())
    result = xr.DataArray(out, dims=("window", "band", "y", "x"), coords=coords, name="reflectance", attrs=attrs)
    return materialise(result, lazy, client, resources)


#: the central square (input pixels) of each window the shifts are measured on
REGISTRATION_CROP = 256


def registration_reach() -> int:
    """Input pixels a tile borrows for registered views: the resampling's reach at the largest shift applied
    (:data:`models.registration.MAX_SHIFT`)."""
    from srcube.models.registration import reach

    return reach()


def measure_view_shifts(views: xr.DataArray, masks: xr.DataArray, present: np.ndarray) -> np.ndarray:
    """(window, view, 2) shifts (dy, dx) in input pixels that register each present view of a window to its
    clearest view (:func:`models.registration.register_views` on the band mean of the window's central
    ``REGISTRATION_CROP`` square: one global shift per view, measured once, so every tile applies the same);
    zero for the reference, padded views and shifts beyond :data:`models.registration.MAX_SHIFT` (with a warning)."""
    from srcube.models.registration import MAX_SHIFT, register_views

    ny, nx = views.sizes["y"], views.sizes["x"]
    cy, cx = min(ny, REGISTRATION_CROP), min(nx, REGISTRATION_CROP)
    y0, x0 = (ny - cy) // 2, (nx - cx) // 2
    win = {"y": slice(y0, y0 + cy), "x": slice(x0, x0 + cx)}
    v_arr, k_arr = dask.compute(views.isel(win).mean("band").data, masks.isel(win).data)
    v, k = np.asarray(v_arr, dtype=np.float64), np.asarray(k_arr) > 0
    k &= np.isfinite(v)
    out = np.zeros((*present.shape, 2))
    for w in range(present.shape[0]):
        real = np.flatnonzero(present[w] & k[w].any(axis=(1, 2)))
        if real.size < 2:
            continue
        img = np.where(k[w][real], v[w][real], 0.0)
        sh = register_views(torch.from_numpy(img), torch.from_numpy(k[w][real])).numpy()
        for j, (dy, dx) in zip(real, sh, strict=True):
            if max(abs(dy), abs(dx)) > MAX_SHIFT:
                log.warning("window %d, view %d: measured shift (%.2f, %.2f) px is beyond %.1f px, left unregistered",
                            w, j, dy, dx, MAX_SHIFT)
                continue
            out[w, j] = (dy, dx)
    return out

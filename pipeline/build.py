"""A run's lazy cube: the super-resolution graph over its kept frames (single-image) or composite windows
(multi-frame), the QA layers on the same tiles, and the provenance attributes, with the zarr encoding to
write it with. The graph is built here; what the cube stores and how (schema, encoding, hash) is
:mod:`srcube.pipeline.write.cube`'s."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from srcube.models.consistency import projection_for
from srcube.pipeline.assemble.clearance import FrameDecision, WindowPlan
from srcube.pipeline.assemble.stack import region_only
from srcube.pipeline.load import Loaded
from srcube.pipeline.options import RunOptions
from srcube.pipeline.plan import RunPlan
from srcube.pipeline.redact import redact
from srcube.pipeline.sr.infer import super_resolve, super_resolve_views
from srcube.pipeline.sr.tiling import TileSpec
from srcube.pipeline.write.cube import CODEC_NOTE, chunk_shape, conform, cube_attrs, encoding, request_hash


def build_cube(plan: RunPlan, loaded: Loaded, frames: list[FrameDecision], windows: list[WindowPlan], client: Any,
               resources: dict[str, float] | None) -> tuple[xr.Dataset, dict[str, Any]]:
    """(the lazy cube with its attributes, its encoding) for the decided ``frames`` / ``windows``."""
    opts, stack, local = plan.opts, loaded.stack, plan.model.local
    cache = f"{opts.stack_cache}/stack-{loaded.cache_key}.zarr" if loaded.cache_key else "none"
    attrs = cube_attrs(stack, plan.model.ref, local, multi=plan.multi, sensor=loaded.sensor.name,
                       profile=plan.profile, collection=plan.collection, region=plan.region.as_tuple(),
                       days=str(plan.days), bands=loaded.bands, items_found=loaded.items_found, stack_cache=cache,
                       from_cache=loaded.from_cache, min_clear=opts.min_clear, sharpener=plan.sharpener.attrs(),
                       frames=frames_provenance(stack, frames))
    if plan.request.cell is not None:  # one cell of an area (pipeline.area): the cube is the cell's square
        attrs["cell"] = plan.request.cell
    attrs["gpu_resources"] = bool(resources)
    attrs["consistency_projection"] = plan.consistency
    if plan.consistency:
        attrs.update(projection_for(local, loaded.sensor.name).describe())
    else:
        attrs["consistency_psf"] = "none"
    if plan.multi:
        cube = multi_frame_cube(stack, windows, plan.n_views, plan.model, plan.tiles, client, opts, resources)
        attrs.update(windows=json.dumps([w.to_json() for w in windows]), n_views=plan.n_views,
                     window=opts.window or "all", view_registration=bool(opts.register_views))
        used = [i for w in windows if w.kept for i in w.views]
    else:
        cube = single_image_cube(stack, frames, plan.model, plan.tiles, client, opts, resources, plan.consistency,
                                 loaded.sensor.name)
        used = [i for i, f in enumerate(frames) if f.kept]
    attrs["stac_item_ids"] = sorted({i for t in used for i in str(stack["items"].values[t]).split(",")})
    out_tile = plan.tiles.tile * plan.tiles.scale
    attrs["request_hash"] = request_hash(attrs, opts, chunk_shape(cube, out_tile))
    recorded = plan.request.recorded()  # what `srcube verify --repair` runs again over damaged chunks
    attrs["request"] = redact(json.dumps(recorded)) if recorded is not None else "none (a model object in memory)"
    codec = CODEC_NOTE if opts.keepbits is None else f"{CODEC_NOTE}; reflectance bit-rounded to {opts.keepbits} " \
                                                       "mantissa bits (numcodecs BitRound)"
    cube.attrs = {**attrs, "Conventions": "CF-1.8", "codec": codec}
    if opts.keepbits is not None:
        cube.attrs["bitround_keepbits"] = opts.keepbits
    return cube, encoding(cube, out_tile, opts.dtype)


def frames_provenance(stack: xr.Dataset, frames: list[FrameDecision]) -> list[dict[str, Any]]:
    """The frame decisions, each with what was applied to its items' reflectance and why."""
    per_item = {d["item"]: d for d in json.loads(str(stack.attrs.get("harmonization", "[]")))}
    out = []
    for i, f in enumerate(frames):
        doc = dataclasses.asdict(f)
        if per_item:
            ids = str(stack["items"].values[i]).split(",")
            doc["harmonization"] = [per_item[k] for k in ids if k in per_item]
        out.append(doc)
    return out


def single_image_cube(stack: xr.Dataset, frames: list[FrameDecision], ref: Any, tiles: TileSpec, dc: Any,
                       opts: RunOptions, resources: dict[str, float] | None, consistency: bool = False,
                       sensor: str = "sentinel-2") -> xr.Dataset:
    """The single-image cube of the kept ``frames``: their super-resolved reflectance (lazy, one task per SR
    tile), the ``consistency`` layer when the projection runs, and the QA layers upsampled on the same tiles
    (``clear``, ``clear_count``, each frame's clear fraction and score), conformed to the schema."""
    keep = [i for i, f in enumerate(frames) if f.kept]
    kept = stack.isel(time=keep)
    sr = super_resolve(kept.reflectance, ref, client=dc, tile=tiles.tile, margin=tiles.margin,
                       torch_threads=opts.torch_threads, pass_tile=opts.pass_tile, batch=opts.batch,
                       allow_untrained=opts.allow_untrained, boundary=opts.boundary,
                       precision=opts.precision, resources=resources, frames_per_task=opts.frames_per_task,
                       consistency=consistency, sensor=sensor, halo=int(stack.attrs.get("halo", 0)),
                       engine=opts.engine)
    kept = kept.isel(region_only(stack))  # the QA layers: the region's pixels, as the output
    layers: dict[str, xr.DataArray] = {}
    if "consistency" in sr.coords:  # the QA layer of the projection: a variable of the cube, not a coordinate
        layers["consistency"] = sr["consistency"].reset_coords(drop=True).rename("consistency").astype(np.float32)
        sr = sr.drop_vars("consistency")
    clear = _upsample(kept.clear.astype(np.uint8), tiles, sr, "clear",
                      {"long_name": "clear pixel (QA class clear and data in every band)", "flag_values": [0, 1],
                       "flag_meanings": "not_clear clear"})
    clear = clear * sr.notnull().all("band").astype(np.uint8)
    count = _upsample(kept.clear.sum("time").astype(np.uint16).expand_dims(time=1), tiles, sr.isel(time=[0]),
                      "clear_count", {}).isel(time=0, drop=True)
    refl = sr.rename("reflectance")
    refl.attrs = {"long_name": "super-resolved surface reflectance", "units": "1",
                  "sr_model": sr.attrs.get("sr_model"), "sr_scale": sr.attrs.get("sr_scale")}
    cube = xr.Dataset({
        "reflectance": refl,
        "clear": clear.rename("clear").assign_attrs(long_name="clear pixel", flag_values=[0, 1],
                                                    flag_meanings="not_clear clear"),
        "clear_count": count.rename("clear_count").assign_attrs(
            long_name="number of clear frames per pixel over the kept dates"),
        "clear_fraction": xr.DataArray(np.asarray([frames[i].clear_fraction for i in keep], np.float32), dims="time",
                                       attrs={"long_name": "clear fraction of the frame (input grid)"}),
        "clearance_score": xr.DataArray(np.asarray([frames[i].clearance_score for i in keep], np.float32),
                                        dims="time", attrs={"long_name": "clearance score of the frame"}),
        **layers,
    })
    cube = cube.assign_coords(items=("time", [str(v) for v in kept["items"].values]))
    return conform(cube, opts)


def multi_frame_cube(stack: xr.Dataset, windows: list[WindowPlan], n_views: int, ref: Any, tiles: TileSpec,
                      dc: Any, opts: RunOptions, resources: dict[str, float] | None) -> xr.Dataset:
    """The multi-frame cube of the kept ``windows``: each window's ``n_views`` views (padded with absent ones)
    fused by the model (lazy, one task per SR tile), the clear views per pixel, the real views per window and
    the windows' CF time bounds, conformed to the schema."""
    plans = [w for w in windows if w.kept]
    refl, clear = stack.reflectance.data, stack.clear.data
    _, c, h, w = refl.shape
    views, masks, present = [], [], np.zeros((len(plans), n_views), bool)
    for i, plan in enumerate(plans):
        idx = list(plan.views)
        pad = n_views - len(idx)
        present[i, : len(idx)] = True
        v, m = refl[idx], clear[idx].astype(np.uint8)
        if pad:
            v = da.concatenate([v, da.zeros((pad, c, h, w), dtype=np.float32, chunks=(1, c, h, w))])
            m = da.concatenate([m, da.zeros((pad, h, w), dtype=np.uint8, chunks=(1, h, w))])
        views.append(v)
        masks.append(m)
    starts = np.array([np.datetime64(p.start[:19], "ns") for p in plans])
    spatial = {k: v for k, v in stack.coords.items() if set(v.dims) <= {"y", "x"}}
    views_da = xr.DataArray(da.stack(views), dims=("window", "view", "band", "y", "x"),
                            coords={"window": starts, "band": stack.band, **spatial})
    masks_da = xr.DataArray(da.stack(masks), dims=("window", "view", "y", "x"), coords={"window": starts, **spatial})
    sr = super_resolve_views(views_da, masks_da, present, ref, client=dc, tile=tiles.tile,
                             torch_threads=opts.torch_threads, pass_tile=opts.pass_tile, batch=opts.batch,
                             allow_untrained=opts.allow_untrained, precision=opts.precision, resources=resources,
                             halo=int(stack.attrs.get("halo", 0)), register=opts.register_views)
    sr = sr.rename({"window": "time"})
    masks_da = masks_da.isel(region_only(stack))  # the QA layers: the region's pixels, as the output
    count_lr = (masks_da * xr.DataArray(present, dims=("window", "view"))).sum("view").astype(np.uint8)
    count_lr = count_lr.rename({"window": "time"})
    count = _upsample(count_lr, tiles, sr, "clear_count",
                      {"long_name": "number of clear views per pixel in the window"})
    clear = (count > 0).astype(np.uint8) * sr.notnull().all("band").astype(np.uint8)
    refl_out = sr.rename("reflectance")
    # per window, per view: (dy, dx) input pixels that registered it to the window's clearest view
    shifts = {"view_shifts": sr.attrs["view_shifts"]} if "view_shifts" in sr.attrs else {}
    refl_out.attrs = {"long_name": "super-resolved surface reflectance (multi-frame fusion)", "units": "1",
                      "sr_model": sr.attrs.get("sr_model"), "sr_scale": sr.attrs.get("sr_scale"), **shifts}
    cube = xr.Dataset({
        "reflectance": refl_out,
        "clear": clear.rename("clear").assign_attrs(long_name="pixel clear in at least one view",
                                                    flag_values=[0, 1], flag_meanings="not_clear clear"),
        "clear_count": count,
        "views": xr.DataArray(np.asarray([len(p.views) for p in plans], np.uint8), dims="time",
                              attrs={"long_name": "real views fused in the window"}),
    })
    items = [",".join(str(stack["items"].values[i]) for i in p.views) for p in plans]
    cube = cube.assign_coords(items=("time", items), window_end=("time", [p.end for p in plans]))
    # CF time bounds of the windows: [start, end) of each composite
    ends = np.array([np.datetime64(p.end[:19], "ns") for p in plans])
    cube["time_bounds"] = xr.DataArray(np.stack([starts, ends], axis=1), dims=("time", "nv"),
                                       attrs={"long_name": "composite window bounds"})
    cube["time"].attrs["bounds"] = "time_bounds"
    return conform(cube, opts)


def _upsample(mask: xr.DataArray, tiles: TileSpec, like: xr.DataArray, name: str,
              attrs: dict[str, Any]) -> xr.DataArray:
    """Nearest-neighbour ``scale x`` upsampling of a (time, y, x) layer on the SR tiling."""
    s = tiles.scale
    arr = mask.data.rechunk((1, tiles.chunks(mask.sizes["y"]), tiles.chunks(mask.sizes["x"])))
    out_chunks = (arr.chunks[0], tuple(c * s for c in arr.chunks[1]), tuple(c * s for c in arr.chunks[2]))
    up = arr.map_blocks(lambda b: b.repeat(s, axis=-2).repeat(s, axis=-1), chunks=out_chunks, dtype=arr.dtype)
    dim0 = like.dims[0]
    coords = {k: v for k, v in like.coords.items() if set(v.dims) <= {"y", "x"} or k == dim0}
    return xr.DataArray(up, dims=(dim0, "y", "x"), coords=coords, name=name, attrs=attrs)

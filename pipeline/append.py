"""Growing cubes: ``run_region(..., mode="append")`` adds a request's new dates to the complete cube at ``out``.

Under the cube's writer lock (a second writer is refused, as for any run):

1. the request is run up to its frame decisions; dates (or composite windows) the cube already has, kept or
   dropped, are left out, and so are new ones before the cube's last time step (the time axis only grows at
   its end; warned); nothing new is not an error: the cube is returned as it is;
2. the new dates are written as a normal cube at ``<out>.append`` (resumable like any run), after checking
   that it is the same kind of cube as ``out`` (grid, bands, model and weights, scale, mode, sensor, dtype,
   chunks: :class:`~srcube.pipeline.errors.CubeMismatchError` naming what differs, before any pixel);
3. the cube is marked ``complete = false`` with ``appending`` (the staging URL) and ``append_base`` (its
   length in time), and the staging cube's time steps are appended along ``time`` (xarray, the cube's own
   chunks and codec); ``clear_count`` (single-image) becomes the sum of both (its value before is kept in
   the staging cube first);
4. the provenance attributes are merged (``frames``, ``stac_item_ids``, ``dates``, ``appended``), the
   metadata consolidated, ``complete = true`` set, the STAC Item rewritten, and the staging cube removed.

An append cut short anywhere is finished by the same call: before step 3 the staging cube resumes; from
step 3 on, the cube says ``appending``, and every array along time is cut back to ``append_base`` and
``clear_count`` restored before the append is done again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr
import zarr

from srcube.pipeline.cluster import dask_client
from srcube.pipeline.errors import (
    AllCloudyError,
    CubeMismatchError,
    IncompleteCubeError,
    NotACubeError,
)
from srcube.pipeline.write.overviews import write_overviews
from srcube.pipeline.write.stac import write_stac
from srcube.pipeline.write.store import EVERY_CHUNK, CubeStore, quiet_consolidated

if TYPE_CHECKING:
    from srcube.pipeline.region import RegionJob

log = logging.getLogger(__name__)

#: attributes that must be equal for two cubes to be one time series
SAME = ("model", "weights_sha256", "scale", "mode", "sensor", "collection", "bands", "crs", "resolution",
        "input_resolution", "bbox", "halo_pixels", "consistency_projection", "sharpen_weights_sha256",
        "bitround_keepbits")


def grows(store: CubeStore, mode: str) -> bool:
    """Whether a request in ``mode`` grows the cube at ``store`` (append onto something there), rather than
    writing a new cube (the first run of a growing cube writes it as any run does)."""
    return mode == "append" and store.status() not in ("absent", "empty")


def _staging(store: CubeStore) -> CubeStore:
    return CubeStore(f"{store.url.rstrip('/')}.append", store.storage_options)


def _times(values: Any) -> list[str]:
    return [str(np.datetime64(t, "s")) for t in np.asarray(values)]


def append_region(job: RegionJob, client: Any | None) -> xr.Dataset:
    """Add the new dates of ``job``'s request to the complete cube at its output (see the module docstring)."""
    main, opts = job.plan.store, job.opts
    status = main.status()
    if status == "foreign":
        raise NotACubeError(f"output {main.url} exists and is not an srcube cube; mode='append' grows srcube cubes")
    lock = main.lock(note=f"append {job.plan.days}")
    lock.acquire(wait=opts.lock_wait)
    try:
        attrs = main.attrs()
        staging = _staging(main)
        if attrs.get("appending"):
            _recover(main, staging, attrs)
            return _finish_append(main, staging)
        if status != "complete":
            raise IncompleteCubeError(f"the cube at {main.url} is unfinished; run the request that started it again "
                                      "(without mode='append') to finish it before appending")
        cube = main.open()
        have = set(_times(cube.time.values)) | {f["time"][:19] for f in json.loads(attrs.get("frames", "[]"))}
        last = max(_times(cube.time.values))
        req = job.plan.request
        stage = type(job).from_request(req.model_copy(update={
            "out": staging.url, "options": req.options.model_copy(update={"mode": "write", "overwrite": True})}))
        with dask_client(client, n_workers=opts.n_workers, processes=opts.processes) as dc:
            stage.load(dc)
            try:
                stage.decide(dc)
            except AllCloudyError as exc:
                log.warning("append to %s: nothing new to add (%s)", main.url, exc)
                return cube
            stage.build(dc)  # lazy, to compare what the request would make with the cube before anything else
            assert stage.cube is not None
            _check_same_kind(cube, stage.cube, main.url)
            new = _leave_out_what_the_cube_has(stage, have, last)
            if not new:
                log.info("append to %s: every date of %s is in the cube already", main.url, job.plan.days)
                return cube
            stage.build(dc)  # the new dates only
            assert stage.cube is not None
            staged = staging.status()
            # complete and of this request: written by an append cut short before it touched the cube
            if staged != "complete" or staging.attrs().get("request_hash") != stage.cube.attrs["request_hash"]:
                if staged == "complete":
                    staging.fs.rm(staging.path, recursive=True)
                stage.start()  # an unfinished staging cube of the same request is resumed
                stage.write(dc)
                staging.finalize({"last_run": {"resumed": stage.run.resumed, "chunk_writes": stage.run.chunk_writes}})
        return _finish_append(main, staging)
    finally:
        lock.release()


def _leave_out_what_the_cube_has(stage: RegionJob, have: set[str], last: str) -> list[str]:
    """Mark the frames (or windows) the cube has as not kept, and new ones before its last time step (a cube's
    time axis only grows at its end: a late-published acquisition of an earlier date belongs in a new cube;
    warned); return the times that stay."""
    run = stage.run

    def why(t: str) -> str | None:
        if t in have:
            return "already in the cube"
        return f"before the cube's last time step {last}: append adds later dates only" if t < last else None

    if stage.plan.multi:
        run.windows = [w if not why(w.start[:19]) or not w.kept else
                       dataclasses.replace(w, status="dropped", reason=str(why(w.start[:19]))) for w in run.windows]
        new = [w.start[:19] for w in run.windows if w.kept]
    else:
        run.frames = [f if not why(f.time[:19]) or not f.kept else
                      dataclasses.replace(f, kept=False, reason=str(why(f.time[:19]))) for f in run.frames]
        new = [f.time[:19] for f in run.frames if f.kept]
    early = [f.time for f in run.frames if f.reason.startswith("before the cube's last")] + [
        w.start for w in run.windows if w.reason.startswith("before the cube's last")]
    if early:
        log.warning("append: %s left out: before the cube's last time step %s (append adds later dates only)",
                    ", ".join(early), last)
    return new


def _check_same_kind(cube: xr.Dataset, new: xr.Dataset, url: str) -> None:
    differ = [f"{k}: cube {cube.attrs.get(k)!r}, request {new.attrs.get(k)!r}" for k in SAME
              if json.dumps(cube.attrs.get(k), default=str) != json.dumps(new.attrs.get(k), default=str)]
    if cube.reflectance.dtype != new.reflectance.dtype:
        differ.append(f"dtype: cube {cube.reflectance.dtype}, request {new.reflectance.dtype}")
    enc = cube.reflectance.encoding
    chunks = tuple(enc.get("shards") or enc.get("chunks", ()))[-2:]  # a write task's tile
    if chunks and tuple(c[0] for c in new.reflectance.chunks[-2:]) != chunks:
        differ.append(f"chunks: cube {chunks}, request {tuple(c[0] for c in new.reflectance.chunks[-2:])}")
    if differ:
        raise CubeMismatchError(f"mode='append' cannot grow {url} with this request: " + "; ".join(differ))


def _arr(group: zarr.Group, name: str) -> Any:
    """The array ``name`` of ``group`` (zarr types its members loosely), writing every chunk (``EVERY_CHUNK``)."""
    arr = group[name]
    assert isinstance(arr, zarr.Array), name
    return arr.with_config(EVERY_CHUNK)


def _time_arrays(group: zarr.Group) -> list[str]:
    return [name for name, arr in group.arrays() if (getattr(arr.metadata, "dimension_names", None) or ("",))[0]
            == "time"]


def _finish_append(main: CubeStore, staging: CubeStore) -> xr.Dataset:
    """Steps 3 and 4 of the module docstring, from a complete staging cube."""
    if staging.status() != "complete":
        raise IncompleteCubeError(f"{main.url} is being appended to from {staging.url}, which is not complete; "
                                  "run the same append again")
    group = main.group(consolidated=False)
    base = int(_arr(group, "time").shape[0])
    stage_group = staging.group(consolidated=False)
    single = "clear_count" in group and _arr(group, "clear_count").ndim == 2
    if single and "clear_count_before" not in stage_group:
        before = _arr(group, "clear_count")[...]
        arr = stage_group.create_array("clear_count_before", shape=before.shape, dtype=before.dtype,
                                       chunks=_arr(group, "clear_count").chunks, dimension_names=("y", "x"))
        arr[...] = before
    old, add = main.attrs(), staging.attrs()
    during = {**old, "complete": False, "appending": staging.url, "append_base": base}
    group.attrs.update(during)
    new = xr.open_zarr(staging.url, consolidated=False, storage_options=dict(staging.storage_options or {}) or None)
    new.attrs = during  # xarray writes these as the cube's attributes: still the cube's, still unfinished
    with_time = new[[n for n in new.data_vars if "time" in new[n].dims]]
    with_time = with_time.drop_vars([c for c in with_time.coords if "time" not in with_time[c].dims])
    for name, var in with_time.variables.items():
        var.encoding = {}  # the cube's own encoding (chunks, shards, codec, time units) applies
        if name in with_time.data_vars:  # one Dask chunk per shard of the cube: one writer per shard
            target = _arr(group, str(name))
            with_time[name] = var.chunk(dict(zip(var.dims, target.shards or target.chunks, strict=True)))
    with quiet_consolidated():
        with_time.to_zarr(main.zarr_store(), append_dim="time", zarr_format=3, consolidated=False,
                          mode="a", write_empty_chunks=True)
    if single:
        total = _arr(stage_group, "clear_count_before")[...] + _arr(stage_group, "clear_count")[...]
        _arr(group, "clear_count")[...] = total
    frames = json.loads(old.get("frames", "[]")) + [f for f in json.loads(add.get("frames", "[]"))
                                                     if f["reason"] != "already in the cube"]
    appended = [*old.get("appended", []), {"dates": add.get("dates"), "time_steps": int(new.sizes["time"]),
                                           "created": add.get("created")}]
    start, end = str(old.get("dates", "/")).split("/")[0], str(add.get("dates", "/")).split("/")[-1]
    merged = {"frames": json.dumps(frames), "appended": appended, "dates": f"{start}/{end}",
              "stac_item_ids": sorted({*old.get("stac_item_ids", []), *add.get("stac_item_ids", [])})}
    if "windows" in old:
        merged["windows"] = json.dumps(json.loads(old["windows"]) + [w for w in json.loads(add.get("windows", "[]"))
                                                                       if w["status"] != "dropped"])
    group.attrs.update(merged)
    for key in ("appending", "append_base"):
        group.attrs.pop(key, None)
    if old.get("overviews"):  # extend them by the new time steps (the same region again if run again)
        write_overviews(main, start=base)
    main.consolidate()
    group = main.group()  # keeps the consolidated metadata
    group.attrs.update({"complete": True})
    cube = main.open()
    write_stac(cube, main)
    staging.fs.rm(staging.path, recursive=True)
    log.info("appended %d time step(s) to %s", new.sizes["time"], main.url)
    return cube


def _recover(main: CubeStore, staging: CubeStore, attrs: dict[str, Any]) -> None:
    """An append cut short after it started changing the cube: cut every array along time back to
    ``append_base`` and restore ``clear_count``, so that the append can be done again."""
    if staging.status() != "complete":
        raise IncompleteCubeError(f"{main.url} says an append from {staging.url} was cut short, but that staging "
                                  "cube is gone or unfinished; the cube cannot be repaired here: rerun the requests "
                                  "into a new cube")
    base = int(attrs["append_base"])
    group = main.group(consolidated=False)
    for name in _time_arrays(group):
        arr = _arr(group, name)
        if arr.shape[0] != base:
            arr.resize((base, *arr.shape[1:]))
    stage_group = staging.group(consolidated=False)
    if "clear_count_before" in stage_group:
        _arr(group, "clear_count")[...] = _arr(stage_group, "clear_count_before")[...]
    log.warning("%s: an append was cut short; the cube is back at %d time steps and the append is done again",
                main.url, base)

"""Growing cubes: ``run_region(..., mode="append")`` adds a request's new dates to the complete cube at ``out``.

Under the cube's writer lock (a second writer is refused, as for any run):

1. the request is run up to its frame decisions; dates (or composite windows) the cube already has, kept or
   dropped, are left out, and so are new ones before the cube's last time step (the time axis only grows at
   its end; warned); nothing new is not an error: the cube is returned as it is;
2. staging: the new dates are written as a normal cube at ``<out>.append`` (resumable like any run), after
   checking that it is the same kind of cube as ``out`` (grid, bands, model and weights, scale, mode, sensor,
   dtype, chunks: :class:`~srcube.pipeline.errors.CubeMismatchError` naming what differs, before any pixel).

The cube itself is then changed by these steps, each a function of this module (the append drill,
``tests/pipeline/test_append_drill.py``, stops an append at each in turn):

3. :func:`_mark`: the cube's ``clear_count`` (single-image) is kept in the staging cube
   (``clear_count_before``), then one write of the cube's attributes says ``complete = false``, ``appending``
   (the staging URL) and ``append_base`` (its length in time): the first change to the cube;
4. :func:`_grow`: every array along ``time`` is resized to ``append_base`` + the staging cube's length;
5. :func:`_copy`: the staging cube's time steps are copied into that region as stored (both cubes store them
   alike: checked before step 3), one task per shard;
6. :func:`_sum_clear_count`: ``clear_count`` becomes ``clear_count_before`` + the staging cube's;
7. :func:`_extend_overviews`: the overview levels grow by the new time steps;
8. :func:`_consolidate`: the metadata is consolidated. Until here the consolidated metadata is that of the cube
   before the append (nothing above rewrites it), so xarray opens the cube consolidated, as the STAC asset's
   open options say, at every step: as it was before, then as it is after;
9. :func:`_describe`: the STAC Collection and Item of the grown cube, with its merged provenance attributes;
10. :func:`_complete`: one write of the attributes: the merged provenance (``frames``, ``stac_item_ids``,
    ``dates``, ``appended``), this append's ``timings_s`` and ``last_run``, ``complete = true``, the markers
    gone;
11. :func:`_remove_staging`: the staging cube is removed.

An append cut short anywhere ends right when an append is run again. Before step 3 the cube is as it was
(complete): the same append resumes (or reuses) its staging cube. From step 3 to step 10 the cube's status is
``appending``: an append request first finishes the append that was cut short, from its staging cube (steps
4-11 again: each writes the same values however far it had got, none adds to what an earlier try wrote; the
staging cube does not change while the cube says ``appending``), then does its own (nothing more when it is
the same request); any other request is refused (:meth:`CubeStore.check_writable`) with that advice. After
step 10 a staging cube left behind is removed by the next append.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
import zarr

from srcube.pipeline.cluster import dask_client
from srcube.pipeline.errors import (
    AllCloudyError,
    CubeAttributeError,
    CubeMismatchError,
    IncompleteCubeError,
    NotACubeError,
)
from srcube.pipeline.write.overviews import write_overviews
from srcube.pipeline.write.stac import write_stac
from srcube.pipeline.write.store import EVERY_CHUNK, CubeStore

if TYPE_CHECKING:
    from srcube.pipeline.region import RegionJob
    from srcube.pipeline.request import RunRequest

log = logging.getLogger(__name__)

#: attributes that must be equal for two cubes to be one time series
SAME = ("model", "weights_sha256", "scale", "mode", "sensor", "collection", "bands", "crs", "resolution",
        "input_resolution", "bbox", "cell", "halo_pixels", "consistency_projection", "sharpen_weights_sha256",
        "bitround_keepbits")
#: array attributes that say how stored values decode (CF): equal in both cubes, values are copied as stored
DECODING = ("scale_factor", "add_offset", "_FillValue", "missing_value", "units", "calendar", "dtype")
#: the cube's attributes while an append changes it (steps 3-10 of the module docstring)
MARKERS = ("appending", "append_base")


def grows(store: CubeStore, mode: str) -> bool:
    """Whether a request in ``mode`` grows the cube at ``store`` (append onto something there), rather than
    writing a new cube (the first run of a growing cube writes it as any run does)."""
    return mode == "append" and store.status() not in ("absent", "empty")


def _staging(store: CubeStore) -> CubeStore:
    return CubeStore(f"{store.url.rstrip('/')}.append", store.storage_options)


def _times(values: Any) -> list[str]:
    return [str(np.datetime64(t, "s")) for t in np.asarray(values)]


def _request_id(req: RunRequest) -> str:
    """Which request made a staging cube: an append run again after a crash need not search again once it has
    finished its own append (a model object in memory gives another id in each process: it then searches). The
    output is left out: the staging cube lies beside its cube, wherever both were moved."""
    doc = {**req.model_dump(mode="python", exclude={"options", "out"}), "options": req.options.given()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def append_region(job: RegionJob, client: Any | None) -> xr.Dataset:
    """Add the new dates of ``job``'s request to the complete cube at its output (see the module docstring)."""
    main, opts = job.plan.store, job.opts
    if main.status() == "foreign":
        raise NotACubeError(f"output {main.url} exists and is not an srcube cube; mode='append' grows srcube cubes")
    lock = main.lock(note=f"append {job.plan.days}")
    lock.acquire(wait=opts.lock_wait)
    try:
        staging = _staging(main)
        if main.status() == "appending":  # an append cut short (read under the lock: it is not running)
            made_by = staging.attrs().get("append_request")
            cube = _finish_cut_short(main, staging, job)
            if made_by == _request_id(job.plan.request):
                return cube
        return _append(job, main, staging, client)
    finally:
        lock.release()


def _finish_cut_short(main: CubeStore, staging: CubeStore, job: RegionJob) -> xr.Dataset:
    """Steps 4-11 again, from the staging cube of the append that was cut short."""
    attrs = main.attrs()
    staged = staging.status()
    if staged != "complete":
        raise IncompleteCubeError(f"{main.url} says an append from {staging.url} was cut short, but that staging "
                                  f"cube is {'gone' if staged == 'absent' else staged}; the cube cannot be finished "
                                  "here: rerun the requests into a new cube")
    base = _append_base(main, staging, attrs)
    log.warning("%s: an append from %s was cut short at %d time steps; finishing it", main.url, staging.url, base)
    state = _Append.of(main, staging, base=base, timings={}, last_run={"mode": "append", "finished_cut_short": True})
    cube = _finish(state, marked=True)
    job.step("finish an append cut short")
    return cube


def _append_base(main: CubeStore, staging: CubeStore, attrs: Mapping[str, Any]) -> int:
    """The cube's length in time before the append that was cut short: its ``append_base`` attribute, which says
    where the staging cube's steps are written. Cubes are shared, their attributes untrusted: it is a whole number
    of steps that every array along time agrees with (as long as that, not grown yet, or as that and the staging
    cube's steps, grown), or a CubeAttributeError before anything is written."""
    base = attrs.get("append_base")
    group = main.group(consolidated=False)
    steps = int(_arr(staging.group(consolidated=False), "time").shape[0])
    lengths = sorted({int(_arr(group, name).shape[0]) for name in _time_arrays(group)})
    if isinstance(base, int) and not isinstance(base, bool) and base >= 1 and all(
            n in (base, base + steps) for n in lengths):
        return base
    raise CubeAttributeError(
        f"the cube at {main.url} says an append of {steps} time step(s) was cut short onto {str(base)[:40]!r} time "
        f"steps (its append_base attribute), but its arrays along time hold {lengths} steps: the attribute is "
        "corrupt or crafted, and finishing the append would write in the wrong place; nothing was changed: rerun "
        "the requests into a new cube, or ask the cube's sharer for it as srcube wrote it")


def _append(job: RegionJob, main: CubeStore, staging: CubeStore, client: Any | None) -> xr.Dataset:
    """Steps 1 and 2 of the module docstring, then the rest (:func:`_finish`)."""
    opts = job.opts
    if main.status() != "complete":
        raise IncompleteCubeError(f"the cube at {main.url} is unfinished; run the request that started it again "
                                  "(without mode='append') to finish it before appending")
    attrs = main.attrs()
    cube = main.open()
    have = set(_times(cube.time.values)) | {f["time"][:19] for f in json.loads(attrs.get("frames", "[]"))}
    last = max(_times(cube.time.values))
    req = job.plan.request
    stage = type(job).from_request(req.model_copy(update={
        "out": staging.url, "options": req.options.model_copy(update={"mode": "write", "overwrite": True})}),
        on_step=job.on_step)
    with dask_client(client, n_workers=opts.n_workers, processes=opts.processes) as dc:
        stage.step("cluster")
        stage.load(dc)
        stage.step("search+assemble")
        try:
            stage.decide(dc)
        except AllCloudyError as exc:
            log.warning("append to %s: nothing new to add (%s)", main.url, exc)
            _drop_leftover(staging)
            return cube
        stage.step("clearance")
        stage.build(dc)  # lazy, to compare what the request would make with the cube before anything else
        assert stage.cube is not None
        _check_same_kind(cube, stage.cube, stage.encoding, main.url)
        new = _leave_out_what_the_cube_has(stage, have, last)
        if not new:
            log.info("append to %s: every date of %s is in the cube already", main.url, job.plan.days)
            _drop_leftover(staging)
            return cube
        stage.build(dc)  # the new dates only
        assert stage.cube is not None
        staged = staging.status()
        # complete and of this request: written by an append cut short before it changed the cube (the request
        # hash says which of its dates are new, so the cube has not changed since)
        if staged != "complete" or staging.attrs().get("request_hash") != stage.cube.attrs["request_hash"]:
            if staged == "complete":
                log.info("append to %s: the staging cube %s of another request is replaced", main.url, staging.url)
                staging.fs.rm(staging.path, recursive=True)
            stage.start()  # an unfinished staging cube of the same request is resumed
            stage.step("template")
            stage.write(dc)
            staging.finalize({"append_request": _request_id(req), "last_run": {
                "resumed": stage.run.resumed, "chunk_writes": stage.run.chunk_writes}})
        stage.step("super-resolve+write")
    state = _Append.of(main, staging, base=None, timings=dict(stage.run.steps), last_run={
        "mode": "append", "resumed": stage.run.resumed, "chunk_writes": stage.run.chunk_writes,
        "chunks": sum(staging.expected().values())})
    cube = _finish(state, marked=False)
    stage.step("append")
    return cube


def _drop_leftover(staging: CubeStore) -> None:
    """A complete staging cube when the cube has every date: left behind by an append stopped after its last
    change to the cube (step 10), or written for another request; either way of no use."""
    if staging.status() == "complete":
        log.info("removing %s: a staging cube left behind by an earlier append", staging.url)
        staging.fs.rm(staging.path, recursive=True)


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


def _check_same_kind(cube: xr.Dataset, new: xr.Dataset, encoding: dict[str, Any], url: str) -> None:
    differ = [f"{k}: cube {cube.attrs.get(k)!r}, request {new.attrs.get(k)!r}" for k in SAME
              if json.dumps(cube.attrs.get(k), default=str) != json.dumps(new.attrs.get(k), default=str)]
    if cube.reflectance.dtype != new.reflectance.dtype:
        differ.append(f"dtype: cube {cube.reflectance.dtype}, request {new.reflectance.dtype}")
    stored = np.dtype(cube.reflectance.encoding.get("dtype", cube.reflectance.dtype))
    asked = np.dtype(encoding.get("reflectance", {}).get("dtype", new.reflectance.dtype))
    if stored != asked:  # int16-packed and float32 cubes both read as float32
        differ.append(f"stored dtype (option dtype): cube {stored}, request {asked}")
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
    return sorted(name for name, arr in group.arrays()
                  if (getattr(arr.metadata, "dimension_names", None) or ("",))[0] == "time")


# --- steps 3-11: the cube changed, from a complete staging cube --------------------------------------------


@dataclass
class _Append:
    """An append from step 3 on: the two cubes, the cube's length in time before it, the staging cube's."""

    main: CubeStore
    staging: CubeStore
    base: int
    steps: int
    single: bool  # single-image: clear_count (y, x) counts every kept frame, so it is summed
    timings: dict[str, float]
    last_run: dict[str, Any]
    t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def of(cls, main: CubeStore, staging: CubeStore, *, base: int | None, timings: dict[str, float],
           last_run: dict[str, Any]) -> _Append:
        group = main.group(consolidated=False)
        steps = int(_arr(staging.group(consolidated=False), "time").shape[0])
        single = "clear_count" in group and _arr(group, "clear_count").ndim == 2
        base = int(_arr(group, "time").shape[0]) if base is None else base
        return cls(main, staging, base, steps, single, timings, {**last_run, "time_steps": steps})


def _finish(a: _Append, *, marked: bool) -> xr.Dataset:
    """Steps 3 (unless ``marked``: the cube says ``appending`` already) to 11 of the module docstring."""
    if not marked:
        _check_stored_alike(a)
        _mark(a)
    _grow(a)
    _copy(a)
    _sum_clear_count(a)
    _extend_overviews(a)
    _consolidate(a)
    _describe(a)
    _complete(a)
    _remove_staging(a)
    log.info("appended %d time step(s) to %s", a.steps, a.main.url)
    return a.main.open()


def _check_stored_alike(a: _Append) -> None:
    """Before the cube changes: the staging cube has the cube's arrays along time, each storing its values as the
    cube's does (data type, fill value, decoding attributes), so that they are copied as stored."""
    group, stage = a.main.group(consolidated=False), a.staging.group(consolidated=False)
    names, staged = _time_arrays(group), [n for n in _time_arrays(stage)]
    differ = [f"arrays along time: cube {names}, request {staged}"] if names != staged else []
    for name in set(names) & set(staged):
        mine, theirs = _arr(group, name), _arr(stage, name)
        for what, x, y in [("data type", str(mine.metadata.data_type), str(theirs.metadata.data_type)),
                           ("fill value", repr(mine.metadata.fill_value), repr(theirs.metadata.fill_value)),
                           *[(k, repr(mine.attrs.get(k)), repr(theirs.attrs.get(k))) for k in DECODING]]:
            if x != y:
                differ.append(f"{name} {what}: cube {x}, request {y}")
    if differ:
        raise CubeMismatchError(f"mode='append' cannot grow {a.main.url} with {a.staging.url}: " + "; ".join(differ))


def _mark(a: _Append) -> None:
    """Step 3. ``clear_count_before`` is written again on every try: the cube's is unchanged until it is marked."""
    if a.single:
        before = _arr(a.main.group(consolidated=False), "clear_count")
        kept = a.staging.group(consolidated=False).create_array(
            "clear_count_before", shape=before.shape, dtype=before.dtype, chunks=before.chunks,
            dimension_names=("y", "x"), overwrite=True)
        kept[...] = before[...]  # the staging cube's own (never verified): an all-zero chunk may stay unwritten
    # one write (an attribute at a time would leave the cube incomplete and unmarked in between), through the
    # consolidated group: the consolidated metadata (the cube before the append) stays
    a.main.group().update_attributes({"complete": False, "appending": a.staging.url, "append_base": a.base})


def _grow(a: _Append) -> None:
    """Step 4."""
    group = a.main.group(consolidated=False)
    for name in _time_arrays(group):
        arr = _arr(group, name)
        if arr.shape[0] != a.base + a.steps:
            arr.resize((a.base + a.steps, *arr.shape[1:]))


def _copy(a: _Append) -> None:
    """Step 5."""
    group, stage = a.main.group(consolidated=False), a.staging.group(consolidated=False)
    for name in _time_arrays(group):
        _copy_array(_arr(stage, name), _arr(group, name), a.base)


def _copy_array(src: Any, dst: Any, base: int) -> None:
    """``src``'s stored values into ``dst[base:base + len(src)]``: one task per shard of ``dst`` (one writer each),
    in threads here (not on whichever Dask cluster is the default: it may lack the stores' credentials)."""
    n = int(src.shape[0])
    if src.ndim == 1:  # a coordinate along time: a few values
        dst[base:base + n] = src[...]
        return
    block = dst.shards or dst.chunks
    data = da.from_array(src, chunks=(1 if block[0] == 1 else n, *block[1:]), name=False)
    with dask.config.set(scheduler="threads"):
        da.store(data, dst, regions=(slice(base, base + n), *(slice(0, s) for s in src.shape[1:])), lock=False)


def _sum_clear_count(a: _Append) -> None:
    """Step 6: from the count kept at step 3, so a second try does not count the new frames twice."""
    if a.single:
        group, stage = a.main.group(consolidated=False), a.staging.group(consolidated=False)
        _arr(group, "clear_count")[...] = _arr(stage, "clear_count_before")[...] + _arr(stage, "clear_count")[...]


def _extend_overviews(a: _Append) -> None:
    """Step 7: the new time steps' region of every level (the same region again on a second try)."""
    if a.main.attrs().get("overviews"):
        write_overviews(a.main, start=a.base)


def _consolidate(a: _Append) -> None:
    """Step 8."""
    a.main.consolidate()


def _merged(a: _Append) -> dict[str, Any]:
    """The provenance attributes of the grown cube: the cube's (unchanged until step 10) and the staging cube's."""
    old, add = a.main.attrs(), a.staging.attrs()
    frames = json.loads(old.get("frames", "[]")) + [f for f in json.loads(add.get("frames", "[]"))
                                                     if f["reason"] != "already in the cube"]
    appended = [*old.get("appended", []), {"dates": add.get("dates"), "time_steps": a.steps,
                                           "created": add.get("created")}]
    start, end = str(old.get("dates", "/")).split("/")[0], str(add.get("dates", "/")).split("/")[-1]
    merged = {"frames": json.dumps(frames), "appended": appended, "dates": f"{start}/{end}",
              "stac_item_ids": sorted({*old.get("stac_item_ids", []), *add.get("stac_item_ids", [])})}
    if "windows" in old:
        merged["windows"] = json.dumps(json.loads(old["windows"]) + [w for w in json.loads(add.get("windows", "[]"))
                                                                       if w["status"] != "dropped"])
    return merged


def _describe(a: _Append) -> None:
    """Step 9: the grown cube (consolidated at step 8) with the attributes step 10 gives it."""
    cube = a.main.open(require_complete=False)
    cube.attrs = {**cube.attrs, **_merged(a)}
    write_stac(cube, a.main)


def _complete(a: _Append) -> None:
    """Step 10: every attribute in one write, the consolidated metadata kept."""
    attrs = {k: v for k, v in a.main.attrs().items() if k not in MARKERS}
    attrs.update(_merged(a), complete=True, last_run=a.last_run,
                 timings_s={**a.timings, "append": round(time.perf_counter() - a.t0, 3)})
    a.main.group().attrs.put(attrs)


def _remove_staging(a: _Append) -> None:
    """Step 11."""
    if a.staging.fs.exists(a.staging.path):
        a.staging.fs.rm(a.staging.path, recursive=True)

"""``run_region``: search, assemble, super-resolve and persist one region and date range.

A run is a :class:`~srcube.pipeline.request.RunRequest`, checked into a frozen
:class:`~srcube.pipeline.plan.RunPlan` (:func:`~srcube.pipeline.plan.plan`), then these steps, each a
function of the plan elsewhere: load the stack (:func:`~srcube.pipeline.load.load`), decide the frames
(:mod:`~srcube.pipeline.assemble.clearance`), build the lazy cube (:func:`~srcube.pipeline.build.build_cube`),
write its chunks and finalise it (:class:`~srcube.pipeline.write.store.CubeStore`). :class:`RegionJob`
holds what the steps have made so far; ``run_region`` runs them in a row, the Prefect flow as tasks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from srcube.pipeline import redact
from srcube.pipeline.append import append_region, grows
from srcube.pipeline.assemble.clearance import FrameDecision, WindowPlan, plan_windows, select_frames
from srcube.pipeline.build import build_cube
from srcube.pipeline.cluster import check_client, compute, dask_client, gpu_resources
from srcube.pipeline.errors import AllCloudyError, OutputExistsError, disk_full_is_typed
from srcube.pipeline.load import Found, Loaded, find, load
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import BBoxLike, DatesLike
from srcube.pipeline.plan import RunPlan, plan
from srcube.pipeline.request import RunRequest
from srcube.pipeline.search.access import register_on_workers
from srcube.pipeline.write import stac
from srcube.pipeline.write.cube import write_batches

__all__ = ["RegionJob", "RunLog", "RunOptions", "run_region"]

log = logging.getLogger(__name__)


@dataclass
class RunLog:
    """What a run did, step by step; ``srcube demo`` prints it and the cube keeps it in attrs."""

    steps: dict[str, float] = field(default_factory=dict)
    items_found: int = 0
    frames: list[FrameDecision] = field(default_factory=list)
    windows: list[WindowPlan] = field(default_factory=list)
    from_cache: bool = False
    resumed: bool = False
    chunk_writes: int = 0
    excluded: list[dict[str, Any]] = field(default_factory=list)  # items left out for unusable assets
    _t0: float = field(default_factory=time.perf_counter)

    def mark(self, step: str) -> None:
        now = time.perf_counter()
        self.steps[step] = round(max(0.0, now - self._t0 - sum(self.steps.values())), 3)


@dataclass
class RegionJob:
    """One region run, step by step over its :class:`RunPlan`: :meth:`load`, :meth:`decide`, :meth:`build`,
    :meth:`start`, :meth:`write` (all or a batch), :meth:`finalize`. The Prefect flow runs them as tasks,
    re-planning the job from the request and passing the found items and the decisions (plain JSON), so
    that no lazy graph crosses a task boundary."""

    plan: RunPlan
    on_step: Callable[[str, RunLog], None] | None = None
    run: RunLog = field(default_factory=RunLog)
    loaded: Loaded | None = None
    cube: xr.Dataset | None = None
    encoding: dict[str, Any] = field(default_factory=dict)
    _ready: bool = False

    @classmethod
    def prepare(cls, bbox: BBoxLike, dates: DatesLike, *, catalog: str = "sample", collection: str | None = None,
                bands: Sequence[str] | None = None, model: Any = "auto", scale: int | None = None,
                out: str = "srcube.zarr", on_step: Callable[[str, RunLog], None] | None = None,
                **options: Any) -> RegionJob:
        """The job of a call's arguments (see :meth:`from_request`)."""
        redact.install()  # no credentials in any log record of the run (idempotent)
        req = RunRequest.make(bbox, dates, catalog=catalog, collection=collection, bands=bands, model=model,
                              scale=scale, out=out, options=options)
        return cls.from_request(req, on_step=on_step)

    @classmethod
    def from_request(cls, req: RunRequest, *, on_step: Callable[[str, RunLog], None] | None = None) -> RegionJob:
        """The job of a request, planned: every check that needs only the request (typed errors, nothing
        searched or written)."""
        return cls(plan(req), on_step=on_step)

    @property
    def opts(self) -> RunOptions:
        return self.plan.opts

    @property
    def stack(self) -> xr.Dataset:
        assert self.loaded is not None, "load() first"
        return self.loaded.stack

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the output's writer lock (waiting up to ``lock_wait`` s) for the block: two runs
        never write into one store at once. Output checks are repeated under the lock, since the
        other run may have finished or replaced the cube meanwhile."""
        p = self.plan
        lock = p.store.lock(note=f"{p.model.local.name} {p.days} {p.region.as_tuple()}")
        lock.acquire(wait=self.opts.lock_wait)
        try:
            if self.opts.mode == "append" and p.store.status() in ("complete", "appending"):
                # another run made the cube while this one waited: grow it, never replace it
                raise OutputExistsError(f"output {p.store.url} became a cube while this append waited for its lock "
                                        "(another run wrote it); run the same append again: it grows that cube")
            p.store.check_writable(overwrite=self.opts.overwrite)
            with disk_full_is_typed(p.store.url):  # the flow's tasks write under this lock too
                yield
        finally:
            lock.release()

    def _workers_ready(self, client: Any) -> None:
        """Before the first computation: the run's read settings and access on every worker."""
        if not self._ready:
            register_on_workers(client, self.plan.read_settings, self.plan.access)
            self._ready = True

    def step(self, name: str) -> None:
        self.run.mark(name)
        if self.on_step is not None:
            self.on_step(name, self.run)

    def find(self) -> Found:
        """Search, screen and harmonise the run's items (see :func:`~srcube.pipeline.load.find`)."""
        found = find(self.plan)
        self.run.items_found, self.run.excluded = found.items_found, found.excluded
        return found

    def load(self, client: Any, found: Found | Mapping[str, Any] | None = None) -> xr.Dataset:
        """The lazy stack (see :func:`~srcube.pipeline.load.load`); ``found``: items already found (a
        :class:`Found` or its JSON), else they are searched."""
        if found is not None and not isinstance(found, Found):
            found = Found.from_json(found)
        self.loaded = load(self.plan, client, found, lambda: self._workers_ready(client))
        self.run.items_found, self.run.excluded = self.loaded.items_found, self.loaded.excluded
        self.run.from_cache = self.loaded.from_cache
        return self.loaded.stack

    def decide(self, client: Any, decisions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Frame decisions (and composite windows): computed from the clearance, or given back."""
        stack, opts, run = self.stack, self.opts, self.run
        if decisions is not None:
            run.frames = [FrameDecision(**f) for f in decisions["frames"]]
            run.windows = [WindowPlan.from_json(w) for w in decisions.get("windows", [])]
        else:
            self._workers_ready(client)
            fractions, scores = (np.asarray(a) for a in compute(
                client, [stack.clear_fraction, stack.clearance_score], opts.progress, "clearance"))
            if self.plan.multi:
                run.windows, run.frames = plan_windows(
                    stack.time.values, fractions, scores, start=self.plan.days.start, end=self.plan.days.end,
                    window=opts.window, n_views=self.plan.n_views, min_views=opts.min_views,
                    min_clear=opts.min_clear, short_windows=opts.short_windows)
            else:
                run.frames = select_frames(stack.time.values, fractions, opts.min_clear, scores)
        if not any(f.kept for f in run.frames) or (self.plan.multi and not any(w.kept for w in run.windows)):
            raise AllCloudyError(
                f"no frame is usable with min_clear={opts.min_clear:.0%}: "
                + ", ".join(f"{f.time} {f.clear_fraction:.1%}" for f in run.frames)
                + "; lower min_clear, widen the dates, or add clear classes")
        return {"frames": [dataclasses.asdict(f) for f in run.frames], "windows": [w.to_json() for w in run.windows]}

    def build(self, client: Any) -> xr.Dataset:
        """The lazy cube (super-resolution graph + layers) with its provenance attributes."""
        assert self.loaded is not None
        resources = gpu_resources(client, self.opts.gpu)
        self.cube, self.encoding = build_cube(self.plan, self.loaded, self.run.frames, self.run.windows, client,
                                              resources)
        return self.cube

    def start(self) -> bool:
        """Write the template, or keep the unfinished cube of the same request; True when resuming."""
        assert self.cube is not None
        resume = self.plan.store.resumable(self.cube.attrs["request_hash"])
        if not resume:
            self.plan.store.write_template(self.cube, self.encoding, template_only=True)
        self.run.resumed = resume
        return resume

    def pending(self) -> list[tuple[str, tuple[int, ...]]]:
        """(variable, chunk) writes not yet in the cube's manifest, in a stable order."""
        assert self.cube is not None
        return self.plan.store.pending(self.cube)

    def batches(self, size: int) -> list[list[tuple[str, tuple[int, ...]]]]:
        """All chunk writes of the cube in batches of ``size`` output locations (see :func:`write_batches`)."""
        assert self.cube is not None
        return write_batches(self.cube, size)

    def write(self, client: Any, only: Sequence[tuple[str, tuple[int, ...]]] | None = None) -> int:
        """Compute and write the pending chunks (or ``only`` these); return how many were written."""
        assert self.cube is not None
        writes = self.plan.store.chunk_writes(self.cube, self.encoding, only=only)
        n = self.plan.store.count_blocks(writes)
        if n:
            self._workers_ready(client)
            compute(client, writes, self.opts.progress, "super-resolve and write")
        self.run.chunk_writes += n
        return n

    def finalize(self) -> xr.Dataset:
        """Mark the cube complete (after checking every chunk is in), then describe it in STAC beside it."""
        return stac.finalize(self.plan.store, {"timings_s": dict(self.run.steps), "last_run": {
            "resumed": self.run.resumed, "chunk_writes": self.run.chunk_writes}})


def run_region(bbox: BBoxLike, dates: DatesLike, *, catalog: str = "sample", collection: str | None = None,
               bands: Sequence[str] | None = None, model: Any = "auto", scale: int | None = None,
               out: str = "srcube.zarr", client: Any | None = None,
               on_step: Callable[[str, RunLog], None] | None = None, yes: bool = False, **options: Any) -> xr.Dataset:
    """Super-resolve a region and date range into an analysis-ready zarr cube; return it, lazily.

    bbox is (min_lon, min_lat, max_lon, max_lat) in EPSG:4326; dates "YYYY-MM-DD/YYYY-MM-DD" or
    a (start, end) pair, both inclusive. catalog is a profile name (``sample``, ``earth-search``,
    ``planetary-computer``, ``cdse``, ``terrascope``), a STAC API URL, or ``kelvins:/path/imgset``.
    ``client`` is a dask.distributed Client or a scheduler address (``"tcp://host:8786"``: connected to for
    the run); without one the run computes on threads in this process.
    ``scale`` defaults to the weights' scale for trained models and to 4 for the baselines.
    ``model="auto"`` (default) picks :func:`models.default_model` for the sensor, scale and bands: the
    shipped learned model that beat bicubic on its test split (lower end of the 95 % interval of the mean
    gain above zero), else ``"bicubic"``; with composite windows (``window=``) the multi-frame weights that
    qualify so come first.
    Single-image models give one output frame per clear date; multi-frame models one per
    composite window (``window=``), fusing its clearest views. See :class:`RunOptions`.
    A region whose output grid is estimated above ``max_pixels`` (default 1e9 pixels per band and
    date) is refused with RegionTooLargeError unless ``yes=True``.

    Every check that needs only the arguments runs before the search; the search, the band
    mapping and the clearance run before anything is written. The cube says ``complete = true``
    only after every chunk is in. An unfinished cube of the same request is resumed: only the
    chunks missing from its manifest are computed. ``mode="append"`` grows the complete cube at ``out``
    by the request's new dates (see :func:`~srcube.pipeline.append.append_region`).
    """
    check_client(client)
    job = RegionJob.prepare(bbox, dates, catalog=catalog, collection=collection, bands=bands, model=model,
                            scale=scale, out=out, on_step=on_step, yes=yes, **options)
    return run_job(job, client)


def run_job(job: RegionJob, client: Any | None, *, batch: int | None = None) -> xr.Dataset:
    """Run a planned job: grow the cube at its output (``mode="append"`` onto a cube there) or write it (``batch``:
    see :func:`write_region`)."""
    with disk_full_is_typed(job.plan.store.url, lambda: int(job.cube.nbytes) if job.cube is not None else None):
        if grows(job.plan.store, job.opts.mode):
            return append_region(job, client)
        return write_region(job, client, batch=batch)


def write_region(job: RegionJob, client: Any | None, *, batch: int | None = None) -> xr.Dataset:
    """Run ``job`` into a new cube (or resume its unfinished one), under the output's lock. ``batch``: compute the
    chunk writes ``batch`` output locations at a time (:meth:`RegionJob.batches`), so that no one graph holds a large
    cube's every task (an area's cell of a year: one graph would be 180k tasks)."""
    with job.locked():
        with dask_client(client, n_workers=job.opts.n_workers, processes=job.opts.processes) as dc:
            job.step("cluster")
            job.load(dc)
            job.step("search+assemble")
            job.decide(dc)
            job.step("clearance")
            job.build(dc)
            job.start()
            job.step("template")
            if batch is None:
                job.write(dc)
            else:
                pending = set(job.pending())
                for part in job.batches(batch):
                    todo = [w for w in part if w in pending]
                    if todo:
                        job.write(dc, only=todo)
            job.step("super-resolve+write")
        result = job.finalize()
        job.step("finalize")
    return result

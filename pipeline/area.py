"""``run_area``: an area cut into cells of the global grid (:mod:`~srcube.pipeline.cells`), one cube per cell.

``run_area(area, dates, cell_km=..., out=PREFIX)`` makes the cube of every cell the area touches at
``PREFIX/<cell id>.zarr`` with the region machinery (:func:`~srcube.pipeline.region.run_region`: the cell's square is
the cube's grid, read with its halo, so a pixel of a cell equals the same pixel of a run over a larger bbox), and an
index of them: the area's STAC Collection with one Item per cell (:mod:`~srcube.pipeline.write.areaindex`).

The client stays flat: cells are enumerated lazily and each is one task, submitted while fewer than ``max_cells`` are
in flight, to the caller's Dask cluster (each cell runs on one worker, on its threads) or, without one, to threads
in this process. The client holds cell ids and their states, never a cell's graph or template: a continent-year
costs it what its list of ids costs. A cell whose cube is complete is skipped (``mode="append"``: grown); a failing
cell is tried again (``cell_retries``, with back-off; errors of the request itself are not) and then recorded, and
the others go on. The run ends with an :class:`AreaSummary` (cells done / skipped / empty / failed and why), also
written to ``PREFIX/run-summary.json``. A first Ctrl-C stops submitting and lets the cells in flight finish; a second
one leaves them as they are: unfinished cubes resume when the same area is run again.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as dt
import heapq
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from srcube.pipeline import redact
from srcube.pipeline.cells import DEFAULT_CELL_KM, AreaLike, Cell, cell_size_m, count_cells, iter_cells, parse_area
from srcube.pipeline.cluster import check_client, gpu_resources
from srcube.pipeline.errors import (
    AllCloudyError,
    EmptySearchError,
    InvalidAreaError,
    InvalidOptionError,
    SrcubeError,
    StoreLockedError,
    is_transient,
)
from srcube.pipeline.params import DatesLike
from srcube.pipeline.request import RunRequest
from srcube.pipeline.write.lock import HEARTBEAT_S, STALE_AFTER_S

log = logging.getLogger(__name__)

CellState = Literal["done", "skipped", "empty", "failed"]
#: seconds before the first retry of a failed cell, doubling, at most :data:`RETRY_MAX_S`
RETRY_S, RETRY_MAX_S = 2.0, 60.0
#: seconds a cell waits for its cube's lock (unless ``lock_wait`` is given): a writer that died or was cut off on
#: another machine leaves its lock until it goes stale (no heartbeat for STALE_AFTER_S), and the cell's next attempt
#: has to outlast that to take it over, or the cell is recorded failed while nothing writes it
CELL_LOCK_WAIT_S = STALE_AFTER_S + HEARTBEAT_S
SUMMARY = "run-summary.json"
#: output locations (date x tile) a cell computes at once: its chunk writes in graphs of about 100 tasks a location
#: (a year of a 50 km cell in one graph would be 180k tasks: bench/scale_plan.py --area)
CELL_BATCH = 256


def cell_url(prefix: str, cell: Cell | str) -> str:
    """Where the cube of ``cell`` lives under ``prefix``."""
    return f"{str(prefix).rstrip('/')}/{cell}.zarr"


@dataclass(frozen=True)
class CellResult:
    """What became of one cell: its state, how many attempts it took, seconds, and why (empty, failed)."""

    cell: str
    state: CellState
    attempts: int = 1
    seconds: float = 0.0
    reason: str = ""
    time_steps: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AreaSummary:
    """The end of an area run: counts per state, the cells that are empty or failed and why, the index."""

    prefix: str
    dates: str
    cell_size_m: int
    cells: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(("done", "skipped", "empty", "failed"), 0))
    failed: list[CellResult] = field(default_factory=list)
    empty: list[CellResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    index: str = ""

    def add(self, result: CellResult) -> None:
        self.counts[result.state] += 1
        if result.state == "failed":
            self.failed.append(result)
        elif result.state == "empty":
            self.empty.append(result)

    @property
    def finished(self) -> int:
        return sum(self.counts.values())

    @property
    def ok(self) -> bool:
        """Every cell has its cube (or nothing to make), and the run was not interrupted."""
        return not self.failed and not self.interrupted and self.finished == self.cells

    def to_json(self) -> dict[str, Any]:
        return {"prefix": redact.redact(self.prefix), "dates": self.dates, "cell_size_m": self.cell_size_m,
                "cells": self.cells, **self.counts, "seconds": round(self.seconds, 3),
                "interrupted": self.interrupted, "index": redact.redact(self.index),
                "failed_cells": [r.to_json() for r in self.failed], "empty_cells": [r.to_json() for r in self.empty]}


# --- one cell, on a worker -------------------------------------------------------------------------------


def run_cell(template: RunRequest, cell_id: str) -> CellResult:
    """Make (or resume, or grow) the cube of one cell from the area's request ``template``; runs where the cell's
    task runs (a Dask worker, or a thread here), computing on that process's threads. A complete cube is skipped
    (``mode="append"``: grown by the request's new dates); no items or no clear frame is an ``empty`` cell. Other
    errors propagate (the area run retries or records them). The cell's STAC Item goes into the area's index."""
    from srcube.pipeline.region import RegionJob, run_job
    from srcube.pipeline.write import areaindex
    from srcube.pipeline.write.store import CubeStore

    t0 = time.perf_counter()
    cell = Cell.parse(cell_id)
    out = cell_url(template.out, cell)
    opts = template.options
    req = template.model_copy(update={"bbox": cell.bbox().as_tuple(), "cell": cell.id, "out": out})
    store = CubeStore(out, opts.store_options(out))
    if opts.mode != "append" and not opts.overwrite and store.status() == "complete":
        areaindex.write_cell_item(template.out, cell, store, opts.store_options(template.out))
        return CellResult(cell.id, "skipped", seconds=time.perf_counter() - t0,
                          reason="its cube is complete (run with overwrite=True to make it again)")
    try:
        cube = run_job(RegionJob.from_request(req), None, batch=CELL_BATCH)
    except (EmptySearchError, AllCloudyError) as exc:
        return CellResult(cell.id, "empty", seconds=time.perf_counter() - t0, reason=str(exc))
    areaindex.write_cell_item(template.out, cell, store, opts.store_options(template.out))
    return CellResult(cell.id, "done", seconds=time.perf_counter() - t0, time_steps=int(cube.sizes.get("time", 0)))


def worth_retrying(exc: BaseException) -> bool:
    """A failed cell is tried again unless the request itself is wrong (srcube's typed errors that no retry can
    change); a cube locked by another writer (a cell still running elsewhere) is tried again later."""
    if isinstance(exc, StoreLockedError):
        return True
    if isinstance(exc, SrcubeError):
        return is_transient(exc)
    return not isinstance(exc, (TypeError, AssertionError, NotImplementedError))


# --- where cells run ----------------------------------------------------------------------------------------


class Threads:
    """Cells on threads of this process (no client): each computes on dask's threaded scheduler."""

    def __init__(self, max_cells: int) -> None:
        self.pool = cf.ThreadPoolExecutor(max_workers=max_cells, thread_name_prefix="srcube-cell")

    def submit(self, fn: Callable[..., Any], *args: Any, key: str) -> Any:
        return self.pool.submit(fn, *args)

    def wait(self, futures: Sequence[Any], timeout: float | None) -> set[Any]:
        return set(cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED).done)

    def cancel(self, futures: Sequence[Any]) -> None:
        for f in futures:
            f.cancel()

    def close(self, wait: bool) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


class DaskCells:
    """Cells as tasks of a Dask cluster: one task per cell (on a GPU worker where the cluster has them)."""

    def __init__(self, client: Any, resources: dict[str, float] | None) -> None:
        self.client, self.resources = client, resources

    def submit(self, fn: Callable[..., Any], *args: Any, key: str) -> Any:
        return self.client.submit(fn, *args, key=key, pure=False, resources=self.resources)

    def wait(self, futures: Sequence[Any], timeout: float | None) -> set[Any]:
        from distributed import wait
        from distributed.utils import TimeoutError as DaskTimeout

        try:
            # on this client, which need not be the process's default one (a scheduler address connects one
            # with set_as_default=False; distributed.wait alone would find no client, or another cluster's)
            with self.client.as_current():
                return set(wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED").done)
        except (TimeoutError, DaskTimeout):
            return set()

    def cancel(self, futures: Sequence[Any]) -> None:
        self.client.cancel(list(futures))

    def close(self, wait: bool) -> None:
        pass


# --- the area run ---------------------------------------------------------------------------------------------


def prepare_area(area: AreaLike, dates: DatesLike, *, cell_km: float = DEFAULT_CELL_KM, out: str,
                 catalog: str = "sample", collection: str | None = None, bands: Sequence[str] | None = None,
                 model: Any = "auto", scale: int | None = None, **options: Any) -> tuple[RunRequest, int]:
    """(the request every cell's is made from, the cell size in metres), after every check that needs only the
    arguments: the area and cell size, and the first cell's request planned as a run would be (dates, bands, model
    and weights, options, the output's store) -- typed errors, nothing searched or written."""
    from srcube.pipeline.plan import plan

    size = cell_size_m(cell_km)
    parse_area(area)
    first = next(iter_cells(area, cell_km), None)
    if first is None:
        raise InvalidAreaError(f"the area {area!r} touches no cell of the {size} m grid")
    if not isinstance(out, str) or not out.strip():
        raise InvalidOptionError(f"out must be the path or URL of the folder of the area's cubes, got {out!r}")
    for name in ("progress", "n_workers", "processes"):
        if options.get(name):
            raise InvalidOptionError(f"{name} is not an option of run_area: each cell computes on its worker's "
                                     "threads; give a Dask client for more workers")
    options.setdefault("lock_wait", CELL_LOCK_WAIT_S)
    template = RunRequest.make(first.region(), dates, catalog=catalog, collection=collection, bands=bands,
                               model=model, scale=scale, out=out.rstrip("/"), options=options)
    # the typed errors of a cell's run, its output a path under the prefix that nothing writes (so a cell's cube
    # that is there already, complete or foreign, is that cell's business, not the area's)
    plan(template.model_copy(update={"out": f"{template.out}/.srcube-check.zarr"}))
    return template, size


def run_area(area: AreaLike, dates: DatesLike, *, cell_km: float = DEFAULT_CELL_KM, out: str,
             catalog: str = "sample", collection: str | None = None, bands: Sequence[str] | None = None,
             model: Any = "auto", scale: int | None = None, client: Any | None = None,
             max_cells: int | None = None, cell_retries: int = 2,
             on_cell: Callable[[CellResult, AreaSummary], None] | None = None,
             on_start: Callable[[AreaSummary], None] | None = None, **options: Any) -> AreaSummary:
    """Make the cube of every cell of ``area`` at ``out/<cell id>.zarr`` and the area's index; return the summary.

    ``area`` is a lon/lat bbox (``min_lon > max_lon`` crosses the antimeridian) or a GeoJSON Polygon/MultiPolygon
    (a dict, its text, a Feature or FeatureCollection); only cells that overlap it are made. ``cell_km`` is the cell
    size (a multiple of 0.3 km, see :mod:`~srcube.pipeline.cells`). ``out`` is a folder (local path or fsspec URL,
    ``storage_options`` as for a run). ``client`` is a ``dask.distributed`` Client (or a scheduler address); each
    cell is one task on it, at most ``max_cells`` at once (default: twice its workers); without one, cells run on
    ``max_cells`` (default 1) threads here. Every other keyword is a :class:`~srcube.pipeline.options.RunOptions`
    option of each cell's run (``mode="append"`` grows every cell); ``lock_wait`` defaults to
    :data:`CELL_LOCK_WAIT_S` here, so a cell tried again after its worker died or was cut off takes that writer's
    lock over once it is stale instead of failing. ``on_cell`` is called with each cell's result as it ends,
    ``on_start`` once the cells are counted (progress bars).
    """
    check_client(client)
    if isinstance(max_cells, bool) or (max_cells is not None and (not isinstance(max_cells, int) or max_cells < 1)):
        raise InvalidOptionError(f"max_cells must be a positive integer, got {max_cells!r}")
    if isinstance(cell_retries, bool) or not isinstance(cell_retries, int) or cell_retries < 0:
        raise InvalidOptionError(f"cell_retries must be an integer >= 0, got {cell_retries!r}")
    gpu = options.pop("gpu", None)
    template, size = prepare_area(area, dates, cell_km=cell_km, out=out, catalog=catalog, collection=collection,
                                  bands=bands, model=model, scale=scale, **options)
    connected = None
    if isinstance(client, str):
        from srcube.pipeline.cluster import _connected

        connected = _connected(client)
        client = connected.__enter__()
    try:
        if client is None:
            pool: Any = Threads(max_cells or 1)
            limit = max_cells or 1
        else:
            pool = DaskCells(client, gpu_resources(client, gpu))
            limit = max_cells or 2 * max(1, len(client.scheduler_info()["workers"]))
        return run_cells(template, size, area, cell_km, pool, limit, cell_retries, on_cell=on_cell,
                         on_start=on_start)
    finally:
        if connected is not None:
            connected.__exit__(None, None, None)


def run_cells(template: RunRequest, size_m: int, area: AreaLike, cell_km: float, pool: Any, limit: int,
              retries: int, *, on_cell: Callable[[CellResult, AreaSummary], None] | None = None,
              on_start: Callable[[AreaSummary], None] | None = None) -> AreaSummary:
    """Stream the cells of ``area`` through ``pool`` (``submit``/``wait``/``cancel``/``close``: threads here, a Dask
    cluster, Prefect tasks) at most ``limit`` at once, then write the index and the summary; return the summary."""
    from srcube.pipeline.write import areaindex

    summary = AreaSummary(template.out, template.dates, size_m)
    summary.cells = count_cells(area, cell_km)
    if on_start is not None:
        on_start(summary)
    t0 = time.perf_counter()
    summary.interrupted = _stream(pool, template, iter_cells(area, cell_km), limit, retries, summary, on_cell)
    summary.index = areaindex.write_collection(template, size_m, template.options.store_options(template.out))
    summary.seconds = time.perf_counter() - t0
    _write_summary(template, summary)
    log.info("area %s: %d cells: %s in %.1f s", template.out, summary.cells,
             ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n), summary.seconds)
    return summary


def _stream(pool: Any, template: RunRequest, cells: Iterator[Cell], limit: int, retries: int,
            summary: AreaSummary, on_cell: Callable[[CellResult, AreaSummary], None] | None) -> bool:
    """Submit cells while fewer than ``limit`` are in flight, retry failures, record results; True if interrupted."""
    in_flight: dict[Any, tuple[str, int]] = {}  # future -> (cell id, attempt)
    later: list[tuple[float, str, int]] = []  # (when, cell id, attempt): retries waiting for their back-off
    stopping = False
    exhausted = False

    def record(result: CellResult) -> None:
        summary.add(result)
        if on_cell is not None:
            on_cell(result, summary)

    try:
        while True:
            now = time.monotonic()
            while not stopping and len(in_flight) < limit:
                if later and later[0][0] <= now:
                    _, cid, attempt = heapq.heappop(later)
                elif not exhausted:
                    nxt = next(cells, None)
                    if nxt is None:
                        exhausted = True
                        continue
                    cid, attempt = nxt.id, 1
                else:
                    break
                key = f"srcube-cell-{cid}-{attempt}-{time.time_ns()}"
                in_flight[pool.submit(run_cell, template, cid, key=key)] = (cid, attempt)
            if not in_flight and (stopping or (exhausted and not later)):
                return stopping
            timeout = max(0.0, later[0][0] - now) if later else None
            if not in_flight:
                time.sleep(timeout or 0.0)
                continue
            for fut in pool.wait(list(in_flight), timeout):
                cid, attempt = in_flight.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:
                    why = f"{type(exc).__name__}: {redact.redact(str(exc))}"
                    if attempt <= retries and not stopping and worth_retrying(exc):
                        delay = min(RETRY_MAX_S, RETRY_S * 2 ** (attempt - 1))
                        log.warning("cell %s failed (attempt %d of %d), tried again in %.0f s: %s", cid, attempt,
                                    retries + 1, delay, why)
                        heapq.heappush(later, (time.monotonic() + delay, cid, attempt + 1))
                        continue
                    log.error("cell %s failed after %d attempt(s): %s", cid, attempt, why)
                    result = CellResult(cid, "failed", attempts=attempt, reason=why)
                record(dataclasses.replace(result, attempts=attempt))
    except KeyboardInterrupt:
        if stopping:
            raise
        log.warning("interrupted: no new cells; waiting for the %d in flight to finish (Ctrl-C again to leave them "
                    "unfinished: they resume when the same area is run again)", len(in_flight))
        later.clear()
        try:
            while in_flight:
                for fut in pool.wait(list(in_flight), None):
                    cid, attempt = in_flight.pop(fut)
                    try:
                        record(dataclasses.replace(fut.result(), attempts=attempt))
                    except Exception as exc:
                        record(CellResult(cid, "failed", attempt, reason=f"{type(exc).__name__}: {exc}"))
        except KeyboardInterrupt:
            pool.cancel(list(in_flight))
            pool.close(wait=False)
            log.warning("left %d cell(s) unfinished; run the same area again to finish them", len(in_flight))
        return True
    finally:
        if not in_flight:
            pool.close(wait=True)


def _write_summary(template: RunRequest, summary: AreaSummary) -> None:
    from fsspec.core import url_to_fs

    fs, path = url_to_fs(template.out, **dict(template.options.store_options(template.out) or {}))
    fs.makedirs(path, exist_ok=True)
    doc = {**summary.to_json(), "written": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    fs.pipe_file(f"{path}/{SUMMARY}", json.dumps(doc, indent=1).encode())

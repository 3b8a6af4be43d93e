"""The ``srcube-area`` Prefect flow: :func:`srcube.pipeline.area.run_area` with one Prefect task per cell.

The flow run is the flat client of an area run: it enumerates the cells lazily and keeps at most ``max_cells``
``area-cell`` tasks in flight on the flow's Dask cluster (:mod:`flows.settings`: the long-lived cluster, a per-run
one on Kubernetes, or a local one), each making one cell's cube on its worker
(:func:`~srcube.pipeline.area.run_cell`). A cell that fails is tried again as a new task run (``cell_retries``,
with back-off) and then recorded; the others go on. Cells whose cubes are complete are skipped, so a re-run of
the flow (or a retried flow run) does only what is left. The flow writes the area's index
(``<out>/collection.json``) and a summary artifact, and returns the summary.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import queue
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from srcube.flows.region import reference_day
from srcube.flows.settings import DaskSettings, flush_worker_telemetry
from srcube.pipeline import redact
from srcube.pipeline.area import AreaSummary, CellResult, prepare_area, run_cell, run_cells
from srcube.pipeline.cells import DEFAULT_CELL_KM
from srcube.pipeline.errors import InvalidOptionError
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import DateRange
from srcube.pipeline.request import RunRequest


# Not cached, results not persisted: a cell's cube says itself whether it is done (its complete flag), so a
# re-run skips it without a cache record, and a cell tried again in the same flow run must run again.
@task(name="area-cell", task_run_name="cell {cell_id}", cache_policy=NO_CACHE, persist_result=False)
def area_cell(template: RunRequest, cell_id: str) -> CellResult:
    """One cell's cube (made, resumed, grown or skipped): :func:`srcube.pipeline.area.run_cell`."""
    return run_cell(template, cell_id)


class PrefectCells:
    """Cells as ``area-cell`` task runs on the flow's task runner (the flow's Dask cluster), the pool that
    :func:`srcube.pipeline.area.run_cells` streams cells through.

    Each future puts itself on a queue when its task run ends (a done callback registered once, at submission):
    ``wait`` takes the first from the queue, blocking at most ``timeout`` (the back-off of a retry), and then
    everything else that has ended, so one call returns every cell that finished meanwhile. (Prefect's
    ``as_completed`` registers new callbacks and arms a timeout scope in the flow's thread on every call.)
    ``resources``: Dask resources of each cell's task (``{"GPU": 1}``: one cell per GPU worker at a time)."""

    def __init__(self, resources: dict[str, float] | None = None) -> None:
        self.resources = resources
        self.ended: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def submit(self, fn: Any, template: RunRequest, cell_id: str, *, key: str) -> Any:
        import dask

        with dask.annotate(resources=self.resources) if self.resources else contextlib.nullcontext():
            future = area_cell.submit(template, cell_id)
        future.add_done_callback(self.ended.put)
        return future

    def wait(self, futures: Sequence[Any], timeout: float | None) -> set[Any]:
        try:
            ended = {self.ended.get(timeout=timeout)}
        except queue.Empty:
            return set()
        while True:
            try:
                ended.add(self.ended.get_nowait())
            except queue.Empty:
                break
        # every submitted future ends once and is returned once: all of them are among those in flight
        return ended & set(futures)

    def cancel(self, futures: Sequence[Any]) -> None:
        pass  # a cell left running finishes (or stays resumable) on its worker

    def close(self, wait: bool) -> None:
        pass


def check_limits(max_cells: Any, cell_retries: Any) -> None:
    """InvalidOptionError unless ``max_cells`` >= 1 and ``cell_retries`` >= 0 are integers (as run_area)."""
    if isinstance(max_cells, bool) or not isinstance(max_cells, int) or max_cells < 1:
        raise InvalidOptionError(f"max_cells must be a positive integer, got {max_cells!r}")
    if isinstance(cell_retries, bool) or not isinstance(cell_retries, int) or cell_retries < 0:
        raise InvalidOptionError(f"cell_retries must be an integer >= 0, got {cell_retries!r}")


def cell_resources(client: Any | None, gpu: bool | None) -> dict[str, float] | None:
    """The Dask resources of each cell's task on the flow's cluster (``client``; None: a task runner without
    Dask): ``{"GPU": 1}`` when ``gpu`` is true, or (``None``) when a worker declares a GPU, so that one cell at a
    time has each GPU worker. ``gpu=True`` with workers, none of them with a GPU, is an InvalidOptionError;
    with no worker yet (a cluster that autoscales from zero) the cells wait for GPU workers."""
    from srcube.pipeline.cluster import gpu_resources

    if gpu is False:
        return None
    if client is None:
        if gpu:
            raise InvalidOptionError("gpu=True but the flow's task runner is not a Dask cluster with GPU workers")
        return None
    if gpu and not client.scheduler_info()["workers"]:
        return {"GPU": 1}
    return gpu_resources(client, gpu)


def _flow_client() -> Any | None:
    """The Dask client of the flow run's task runner (None when the runner is not Dask's)."""
    from prefect.context import FlowRunContext
    from prefect_dask import DaskTaskRunner

    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx is not None else None
    return runner.client if isinstance(runner, DaskTaskRunner) else None


def build_area_request(area: Any, dates: str | Sequence[str], cell_km: float, catalog: str, collection: str | None,
                       bands: Sequence[str] | None, model: str, scale: int | None, out: str,
                       options: Mapping[str, Any] | None, today: dt.date | None = None) -> tuple[RunRequest, int]:
    """The flow's parameters as the area's template request (relative dates resolved on the run's scheduled day) and
    cell size; srcube's typed errors before any task runs."""
    days = DateRange.parse(dates, today=today or reference_day())
    return prepare_area(area, str(days), cell_km=cell_km, out=out, catalog=catalog, collection=collection,
                        bands=bands, model=model, scale=scale, **dict(options or {}))


def _markdown(summary: AreaSummary) -> str:
    rows = [("index", f"`{redact.redact(summary.index)}`"), ("dates", summary.dates),
            ("cell size", f"{summary.cell_size_m} m"), ("cells", summary.cells),
            *((state, n) for state, n in summary.counts.items()), ("seconds", f"{summary.seconds:.1f}")]
    text = "## srcube area\n\n| | |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)
    problems = [*summary.failed, *summary.empty][:50]
    if problems:
        text += "\n| cell | state | why |\n|---|---|---|\n" + "".join(
            f"| {r.cell} | {r.state} | {r.reason[:200].replace('|', '/')} |\n" for r in problems)
    return text


@flow(name="srcube-area", task_runner=DaskSettings.from_env().task_runner(), validate_parameters=True)
def area_flow(area: list[float] | str | dict[str, Any], dates: str | list[str] = "last 30 days",
              cell_km: float = DEFAULT_CELL_KM, catalog: str = "sample", collection: str | None = None,
              bands: list[str] | None = None, model: str = "auto", scale: int | None = None,
              out: str = "srcube-area", options: RunOptions | None = None, max_cells: int = 8,
              cell_retries: int = 2) -> dict[str, Any]:
    """Super-resolve ``area`` (a lon/lat bbox or a GeoJSON Polygon/MultiPolygon) over ``dates`` as one cube per cell
    of ``cell_km`` under ``out`` (local path or URL), at most ``max_cells`` cells at once; the index is
    ``<out>/collection.json``. options: :class:`srcube.pipeline.options.RunOptions` of every cell's run
    (``mode: append`` grows every cell; ``gpu``: each cell's task on a GPU worker, one at a time per GPU).
    max_cells: cells in flight (on Kubernetes, as many as the cluster's most workers, one cell per worker).
    cell_retries: tries of a failed cell after the first."""
    try:
        return _area(area, dates, cell_km, catalog, collection, bands, model, scale, out, options, max_cells,
                     cell_retries)
    finally:
        flush_worker_telemetry()  # before a cluster made for this run closes with the workers' last logs


def _area(area: list[float] | str | dict[str, Any], dates: str | list[str], cell_km: float, catalog: str,
          collection: str | None, bands: list[str] | None, model: str, scale: int | None, out: str,
          options: RunOptions | None, max_cells: int, cell_retries: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    redact.install()
    logger = get_run_logger()
    check_limits(max_cells, cell_retries)
    given = dict(options.given() if isinstance(options, RunOptions) else options or {})
    gpu = given.pop("gpu", None)  # where each cell runs, not how (as run_area: not part of a cell's request)
    template, size = build_area_request(area, dates, cell_km, catalog, collection, bands, model, scale, out, given)
    resources = cell_resources(_flow_client(), gpu)
    logger.info("area %s, %s, cells of %d m -> %s, at most %d cells at once%s", redact.redact(str(area))[:200],
                template.dates, size, redact.redact(template.out), max_cells,
                f" (Dask resources {resources})" if resources else "")
    summary = run_cells(template, size, area, cell_km, PrefectCells(resources), max_cells, cell_retries)
    create_markdown_artifact(_markdown(summary), key="srcube-area", description=f"srcube area {template.out}")
    logger.info("area %s: %s in %.1f s", template.out,
                ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n), time.perf_counter() - t0)
    if summary.failed:
        raise RuntimeError(f"{len(summary.failed)} of {summary.cells} cells failed (the others are done; run the "
                           f"flow again to retry them): " + "; ".join(f"{r.cell}: {r.reason[:120]}"
                                                                      for r in summary.failed[:5]))
    return summary.to_json()

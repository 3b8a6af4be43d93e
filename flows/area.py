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

import datetime as dt
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed

from srcube.flows.region import reference_day
from srcube.flows.settings import DaskSettings
from srcube.pipeline import redact
from srcube.pipeline.area import AreaSummary, CellResult, prepare_area, run_cell, run_cells
from srcube.pipeline.cells import DEFAULT_CELL_KM
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import DateRange
from srcube.pipeline.request import RunRequest


@task(name="area-cell", task_run_name="cell {cell_id}")
def area_cell(template: RunRequest, cell_id: str) -> CellResult:
    """One cell's cube (made, resumed, grown or skipped): :func:`srcube.pipeline.area.run_cell`."""
    return run_cell(template, cell_id)


class PrefectCells:
    """Cells as ``area-cell`` task runs on the flow's task runner (the flow's Dask cluster)."""

    def submit(self, fn: Any, template: RunRequest, cell_id: str, *, key: str) -> Any:
        return area_cell.submit(template, cell_id)

    def wait(self, futures: Sequence[Any], timeout: float | None) -> set[Any]:
        try:
            for done in as_completed(list(futures), timeout=timeout):
                return {done}
        except TimeoutError:
            return set()
        return set()

    def cancel(self, futures: Sequence[Any]) -> None:
        pass  # a cell left running finishes (or stays resumable) on its worker

    def close(self, wait: bool) -> None:
        pass


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
    (``mode: append`` grows every cell)."""
    t0 = time.perf_counter()
    redact.install()
    logger = get_run_logger()
    given = options.given() if isinstance(options, RunOptions) else options
    template, size = build_area_request(area, dates, cell_km, catalog, collection, bands, model, scale, out, given)
    logger.info("area %s, %s, cells of %d m -> %s", redact.redact(str(area))[:200], template.dates, size,
                redact.redact(template.out))
    summary = run_cells(template, size, area, cell_km, PrefectCells(), max_cells, cell_retries)
    create_markdown_artifact(_markdown(summary), key="srcube-area", description=f"srcube area {template.out}")
    logger.info("area %s: %s in %.1f s", template.out,
                ", ".join(f"{n} {k}" for k, n in summary.counts.items() if n), time.perf_counter() - t0)
    if summary.failed:
        raise RuntimeError(f"{len(summary.failed)} of {summary.cells} cells failed (the others are done; run the "
                           f"flow again to retry them): " + "; ".join(f"{r.cell}: {r.reason[:120]}"
                                                                      for r in summary.failed[:5]))
    return summary.to_json()

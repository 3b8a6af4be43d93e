"""The ``srcube-area`` flow (flows/area.py) against a real Prefect server on 127.0.0.1 and a Dask cluster: an area of
four 0.9 km cells over the sample archive, at most two cells in flight; its rerun; a failing cell; bad parameters.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pystac
import pytest

from srcube.pipeline.area import cell_url
from srcube.pipeline.cells import Cell, cells_of
from srcube.pipeline.write.store import CubeStore
from tests.support.flowruns import flow_run_record

pytestmark = pytest.mark.integration
AREA = [4.472, 51.4065, 4.482, 51.413]  # four cells of 0.9 km over the sample archive
KM = 0.9
DATES = "2024-05-01/2024-05-31"
RUN: dict[str, Any] = {"catalog": "sample", "model": "bicubic", "scale": 4, "bands": ["B04", "B08"],
                       "options": {"min_clear": 0.0}}
CELLS = [c.id for c in cells_of(AREA, KM)]


@pytest.fixture(scope="module")
def cluster_address(prefect_api: str) -> Iterator[str]:
    """A LocalCluster started after the server (its workers inherit PREFECT_API_URL)."""
    from distributed import LocalCluster

    # one worker process with two threads: two cells at once (max_cells=2) for the price of one process start
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def _flow(address: str) -> Any:
    from srcube.flows.area import area_flow
    from srcube.flows.settings import DaskSettings

    return area_flow.with_options(task_runner=DaskSettings.from_env({"SRCUBE_DASK_ADDRESS": address}).task_runner())


def most_at_once(tasks: list[Any]) -> int:
    """The most task runs that were running at the same moment (from their start and end times)."""
    events = sorted([(t.start_time, 1) for t in tasks] + [(t.end_time, -1) for t in tasks],
                    key=lambda e: (e[0], e[1]))  # an end before a start at the same instant
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


@pytest.fixture(scope="module")
def area_run(prefect_api: str, cluster_address: str, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("area-flow") / "antwerp"
    state = _flow(cluster_address)(area=AREA, dates=DATES, cell_km=KM, out=str(out), max_cells=2, **RUN,
                                   return_state=True)
    return out, state


def test_the_flow_makes_every_cell_the_index_and_the_artifact(area_run):
    out, state = area_run
    assert len(CELLS) == 4
    assert state.is_completed(), state.message
    result = state.result()
    written = json.loads((out / "run-summary.json").read_text())
    assert result == {k: v for k, v in written.items() if k != "written"}  # the flow returns the summary
    assert result["cells"] == result["done"] == 4 and result["failed"] == 0 and not result["interrupted"]
    for cid in CELLS:
        assert CubeStore(cell_url(str(out), cid)).status() == "complete", cid
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    assert result["index"] == str(out / "collection.json")
    assert sorted(item.id for item in collection.get_items()) == CELLS

    record = flow_run_record(state.state_details.flow_run_id, until=lambda r: len(r.tasks) >= len(CELLS))
    run, tasks, artifacts = record.run, record.tasks, record.artifacts
    assert run.state.is_completed()
    assert sorted(t.name for t in tasks) == [f"cell {cid}" for cid in CELLS]  # one task run per cell
    assert all(t.state.is_completed() and t.run_count == 1 for t in tasks)
    assert most_at_once(tasks) == 2  # max_cells: two cells in flight at most, and two at some point
    (md,) = [a for a in artifacts if a.key == "srcube-area"]
    assert md.type == "markdown" and str(out) in md.data and "| done | 4 |" in md.data


def test_a_rerun_skips_every_cell(area_run, cluster_address):
    out, _ = area_run
    shard = next((out / f"{CELLS[0]}.zarr" / "reflectance").rglob("c/*"))
    before = shard.stat().st_mtime_ns
    again = _flow(cluster_address)(area=AREA, dates=DATES, cell_km=KM, out=str(out), max_cells=2, **RUN)
    assert again["skipped"] == 4 and again["done"] == 0 and again["failed"] == 0
    assert shard.stat().st_mtime_ns == before


def _square_in(cell_id: str, d: float = 0.0005) -> list[list[list[float]]]:
    """A small lon/lat square at the centre of a cell (a polygon that touches that cell only)."""
    x0, y0, x1, y1 = Cell.parse(cell_id).bbox().as_tuple()
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return [[[cx - d, cy - d], [cx + d, cy - d], [cx + d, cy + d], [cx - d, cy + d], [cx - d, cy - d]]]


def test_failing_cells_are_retried_or_recorded_and_the_others_go_on(prefect_api, cluster_address, tmp_path: Path):
    """Three cells (a GeoJSON MultiPolygon): one whose cube another writer holds locked until its first attempt has
    failed (StoreLockedError: tried again as a new task run, after a back-off spent waiting on the cell still
    computing: done), one
    whose place holds something that is not a cube (no retry changes that: recorded after one attempt) and one
    that just runs. The flow writes the index, the summary and the artifact, then fails naming the failed cell."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterName,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    locked, foreign, plain = CELLS[:3]
    area = {"type": "MultiPolygon", "coordinates": [_square_in(c) for c in (locked, foreign, plain)]}
    assert [c.id for c in cells_of(area, KM)] == sorted([locked, foreign, plain])
    (tmp_path / f"{foreign}.zarr").mkdir()
    (tmp_path / f"{foreign}.zarr" / "notes.txt").write_text("not a cube")
    lock = CubeStore(cell_url(str(tmp_path), locked)).lock(note="another writer")
    lock.acquire()

    def release_after_the_first_attempt() -> None:
        failed = TaskRunFilter(name=TaskRunFilterName(any_=[f"cell {locked}"]),
                               state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.FAILED])))
        deadline = time.monotonic() + 120
        try:
            with get_client(sync_client=True) as client:
                while not client.read_task_runs(task_run_filter=failed) and time.monotonic() < deadline:
                    time.sleep(0.1)
        finally:
            lock.release()

    # in this context: Prefect's settings (the test server's URL) are context variables
    releaser = threading.Thread(target=contextvars.copy_context().run, args=(release_after_the_first_attempt,),
                                daemon=True)
    releaser.start()
    try:
        # lock_wait 0: the locked cell fails at once instead of waiting for the lock (run_area's default for cells)
        params = {**RUN, "options": {**RUN["options"], "lock_wait": 0.0}}
        state = _flow(cluster_address)(area=area, dates=DATES, cell_km=KM, out=str(tmp_path), max_cells=3, **params,
                                       return_state=True)
    finally:
        releaser.join(timeout=130)
        lock.release()
    assert state.is_failed()
    with pytest.raises(RuntimeError, match=f"1 of 3 cells failed.*{foreign}.*NotACubeError"):
        state.result()
    summary = json.loads((tmp_path / "run-summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (2, 1) and summary["failed_cells"][0]["attempts"] == 1
    assert CubeStore(cell_url(str(tmp_path), locked)).status() == "complete"
    assert sorted(i.id for i in pystac.Collection.from_file(str(tmp_path / "collection.json")).get_items()) == sorted(
        [locked, plain])
    record = flow_run_record(state.state_details.flow_run_id, until=lambda r: len(r.tasks) >= 4)
    tasks, artifacts = record.tasks, record.artifacts
    runs = {(t.name.removeprefix("cell "), t.state.type.value) for t in tasks}
    assert len(tasks) == 4 and runs == {(locked, "FAILED"), (locked, "COMPLETED"), (foreign, "FAILED"),
                                        (plain, "COMPLETED")}
    (md,) = [a for a in artifacts if a.key == "srcube-area"]
    assert f"| {foreign} | failed | NotACubeError" in md.data and "| done | 2 |" in md.data


def test_bad_parameters_fail_the_flow_before_any_task(prefect_api, cluster_address, tmp_path: Path):
    from srcube.pipeline.errors import InvalidAreaError, InvalidDatesError, InvalidOptionError

    for kwargs, error in (({"area": {"type": "Point", "coordinates": [4.47, 51.41]}}, InvalidAreaError),
                          ({"dates": "next 3 days"}, InvalidDatesError),
                          ({"max_cells": 0}, InvalidOptionError),
                          ({"options": {"min_clear": 0.0, "gpu": True}}, InvalidOptionError)):  # no GPU worker
        params = {"area": AREA, "dates": DATES, "cell_km": KM, "out": str(tmp_path / "never"), **RUN, **kwargs}
        state = _flow(cluster_address)(**params, return_state=True)
        assert state.is_failed(), kwargs
        with pytest.raises(error):
            state.result()
        tasks = flow_run_record(state.state_details.flow_run_id).tasks
        assert tasks == [], kwargs
    assert not (tmp_path / "never").exists()


def test_relative_dates_end_on_the_scheduled_day(sample_dir):
    from srcube.flows.area import build_area_request

    template, size = build_area_request(AREA, "last 30 days", KM, "sample", None, ["B04", "B08"], "bicubic", 4,
                                        "areas/antwerp", None, today=dt.date(2024, 6, 30))
    assert template.dates == "2024-06-01/2024-06-30" and size == 900 and template.out == "areas/antwerp"

"""Areas at archive scale (pipeline/area.py, pipeline/mosaic.py, pipeline/write/areaindex.py): an area over the
sample archive cut into 0.9 km cells, one cube per cell, an index, reruns, failures, appends, a Dask cluster, an
object store, and ``open_area`` across cell borders equal to a run over the bbox."""

from __future__ import annotations

import json
import threading

import numpy as np
import pystac
import pytest
import xarray as xr

from srcube.pipeline import area as area_mod
from srcube.pipeline import errors, run_region
from srcube.pipeline.area import cell_url, run_area
from srcube.pipeline.cells import Cell, cells_of
from srcube.pipeline.mosaic import open_area
from srcube.pipeline.write import stac
from srcube.pipeline.write.store import CubeStore
from tests.support.helpers import S3_CREDS

pytestmark = pytest.mark.integration
AREA = (4.47, 51.405, 4.485, 51.415)  # 6 cells of 0.9 km over the sample archive
DATES = "2024-05-01/2024-06-30"
SHORT = "2024-06-12/2024-06-22"  # two clear days, for checks of how cells are run rather than of what they hold
KM = 0.9
RUN = {"catalog": "sample", "model": "bicubic", "scale": 4, "bands": ["B04", "B08"], "min_clear": 0.0}
#: a bbox across the borders of four of those cells
ACROSS = (4.472, 51.4065, 4.482, 51.413)


@pytest.fixture(scope="module")
def area_dir(sample_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("area") / "belgium"
    summary = run_area(AREA, DATES, cell_km=KM, out=str(out), max_cells=2, **RUN)
    return out, summary


def test_one_complete_cube_per_cell_and_a_self_contained_index(area_dir):
    out, summary = area_dir
    ids = [c.id for c in cells_of(AREA, KM)]
    assert summary.ok and summary.cells == 6 and summary.counts["done"] == 6, summary.to_json()
    for cid in ids:
        store = CubeStore(cell_url(str(out), cid))
        assert store.status() == "complete"
        cube = store.open()
        assert cube.attrs["cell"] == cid
        x0, y0, x1, y1 = Cell.parse(cid).bounds  # the cube is exactly the cell's square
        assert (float(cube.x[0]) - 1.25, float(cube.y[-1]) - 1.25) == (x0, y0)
        assert (float(cube.x[-1]) + 1.25, float(cube.y[0]) + 1.25) == (x1, y1)
    collection = pystac.Collection.from_file(str(out / "collection.json"))
    stac.validate(collection.to_dict(include_self_link=False))
    assert collection.extra_fields["srcube:cell_size_m"] == 900
    items = {it.id: it for it in collection.get_items()}
    assert sorted(items) == ids
    item = items[ids[0]]
    stac.validate(item.to_dict(include_self_link=False))
    assert item.properties["srcube:cell"] == ids[0] and item.collection_id == collection.id
    asset = item.assets["zarr"]
    ds = xr.open_dataset(asset.get_absolute_href(), **asset.extra_fields["xarray:open_kwargs"])
    assert ds.attrs["cell"] == ids[0]
    written = json.loads((out / "run-summary.json").read_text())
    assert written["done"] == 6 and written["failed"] == 0


def test_a_rerun_skips_the_finished_cells(area_dir):
    out, _ = area_dir
    shard = next((out / f"{cells_of(AREA, KM)[0].id}.zarr" / "reflectance").rglob("c/*"))
    before = shard.stat().st_mtime_ns
    again = run_area(AREA, DATES, cell_km=KM, out=str(out), max_cells=2, **RUN)
    assert again.counts["skipped"] == 6 and again.counts["done"] == 0
    assert shard.stat().st_mtime_ns == before


def test_open_area_across_cell_borders_equals_one_run_over_the_bbox(area_dir, tmp_path):
    out, _ = area_dir
    mosaic = open_area(str(out), ACROSS)
    assert len(mosaic.attrs["cells"]) == 4
    single = run_region(ACROSS, DATES, out=str(tmp_path / "one.zarr"), **RUN)
    assert mosaic.reflectance.dtype == np.float32
    np.testing.assert_array_equal(mosaic.x.values, single.x.values)
    np.testing.assert_array_equal(mosaic.y.values, single.y.values)
    np.testing.assert_array_equal(mosaic.time.values, single.time.values)
    np.testing.assert_array_equal(mosaic.reflectance.values, single.reflectance.values)  # 0 difference
    np.testing.assert_array_equal(mosaic.clear.values, single.clear.values)
    # only what is asked is read: the mosaic of one date is a few blocks of the cells' chunks
    assert open_area(str(out / "collection.json"), ACROSS, "2024-06-12").sizes["time"] == 1


def test_open_area_in_another_zone_is_within_the_resampling_tolerance(area_dir, tmp_path):
    out, _ = area_dir
    single = run_region(ACROSS, DATES, out=str(tmp_path / "one.zarr"), **RUN)
    moved = open_area(str(out), ACROSS, crs=32632)  # every cell reprojected (nearest) into zone 32
    assert moved.odc.geobox.crs.epsg == 32632
    back = moved.reflectance.odc.reproject(single.odc.geobox, resampling="nearest")
    a, b = back.values, single.reflectance.values
    both = np.isfinite(a) & np.isfinite(b)
    assert both.mean() > 0.9
    # nearest resampling twice moves each value by at most a pixel: differences are those of neighbouring pixels
    neighbours = np.abs(np.diff(b, axis=-1))
    assert np.median(np.abs(a - b)[both]) <= np.nanmedian(neighbours) + 1e-6


def test_a_failing_cell_is_retried_then_recorded_and_the_others_go_on(sample_url, tmp_path, monkeypatch):
    cells = [c.id for c in cells_of(AREA, KM)]
    flaky, broken = cells[1], cells[2]
    calls: dict[str, int] = {}
    lock = threading.Lock()
    real = area_mod.run_cell

    def faulty(template, cell_id):  # the test's fault injection: the product has no such parameter
        with lock:
            calls[cell_id] = calls.get(cell_id, 0) + 1
        if cell_id == flaky and calls[cell_id] == 1:
            raise ConnectionError("the object store dropped the connection")
        if cell_id == broken:
            raise OSError("the object store answers 503")
        return real(template, cell_id)

    monkeypatch.setattr(area_mod, "run_cell", faulty)
    monkeypatch.setattr(area_mod, "RETRY_S", 0.05)
    summary = run_area(AREA, SHORT, cell_km=KM, out=str(tmp_path / "a"), max_cells=3, cell_retries=1, **RUN)
    assert summary.counts == {"done": 5, "skipped": 0, "empty": 0, "failed": 1}
    assert calls[flaky] == 2 and calls[broken] == 2
    (failed,) = summary.failed
    assert failed.cell == broken and failed.attempts == 2 and "503" in failed.reason
    assert not summary.ok
    # an error of the request itself is not retried: a foreign folder where a cell's cube goes
    (tmp_path / "b" / f"{cells[0]}.zarr").mkdir(parents=True)
    (tmp_path / "b" / f"{cells[0]}.zarr" / "notes.txt").write_text("not a cube")
    monkeypatch.setattr(area_mod, "run_cell", real)
    second = run_area(AREA, SHORT, cell_km=KM, out=str(tmp_path / "b"), max_cells=2, **RUN)
    assert [r.cell for r in second.failed] == [cells[0]] and second.failed[0].attempts == 1
    assert "NotACubeError" in second.failed[0].reason and second.counts["done"] == 5


def test_append_grows_every_cell_to_the_whole_range(sample_url, tmp_path):
    small = (4.47, 51.405, 4.4775, 51.408)  # 2 cells
    grown, whole = str(tmp_path / "grown"), str(tmp_path / "whole")
    run_area(small, "2024-05-01/2024-05-31", cell_km=KM, out=grown, mode="append", **RUN)
    summary = run_area(small, DATES, cell_km=KM, out=grown, mode="append", **RUN)
    assert summary.counts["done"] == 2
    run_area(small, DATES, cell_km=KM, out=whole, **RUN)
    for cell in cells_of(small, KM):
        a, b = CubeStore(cell_url(grown, cell)).open(), CubeStore(cell_url(whole, cell)).open()
        assert a.sizes["time"] == b.sizes["time"] == 6 and len(a.attrs["appended"]) == 1
        np.testing.assert_array_equal(a.reflectance.values, b.reflectance.values)
        np.testing.assert_array_equal(a.clear_count.values, b.clear_count.values)


def test_cells_as_tasks_of_a_dask_cluster(sample_url, dask_client, tmp_path):
    small = (4.47, 51.405, 4.4775, 51.408)
    summary = run_area(small, "2024-06-12", cell_km=KM, out=str(tmp_path / "a"), client=dask_client, **RUN)
    assert summary.counts["done"] == 2 and summary.ok


def test_an_area_in_an_object_store(sample_url, s3_endpoint, tmp_path):
    so = {"key": S3_CREDS["AWS_ACCESS_KEY_ID"], "secret": S3_CREDS["AWS_SECRET_ACCESS_KEY"],
          "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": S3_CREDS["AWS_REGION"]}}
    small = (4.47, 51.405, 4.4775, 51.408)
    summary = run_area(small, "2024-06-12", cell_km=KM, out="s3://cubes/areas/one", storage_options=so, **RUN)
    assert summary.ok and summary.index == "s3://cubes/areas/one/collection.json"
    local = run_area(small, "2024-06-12", cell_km=KM, out=str(tmp_path / "one"), **RUN)
    assert local.ok
    bbox = (4.471, 51.4055, 4.477, 51.4075)
    a = open_area("s3://cubes/areas/one", bbox, storage_options=so)
    b = open_area(str(tmp_path / "one"), bbox)
    np.testing.assert_array_equal(a.reflectance.values, b.reflectance.values)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"cell_km": 0.1}, errors.InvalidAreaError, "cell_km"),
    ({"max_cells": 0}, errors.InvalidOptionError, "max_cells"),
    ({"cell_retries": -1}, errors.InvalidOptionError, "cell_retries"),
    ({"processes": True}, errors.InvalidOptionError, "processes"),
    ({"bands": ["B99"]}, errors.UnknownBandError, "B99"),
    ({"model": "nope"}, errors.UnknownModelError, "nope"),
    ({"area": (4.0, 84.5, 5.0, 85.0)}, errors.InvalidBBoxError, "UTM"),
    ({"area": {"type": "Point", "coordinates": [4.5, 51.4]}}, errors.InvalidAreaError, "Polygon"),
    ({"client": "not an address"}, errors.InvalidOptionError, "address"),
])
def test_bad_input_fails_before_any_work(kwargs, error, match, tmp_path, monkeypatch):
    def no_cell(*a, **k):
        raise AssertionError("a cell ran")

    monkeypatch.setattr(area_mod, "run_cell", no_cell)
    args = {"area": AREA, **RUN, **kwargs}
    with pytest.raises(error, match=match):
        run_area(args.pop("area"), DATES, cell_km=args.pop("cell_km", KM), out=str(tmp_path / "a"), **args)
    assert not (tmp_path / "a").exists()


def test_ctrl_c_stops_submitting_and_lets_the_cells_in_flight_finish(sample_url, tmp_path, monkeypatch):
    real_wait = area_mod.Threads.wait
    state = {"n": 0}

    def wait(self, futures, timeout):
        state["n"] += 1
        if state["n"] == 1:
            raise KeyboardInterrupt
        return real_wait(self, futures, timeout)

    monkeypatch.setattr(area_mod.Threads, "wait", wait)
    summary = run_area(AREA, DATES, cell_km=KM, out=str(tmp_path / "a"), max_cells=2, **RUN)
    assert summary.interrupted and summary.counts["done"] == 2 and summary.finished == 2, json.dumps(summary.to_json())
    again = run_area(AREA, DATES, cell_km=KM, out=str(tmp_path / "a"), max_cells=2, **RUN)
    assert again.counts == {"done": 4, "skipped": 2, "empty": 0, "failed": 0}


def test_a_cell_computed_a_few_locations_at_a_time_equals_one_computed_whole(sample_url, tmp_path, monkeypatch):
    small = (4.47, 51.405, 4.4775, 51.408)
    monkeypatch.setattr(area_mod, "CELL_BATCH", 10**9)
    run_area(small, DATES, cell_km=KM, out=str(tmp_path / "whole"), **RUN)
    monkeypatch.setattr(area_mod, "CELL_BATCH", 2)  # 6 dates x 1 tile: three graphs a cell
    run_area(small, DATES, cell_km=KM, out=str(tmp_path / "parts"), **RUN)
    for cell in cells_of(small, KM):
        a = CubeStore(cell_url(str(tmp_path / "whole"), cell)).open()
        b = CubeStore(cell_url(str(tmp_path / "parts"), cell)).open()
        assert a.attrs["last_run"]["chunk_writes"] == b.attrs["last_run"]["chunk_writes"]
        for name in ("reflectance", "clear", "clear_count"):
            np.testing.assert_array_equal(a[name].values, b[name].values)


def test_open_area_over_cells_that_kept_other_dates(sample_url, tmp_path):
    out = str(tmp_path / "a")
    summary = run_area(AREA, DATES, cell_km=KM, out=out, **{**RUN, "min_clear": 0.5})  # cells drop their own frames
    times = {c.id: CubeStore(cell_url(out, c)).open().sizes["time"] for c in cells_of(AREA, KM)}
    assert summary.ok and len(set(times.values())) > 1, times
    mosaic = open_area(out, AREA)
    assert mosaic.sizes["time"] == max(times.values())
    for cell in cells_of(AREA, KM):
        cube = CubeStore(cell_url(out, cell)).open()
        x, y = np.intersect1d(cube.x, mosaic.x), np.intersect1d(cube.y, mosaic.y)
        part = mosaic.reflectance.sel(x=x, y=y)
        kept = part.sel(time=cube.time)
        np.testing.assert_array_equal(kept.values, cube.reflectance.sel(x=x, y=y).values)
        others = part.drop_sel(time=cube.time)
        assert others.isnull().all()  # a date the cell dropped is no data there, not another cell's

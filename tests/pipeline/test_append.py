"""Growing cubes: ``mode="append"`` adds a request's new dates to a complete cube; the grown cube equals one
made over the whole range at once, an interrupted append finishes on the next call, a second writer and a
request for another kind of cube are refused before any pixel is computed."""

from __future__ import annotations

import json
import re

import numpy as np
import pystac
import pytest
import xarray as xr
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import append, run_region
from srcube.pipeline.errors import CubeMismatchError, IncompleteCubeError, StoreLockedError
from srcube.pipeline.testing import sample
from srcube.pipeline.write.store import CubeStore, open_cube

pytestmark = pytest.mark.integration

KW = {"model": "bicubic", "bands": ["B04", "B08"]}
MAY, LATER, ALL = "2024-05-01/2024-05-31", "2024-05-15/2024-06-30", "2024-05-01/2024-06-30"


@pytest.fixture(scope="module")
def whole(sample_url, tmp_path_factory):
    """The cube of the whole range, made at once."""
    return run_region(sample.DEFAULT_BBOX, ALL, out=str(tmp_path_factory.mktemp("whole") / "all.zarr"), **KW)


def _same(grown: xr.Dataset, whole: xr.Dataset) -> None:
    np.testing.assert_array_equal(grown.time.values, whole.time.values)
    for name in ("reflectance", "clear", "clear_count", "clear_fraction"):
        np.testing.assert_array_equal(grown[name].values, whole[name].values, err_msg=name)
    # the overviews grew with it (their new time steps only), to those of the whole range
    assert grown.attrs["overviews"] == whole.attrs["overviews"]
    for f in whole.attrs["overviews"]["factors"]:
        levels = [xr.open_zarr(ds.encoding["source"], group=f"overviews/{f}") for ds in (grown, whole)]
        np.testing.assert_array_equal(levels[0].time.values, levels[1].time.values)
        np.testing.assert_array_equal(levels[0].reflectance.values, levels[1].reflectance.values)


def _time_line(output: str) -> dict[str, float]:
    """The step timings of ``srcube run``'s ``time:`` line."""
    found = re.search(r"time: [\d.]+ s \((\{.*?\})\)", " ".join(output.split()))
    assert found, output
    return dict(json.loads(found.group(1)))


def test_append_grows_one_cube_equal_to_the_whole_range(whole, tmp_path):
    out = str(tmp_path / "antwerp.zarr")
    first = run_region(sample.DEFAULT_BBOX, MAY, out=out, mode="append", **KW)  # no cube yet: a new one
    assert first.sizes["time"] == 2
    args = ["run", "--bbox", ",".join(map(str, sample.DEFAULT_BBOX)), "--dates", LATER, "--out", out, "--model",
            "bicubic", "--bands", "B04,B08", "--mode", "append"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # overlaps May: skipped
    assert res.exit_code == 0, res.output
    grown = open_cube(out)
    _same(grown, whole)
    assert grown.attrs["dates"] == ALL and grown.attrs["complete"] is True
    assert grown.attrs["appended"][0]["time_steps"] == 2 and grown.attrs["request_hash"] == first.attrs["request_hash"]
    # this append's timings and what it did, in the cube and on the `time:` line (not the first run's)
    assert {"search+assemble", "super-resolve+write", "append"} <= set(grown.attrs["timings_s"])
    assert grown.attrs["last_run"]["mode"] == "append" and grown.attrs["last_run"]["time_steps"] == 2
    assert {"append", "template"} <= set(_time_line(res.output))
    frames = json.loads(grown.attrs["frames"])
    assert [f["time"] for f in frames] == sorted({f["time"] for f in frames})  # every frame once, in order
    assert sorted(grown.attrs["stac_item_ids"]) == sorted(whole.attrs["stac_item_ids"])
    item = next(pystac.Collection.from_file(f"{out}.stac/collection.json").get_items())
    assert item.properties["end_datetime"].startswith(str(whole.time.values[-1])[:19])
    assert not CubeStore(f"{out}.append").fs.exists(f"{out}.append")  # the staging cube is gone
    res = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # nothing new
    again = open_cube(out)
    assert again.sizes["time"] == grown.sizes["time"] and len(again.attrs["appended"]) == 1
    assert "clearance" in _time_line(res.output) and "append" not in _time_line(res.output)  # this run's


def test_another_append_onto_one_cut_short_finishes_that_one_then_adds_its_own(whole, tmp_path, monkeypatch):
    """Every step of one append stopped and run again: tests/pipeline/test_append_drill.py. Here the next append
    is another request: the append cut short is finished first (refusing the cube's own request meanwhile)."""
    out = str(tmp_path / "cut.zarr")
    run_region(sample.DEFAULT_BBOX, MAY, out=out, mode="append", **KW)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed writing the overviews (test)")

    monkeypatch.setattr(append, "_extend_overviews", killed)
    with pytest.raises(KeyboardInterrupt):
        run_region(sample.DEFAULT_BBOX, "2024-05-15/2024-06-15", out=out, mode="append", **KW)  # adds 06-12
    monkeypatch.undo()
    assert CubeStore(out).status() == "appending" and CubeStore(out).attrs()["append_base"] == 2
    with pytest.raises(IncompleteCubeError, match=r"run that append again \(mode='append', CLI: --mode append\)"):
        CubeStore(out).open()
    with pytest.raises(IncompleteCubeError, match="run that append again"):
        run_region(sample.DEFAULT_BBOX, MAY, out=out, **KW)  # the cube's own request, not an append
    grown = run_region(sample.DEFAULT_BBOX, LATER, out=out, mode="append", **KW)  # adds 06-22 after finishing
    _same(grown, whole)
    assert [a["time_steps"] for a in grown.attrs["appended"]] == [1, 1]


def test_another_kind_of_cube_a_second_writer_and_earlier_dates_are_refused(tmp_path, sample_url, caplog):
    out = str(tmp_path / "c.zarr")
    run_region(sample.DEFAULT_BBOX, "2024-06-01/2024-06-30", out=out, mode="append", **KW)
    with pytest.raises(CubeMismatchError, match=r"bands: cube \['B04', 'B08'\], request \['B04'\]"):
        run_region(sample.DEFAULT_BBOX, ALL, out=out, mode="append", model="bicubic", bands=["B04"])
    with pytest.raises(CubeMismatchError, match="model: cube 'bicubic', request 'nearest'"):
        run_region(sample.DEFAULT_BBOX, ALL, out=out, mode="append", model="nearest", bands=["B04", "B08"])
    with pytest.raises(CubeMismatchError, match=r"stored dtype \(option dtype\): cube float32, request int16"):
        run_region(sample.DEFAULT_BBOX, ALL, out=out, mode="append", dtype="int16", **KW)  # both read as float32
    with caplog.at_level("WARNING", logger="srcube.pipeline.append"):
        same = run_region(sample.DEFAULT_BBOX, MAY, out=out, mode="append", **KW)  # only earlier dates: none added
    assert same.sizes["time"] == 2 and "before the cube's last time step" in caplog.text
    lock = CubeStore(out).lock(note="another run")
    lock.acquire()
    try:
        with pytest.raises(StoreLockedError):
            run_region(sample.DEFAULT_BBOX, ALL, out=out, mode="append", **KW)
    finally:
        lock.release()
    assert not (tmp_path / "c.zarr.append").exists()  # nothing was computed for the refused requests

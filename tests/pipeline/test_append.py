"""Growing cubes: ``mode="append"`` adds a request's new dates to a complete cube; the grown cube equals one
made over the whole range at once, an interrupted append finishes on the next call, a second writer and a
request for another kind of cube are refused before any pixel is computed."""

from __future__ import annotations

import json

import numpy as np
import pystac
import pytest
import xarray as xr

from srcube.pipeline import run_region
from srcube.pipeline.errors import CubeMismatchError, IncompleteCubeError, StoreLockedError
from srcube.pipeline.testing import sample
from srcube.pipeline.write.store import CubeStore

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


def test_append_grows_one_cube_equal_to_the_whole_range(whole, tmp_path):
    out = str(tmp_path / "antwerp.zarr")
    first = run_region(sample.DEFAULT_BBOX, MAY, out=out, mode="append", **KW)  # no cube yet: a new one
    assert first.sizes["time"] == 2
    grown = run_region(sample.DEFAULT_BBOX, LATER, out=out, mode="append", **KW)  # overlaps May: skipped
    _same(grown, whole)
    assert grown.attrs["dates"] == ALL and grown.attrs["complete"] is True
    assert grown.attrs["appended"][0]["time_steps"] == 2 and grown.attrs["request_hash"] == first.attrs["request_hash"]
    frames = json.loads(grown.attrs["frames"])
    assert [f["time"] for f in frames] == sorted({f["time"] for f in frames})  # every frame once, in order
    assert sorted(grown.attrs["stac_item_ids"]) == sorted(whole.attrs["stac_item_ids"])
    item = next(pystac.Collection.from_file(f"{out}.stac/collection.json").get_items())
    assert item.properties["end_datetime"].startswith(str(whole.time.values[-1])[:19])
    assert not CubeStore(f"{out}.append").fs.exists(f"{out}.append")  # the staging cube is gone
    again = run_region(sample.DEFAULT_BBOX, LATER, out=out, mode="append", **KW)  # nothing new
    assert again.sizes["time"] == grown.sizes["time"] and len(again.attrs["appended"]) == 1


def test_an_interrupted_append_finishes_on_the_next_call(whole, tmp_path, monkeypatch):
    out = str(tmp_path / "cut.zarr")
    run_region(sample.DEFAULT_BBOX, MAY, out=out, mode="append", **KW)
    real = xr.Dataset.to_zarr

    def cut_short(self, store, *args, **kwargs):  # appends the reflectance only, then the process "dies"
        if kwargs.get("append_dim") == "time":
            real(self[["reflectance"]], store, *args, **kwargs)
            raise KeyboardInterrupt("killed mid-append (test)")
        return real(self, store, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_zarr", cut_short)
    with pytest.raises(KeyboardInterrupt):
        run_region(sample.DEFAULT_BBOX, LATER, out=out, mode="append", **KW)
    monkeypatch.undo()
    with pytest.raises(IncompleteCubeError):  # it never looks complete meanwhile
        CubeStore(out).open()
    assert CubeStore(out).attrs()["appending"].endswith(".append")
    _same(run_region(sample.DEFAULT_BBOX, LATER, out=out, mode="append", **KW), whole)


def test_another_kind_of_cube_a_second_writer_and_earlier_dates_are_refused(tmp_path, sample_url, caplog):
    out = str(tmp_path / "c.zarr")
    run_region(sample.DEFAULT_BBOX, "2024-06-01/2024-06-30", out=out, mode="append", **KW)
    with pytest.raises(CubeMismatchError, match=r"bands: cube \['B04', 'B08'\], request \['B04'\]"):
        run_region(sample.DEFAULT_BBOX, ALL, out=out, mode="append", model="bicubic", bands=["B04"])
    with pytest.raises(CubeMismatchError, match="model: cube 'bicubic', request 'nearest'"):
        run_region(sample.DEFAULT_BBOX, ALL, out=out, mode="append", model="nearest", bands=["B04", "B08"])
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

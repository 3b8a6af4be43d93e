"""The GeoZarr conventions on cubes (pipeline/write/geozarr.py): validated by geozarr-toolkit (its pydantic models of
the multiscales, geo-proj and spatial conventions, run in ``.venv-geozarr``: it needs Python >= 3.12), and checked to
agree with what the cube already says: its CF ``spatial_ref``, its coordinates, each overview level's grid and the
STAC Item's ``proj:``. A cube made, then appended to, keeps them right."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from srcube.pipeline import run_region
from srcube.pipeline.write import geozarr
from srcube.pipeline.write.overviews import write_overviews
from srcube.pipeline.write.store import CubeStore, open_cube
from tests.support.helpers import REPO

pytestmark = pytest.mark.integration

VENV = REPO / ".venv-geozarr" / "bin" / "python"
CHECK = REPO / "tests" / "support" / "geozarr_check.py"
CORNER = [4.465, 51.401, 4.487, 51.414]
RUN: dict[str, Any] = {"model": "bicubic", "tile": 64, "bands": ["B04", "B08"]}


def _toolkit(store: Path, groups: list[str]) -> dict[str, Any]:
    """geozarr-toolkit's verdict on the root and ``groups`` of the zarr store at ``store``."""
    if not VENV.exists():
        pytest.skip(f"geozarr-toolkit is not installed in {VENV.parent.parent}: run scripts/geozarr.sh "
                    "(it needs Python 3.12)")
    done = subprocess.run([str(VENV), str(CHECK), str(store), *groups], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _valid(report: dict[str, Any], node: str, conventions: set[str]) -> None:
    got = report[node]
    assert set(got["detected"]) == conventions, got
    assert all(errors == [] for errors in got["errors"].values()), got["errors"]
    assert got.get("structure", []) == [], got["structure"]


def _attrs(store: Path, group: str = "") -> dict[str, Any]:
    return json.loads((store / group / "zarr.json").read_text())["attributes"]


def _agree(store: Path) -> list[str]:
    """The conventions of the cube at ``store`` say what its CF georeferencing and coordinates say, at every level;
    returns the levels' groups."""
    root = _attrs(store)
    cube = xr.open_zarr(store, consolidated=False)
    gbox = cube.odc.geobox
    assert root["proj:code"] == f"EPSG:{gbox.crs.epsg}" == cube.attrs["crs"]
    assert root["spatial:transform"] == pytest.approx(list(gbox.affine)[:6])
    # CF / GDAL's GeoTransform on spatial_ref: (c, a, b, f, d, e)
    c, a, b, f, d, e = (float(v) for v in cube.spatial_ref.attrs["GeoTransform"].split())
    assert root["spatial:transform"] == pytest.approx([a, b, c, d, e, f])
    assert root["spatial:shape"] == [cube.sizes["y"], cube.sizes["x"]]
    assert root["spatial:bbox"] == pytest.approx([c, f + e * cube.sizes["y"], c + a * cube.sizes["x"], f])
    assert cube.reflectance.attrs["grid_mapping"] == "spatial_ref"  # the CF attributes stay
    layout = root["multiscales"]["layout"]
    assert layout[0]["asset"] == "reflectance" and "derived_from" not in layout[0]
    levels = [f"{cube.attrs['overviews']['group']}/{f}" for f in cube.attrs["overviews"]["factors"]]
    assert [entry["asset"] for entry in layout[1:]] == [f"{g}/reflectance" for g in levels]
    before = 1
    for entry, group, factor in zip(layout[1:], levels, cube.attrs["overviews"]["factors"], strict=True):
        level = xr.open_zarr(store, group=group, consolidated=False)
        lbox = level.odc.geobox
        own = _attrs(store, group)
        assert own["proj:code"] == root["proj:code"]
        assert own["spatial:transform"] == pytest.approx(list(lbox.affine)[:6]) == entry["spatial:transform"]
        assert own["spatial:shape"] == [level.sizes["y"], level.sizes["x"]] == entry["spatial:shape"]
        assert entry["transform"]["scale"] == [factor / before] * 2 and entry["resampling_method"] == "average"
        assert lbox.resolution.x == pytest.approx(gbox.resolution.x * factor)
        before = factor
    return levels


@pytest.fixture(scope="module")
def cube_dir(sample_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cube of one date over a corner of the sample region."""
    out = tmp_path_factory.mktemp("geozarr") / "one.zarr"
    run_region(CORNER, "2024-06-12/2024-06-12", catalog=sample_url, out=str(out), **RUN)
    return out


def test_a_cube_carries_valid_geozarr_conventions_that_agree_with_its_georeferencing(cube_dir):
    levels = _agree(cube_dir)
    report = _toolkit(cube_dir, levels)
    _valid(report, "/", {"spatial", "proj", "multiscales"})
    for group in levels:
        _valid(report, group, {"spatial", "proj"})
    # the STAC Item says the same proj:
    item_path = next(p for p in Path(f"{cube_dir}.stac").glob("*.json") if p.name != "collection.json")
    props = json.loads(item_path.read_text())["properties"]
    root = _attrs(cube_dir)
    assert props["proj:code"] == root["proj:code"]
    assert props["proj:transform"] == pytest.approx(root["spatial:transform"])
    assert props["proj:shape"] == root["spatial:shape"]
    # and the consolidated metadata, which readers open, holds them
    consolidated = json.loads((cube_dir / "zarr.json").read_text())["consolidated_metadata"]["metadata"]
    assert consolidated[levels[0]]["attributes"]["proj:code"] == root["proj:code"]


def test_an_appended_cube_keeps_them_right(cube_dir, sample_url, tmp_path):
    out = tmp_path / "grown.zarr"
    shutil.copytree(cube_dir, out)
    before = _attrs(out)
    run_region(CORNER, "2024-06-12/2024-06-22", catalog=sample_url, out=str(out), mode="append", **RUN)
    grown = open_cube(str(out))
    assert grown.sizes["time"] > 1
    after = _attrs(out)
    for key in ("multiscales", "spatial:transform", "spatial:shape", "proj:code", "zarr_conventions"):
        assert after[key] == before[key], key
    levels = _agree(out)
    report = _toolkit(out, levels)
    _valid(report, "/", {"spatial", "proj", "multiscales"})


def test_a_cube_finished_by_a_second_run_has_them(sample_url, tmp_path, monkeypatch):
    """The first run dies after the overviews, before the cube says complete: the same request finishes it, with
    the conventions (written again with the overviews, before the metadata is consolidated)."""
    from srcube.pipeline.write import stac

    class Crash(BaseException):
        pass

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("killed before the STAC Item")

    out = tmp_path / "resumed.zarr"
    with monkeypatch.context() as mp:
        mp.setattr(stac, "write_stac", crash)
        with pytest.raises(Crash):
            run_region(CORNER, "2024-06-12/2024-06-12", catalog=sample_url, out=str(out), **RUN)
    assert CubeStore(str(out)).status() == "incomplete"
    run_region(CORNER, "2024-06-12/2024-06-12", catalog=sample_url, out=str(out), **RUN)
    _valid(_toolkit(out, _agree(out)), "/", {"spatial", "proj", "multiscales"})


def test_every_level_of_a_deeper_pyramid_derives_from_the_one_before(tmp_path):
    """A frame large enough for two overview levels (x4, then x8 from x4): the chain of ``derived_from``, scales
    4 then 2, each level's own grid, validated."""
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_zeros

    gbox = GeoBox.from_bbox((600000, 5690000, 605120, 5695250), "EPSG:32631", resolution=2.5)  # 2100 x 2048
    refl = xr_zeros(gbox, dtype="float32").expand_dims(time=[np.datetime64("2024-06-12", "ns")], band=["B04"])
    refl = refl.transpose("time", "band", "y", "x")
    ds = refl.to_dataset(name="reflectance")
    ds.attrs["crs"] = "EPSG:32631"
    out = tmp_path / "deep.zarr"
    # written from memory (no dask graph: a default distributed client may be about, and would be sent the array)
    ds["reflectance"].encoding["chunks"] = (1, 1, 1024, 1024)  # beside odc-geo's grid_mapping, which it keeps
    ds.to_zarr(out, zarr_format=3, consolidated=False)
    attr = write_overviews(CubeStore(str(out)))
    assert attr["factors"] == [4, 8]
    levels = _agree(out)
    layout = _attrs(out)["multiscales"]["layout"]
    assert [e.get("derived_from") for e in layout] == [None, "reflectance", "overviews/4/reflectance"]
    assert [e["transform"]["scale"] for e in layout] == [[1.0, 1.0], [4.0, 4.0], [2.0, 2.0]]
    _valid(_toolkit(out, levels), "/", {"spatial", "proj", "multiscales"})


def test_a_crs_without_an_epsg_code_is_given_as_wkt2():
    from odc.geo.geobox import GeoBox
    from odc.geo.xr import xr_zeros
    from pyproj import CRS

    custom = CRS.from_proj4("+proj=laea +lat_0=52 +lon_0=10 +x_0=4321000 +y_0=3210000 +ellps=sphere +units=m")
    grid = xr_zeros(GeoBox.from_bbox((0, 0, 100, 100), custom.to_wkt(), resolution=10), dtype="float32")
    attrs = geozarr.crs_attrs(grid)
    assert set(attrs) == {"proj:wkt2"} and CRS.from_wkt(attrs["proj:wkt2"]) == custom

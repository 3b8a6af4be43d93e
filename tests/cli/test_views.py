"""Looking at a cube without Python: ``srcube export --cog`` (one COG per date that rasterio/GDAL open with the
cube's CRS and transform) and ``srcube quicklook`` (a PNG of any date)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rasterio
from PIL import Image
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import run_region
from srcube.pipeline.testing import sample

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def cube(sample_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("views") / "antwerp.zarr"
    ds = run_region(sample.DEFAULT_BBOX, sample.DEFAULT_DATES, out=str(out), model="bicubic",
                    bands=["B02", "B03", "B04"])
    return out, ds


def test_export_writes_one_cog_per_date_that_rasterio_reads_on_the_cube_grid(cube, tmp_path):
    out, ds = cube
    result = runner.invoke(app, ["export", str(out), "--cog", str(tmp_path / "cogs")])
    assert result.exit_code == 0, result.output
    paths = sorted((tmp_path / "cogs").glob("*.tif"))
    assert [p.name for p in paths] == [f"antwerp_{str(t)[:10]}.tif" for t in ds.time.values]
    gbox = ds.odc.geobox
    with rasterio.open(paths[1]) as src:
        assert src.crs.to_epsg() == gbox.crs.epsg and src.transform.almost_equals(gbox.affine)
        assert (src.height, src.width, src.count) == (ds.sizes["y"], ds.sizes["x"], 3)
        assert list(src.descriptions) == ["B02", "B03", "B04"]
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG" and src.overviews(1)
        np.testing.assert_array_equal(src.read(), ds.reflectance.isel(time=1).values)
    assert not list((tmp_path / "cogs").glob("*.staging.tif"))


def test_export_of_one_date_and_a_date_the_cube_lacks(cube, tmp_path):
    out, ds = cube
    day = str(ds.time.values[0])[:10]
    ok = runner.invoke(app, ["export", str(out), "--cog", str(tmp_path), "--date", day])
    assert ok.exit_code == 0 and [p.name for p in tmp_path.glob("*.tif")] == [f"antwerp_{day}.tif"]
    bad = runner.invoke(app, ["export", str(out), "--cog", str(tmp_path), "--date", "1999-01-01"])
    assert bad.exit_code == 2 and "no date 1999-01-01" in bad.output and day in bad.output


def test_quicklook_of_any_date(cube, tmp_path):
    out, ds = cube
    pngs = []
    for t in (0, -1):
        day = str(ds.time.values[t])[:10]
        path = tmp_path / f"{day}.png"
        result = runner.invoke(app, ["quicklook", str(out), str(path), "--date", day, "--size", "256"])
        assert result.exit_code == 0, result.output
        img = Image.open(io.BytesIO(path.read_bytes()))
        assert img.mode == "RGB" and max(img.size) <= 256
        pngs.append(np.asarray(img))
    assert not np.array_equal(pngs[0], pngs[1])  # two dates, two pictures
    missing = runner.invoke(app, ["quicklook", str(tmp_path / "nothing.zarr"), str(tmp_path / "x.png")])
    assert missing.exit_code == 2 and "no complete srcube cube" in missing.output


def test_gdal_zarr_driver_reads_the_cube_where_it_knows_zarr_v3(cube):
    out, ds = cube
    with rasterio.Env() as env:
        if "Zarr" not in env.drivers():
            pytest.skip(f"GDAL {rasterio.__gdal_version__} has no Zarr driver")
    try:
        src = rasterio.open(f'ZARR:"{out}":/reflectance')
    except rasterio.errors.RasterioIOError as exc:
        if "Unsupported codec" not in str(exc):
            raise
        pytest.skip(f"GDAL {rasterio.__gdal_version__}'s Zarr driver predates the final zarr v3 codecs ({exc})")
    with src:
        assert src.crs.to_epsg() == ds.odc.geobox.crs.epsg
        assert src.transform.almost_equals(ds.odc.geobox.affine)

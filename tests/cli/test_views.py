"""Looking at a cube without Python: ``srcube export --cog`` (one COG per date that rasterio/GDAL open with the
cube's CRS and transform), the overviews inside the cube, and ``srcube quicklook`` (a PNG of any date, from
the overviews)."""

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
from srcube.pipeline.write.overviews import factors
from srcube.pipeline.write.quicklook import quicklook_png

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
    ok = runner.invoke(app, ["export", str(out), "--cog", str(tmp_path), "--date", day], env={"COLUMNS": "40"})
    assert ok.exit_code == 0 and [p.name for p in tmp_path.glob("*.tif")] == [f"antwerp_{day}.tif"]
    assert ok.stdout == f"{tmp_path / f'antwerp_{day}.tif'}\n"  # one path a line, whole, however narrow the terminal
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


def test_the_cube_holds_overviews_of_every_date_on_their_own_grids(cube):
    import xarray as xr

    out, ds = cube
    info = ds.attrs["overviews"]
    assert info["factors"] == factors(ds.sizes["y"], ds.sizes["x"]) == [4] and info["time_steps"] == ds.sizes["time"]
    level = xr.open_zarr(out, group="overviews/4", decode_coords="all")
    assert level.sizes == {"time": ds.sizes["time"], "band": 3, "y": ds.sizes["y"] // 4, "x": ds.sizes["x"] // 4}
    assert (level.time.values == ds.time.values).all()
    # the mean of each 4 x 4 block of valid pixels, on the cube's grid coarsened 4 times, with its CRS
    expected = ds.reflectance.coarsen(y=4, x=4, boundary="trim").mean()
    np.testing.assert_allclose(level.reflectance.values, expected.values, rtol=1e-6, equal_nan=True)
    assert level.rio.crs.to_epsg() == ds.odc.geobox.crs.epsg
    assert level.odc.geobox.affine.almost_equals(ds.odc.geobox.affine @ ds.odc.geobox.affine.scale(4))
    assert level.odc.geobox.crs == ds.odc.geobox.crs
    assert factors(10980 * 2, 10980 * 2) == [4, 8, 16, 32, 64] and factors(100, 100) == [4]


def test_a_run_killed_while_writing_overviews_finishes_them_without_recomputing_a_chunk(sample_url, tmp_path,
                                                                                         monkeypatch):
    from srcube.pipeline.write import overviews

    out = str(tmp_path / "c.zarr")
    real = overviews.write_overviews

    def killed(store, start=0):
        raise KeyboardInterrupt("killed while writing overviews (test)")

    monkeypatch.setattr(overviews, "write_overviews", killed)
    with pytest.raises(KeyboardInterrupt):
        run_region(sample.DEFAULT_BBOX, "2024-05-01/2024-05-31", out=out, model="bicubic", bands=["B04"])
    monkeypatch.setattr(overviews, "write_overviews", real)
    ds = run_region(sample.DEFAULT_BBOX, "2024-05-01/2024-05-31", out=out, model="bicubic", bands=["B04"])
    assert ds.attrs["last_run"] == {"resumed": True, "chunk_writes": 0}
    assert ds.attrs["overviews"]["time_steps"] == ds.sizes["time"]


def test_quicklook_reads_the_overviews_not_the_full_frames(cube, tmp_path):
    import shutil

    out, ds = cube
    day = str(ds.time.values[-1])[:10]
    first = tmp_path / "a.png"
    assert runner.invoke(app, ["quicklook", str(out), str(first), "--date", day, "--size", "200"]).exit_code == 0
    copy = tmp_path / "copy.zarr"
    shutil.copytree(out, copy)
    # the date's full-resolution shards unreadable (zeros: a read fails their checksum; deleted, the cube would be
    # refused as damaged before any read)
    for shard in (copy / "reflectance" / "c" / str(ds.sizes["time"] - 1)).rglob("*"):
        if shard.is_file():
            shard.write_bytes(bytes(shard.stat().st_size))
    again = tmp_path / "b.png"
    result = runner.invoke(app, ["quicklook", str(copy), str(again), "--date", day, "--size", "200"])
    assert result.exit_code == 0, result.output
    assert first.read_bytes() == again.read_bytes()
    assert max(Image.open(again).size) == -(-(max(ds.sizes["y"], ds.sizes["x"]) // 4) // 2)  # the x4 level, halved
    # without overviews (a cube made before them) the quicklook reads the frame decimated
    png = quicklook_png(ds, max_side=200, date=day)
    assert max(Image.open(io.BytesIO(png)).size) <= 200


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

"""``srcube publish CUBE --to URL`` against a real STAC API with the Transactions extension on loopback
(stac-fastapi-pgstac on PostgreSQL + PostGIS, started here; see tests/support/pgstac.py), then read back the
way catalog users do: a plain pystac-client search finds the cube and xarray opens it from the Item."""

from __future__ import annotations

import json

import numpy as np
import pystac_client
import pytest
import requests
import xarray as xr
from typer.testing import CliRunner

from srcube.cli.commands import app
from srcube.pipeline import IncompleteCubeError, PublishError, run_region
from srcube.pipeline.testing import sample
from srcube.pipeline.write.publish import publish
from srcube.pipeline.write.store import CubeStore
from tests.support import pgstac

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture(scope="module")
def api():
    why = pgstac.missing()
    if why:
        pytest.skip(f"no STAC API with transactions can start here: {why}")
    with pgstac.stac_api() as url:
        yield url


@pytest.fixture(scope="module")
def cube(sample_url, tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "antwerp.zarr"
    ds = run_region(sample.DEFAULT_BBOX, sample.DEFAULT_DATES, out=str(out), model="bicubic", bands=["B04", "B08"])
    return out, ds


def test_publish_then_a_plain_stac_search_finds_the_cube_and_xarray_opens_it(api, cube):
    out, ds = cube
    result = runner.invoke(app, ["publish", str(out), "--to", api])
    assert result.exit_code == 0, result.output
    assert "collection created" in result.output and "item created" in result.output
    coll_id = json.loads((out.parent / "antwerp.zarr.stac" / "collection.json").read_text())["id"]

    client = pystac_client.Client.open(api)
    assert coll_id in [c.id for c in client.get_collections()]
    west, south, east, north = sample.DEFAULT_BBOX
    found = list(client.search(collections=[coll_id], bbox=[west + 0.01, south + 0.01, east - 0.01, north - 0.01],
                               datetime=sample.DEFAULT_DATES).items())
    assert len(found) == 1
    item = found[0]
    assert item.properties["srcube:model"] == "bicubic" and item.properties["srcube:scale"] == ds.attrs["scale"]
    assert item.properties["proj:code"] == f"EPSG:{ds.odc.geobox.crs.epsg}"
    asset = item.assets["zarr"]
    assert asset.href == str(out.resolve())
    opened = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])
    assert opened.rio.crs.to_epsg() == ds.odc.geobox.crs.epsg
    np.testing.assert_array_equal(opened.reflectance.isel(time=-1).values, ds.reflectance.isel(time=-1).values)
    level = item.assets["overview-4"]
    assert level.href == asset.href and "overview" in (level.roles or [])
    small = xr.open_dataset(level.href, **level.extra_fields["xarray:open_kwargs"])
    assert small.sizes["x"] == ds.sizes["x"] // 4 and small.rio.crs.to_epsg() == ds.odc.geobox.crs.epsg
    # nothing outside the cube's place and time
    assert not list(client.search(collections=[coll_id], bbox=[10, 10, 11, 11]).items())
    assert not list(client.search(collections=[coll_id], datetime="1999-01-01/1999-12-31").items())


def test_publishing_again_updates_in_place_and_a_new_href_is_what_users_get(api, cube):
    out, _ = cube
    first = publish(str(out), api)
    again = publish(str(out), api, asset_href="s3://cubes/antwerp.zarr")
    assert (first.collection_url, first.item_url) == (again.collection_url, again.item_url)
    assert again.collection == "updated" and again.item == "updated"
    coll_id = first.collection_url.rsplit("/", 1)[-1]
    items = requests.get(f"{first.collection_url}/items", timeout=10).json()["features"]
    assert len(items) == 1 and items[0]["assets"]["zarr"]["href"] == "s3://cubes/antwerp.zarr"
    assert items[0]["assets"]["overview-4"]["href"] == "s3://cubes/antwerp.zarr"
    assert items[0]["collection"] == coll_id
    assert items[0]["properties"]["start_datetime"].startswith(sample.DEFAULT_DATES[:7])


def test_an_api_without_transactions_is_refused_before_anything_is_written(sample_url, cube):
    out, _ = cube
    with pytest.raises(PublishError, match="does not take transactions"):
        publish(str(out), sample_url)


def test_an_unreachable_api_and_an_unfinished_cube_are_clear_errors(cube, tmp_path):
    out, _ = cube
    with pytest.raises(PublishError, match="is the STAC API running and reachable"):
        publish(str(out), "http://127.0.0.1:9", timeout=2)
    store = CubeStore(str(tmp_path / "empty.zarr"))
    with pytest.raises(IncompleteCubeError, match="only a complete cube is published"):
        publish(store.url, "http://127.0.0.1:9")
    bad = runner.invoke(app, ["publish", str(out), "--to", "http://127.0.0.1:9", "--header", "no-colon"])
    assert bad.exit_code == 2 and "--header takes 'Name: value'" in bad.output


def test_an_area_is_published_as_one_collection_with_an_item_per_cell(api, sample_url, tmp_path):
    from srcube.pipeline.area import run_area
    from srcube.pipeline.cells import cells_of

    area, dates = (4.47, 51.405, 4.4775, 51.408), "2024-06-12"
    out = tmp_path / "area-publish"
    assert run_area(area, dates, cell_km=0.9, out=str(out), model="bicubic", bands=["B04", "B08"], min_clear=0.0).ok
    result = runner.invoke(app, ["publish", str(out), "--to", api])
    assert result.exit_code == 0, result.output
    assert "collection created" in result.output and "2 items: 2 created" in result.output
    client = pystac_client.Client.open(api)
    cells = [c.id for c in cells_of(area, 0.9)]
    found = {it.id: it for it in client.search(collections=["area-publish"], bbox=list(area)).items()}
    assert sorted(found) == cells
    asset = found[cells[0]].assets["zarr"]
    assert asset.href == str((out / f"{cells[0]}.zarr").resolve())
    opened = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])
    assert opened.attrs["cell"] == cells[0]
    # a cell's item only where the cell is: a bbox inside the first cell finds that one
    west, south, *_ = found[cells[0]].bbox
    inside = [it.id for it in client.search(collections=["area-publish"],
                                            bbox=[west + 0.001, south + 0.001, west + 0.002, south + 0.002]).items()]
    assert cells[0] in inside and cells[1] not in inside
    again = runner.invoke(app, ["publish", str(out), "--to", api])
    assert "collection updated" in again.output and "2 updated" in again.output

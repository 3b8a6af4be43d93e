"""End to end on a real Earth Search scene (S2A 29RKH 2020-02-19), served by a local STAC API.

The COGs in ../shared are decimated 10x (100 m for the 10 m bands) while the real item still says
10 m: srcube trusts the files (GeorefMismatchWarning) and works at 100 m -> 25 m.
"""

import json
import warnings

import numpy as np
import pystac
import pytest
import rasterio
import rioxarray  # noqa: F401
import torch

from srcube import models
from srcube.pipeline import run_region
from srcube.pipeline.errors import GeorefMismatchWarning
from srcube.pipeline.testing.sample import write_catalog_files
from srcube.pipeline.testing.stac_server import StacServer
from tests.support.helpers import shared_path

pytestmark = pytest.mark.integration

FILES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
BBOX = (-11.5, 25.0, -11.3, 25.2)


@pytest.fixture(scope="module")
def real_catalog(tmp_path_factory):
    folder = shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219")
    doc = json.loads((folder / "S2A_29RKH_20200219_0_L2A.json").read_text())
    doc["links"] = [link for link in doc["links"] if link["rel"] not in ("self", "canonical")]
    doc["assets"] = {k: {**a, "href": (folder / f"{FILES[k]}.tif").as_uri()}
                     for k, a in doc["assets"].items() if k in FILES}
    item = pystac.Item.from_dict(doc)
    collection = pystac.Collection(
        "sentinel-2-l2a", "Earth Search v1 sentinel-2-l2a: one real item re-hosted for tests",
        pystac.Extent(pystac.SpatialExtent([list(item.bbox)]), pystac.TemporalExtent([[item.datetime, item.datetime]])),
        license="proprietary")
    root = tmp_path_factory.mktemp("real-catalog")
    write_catalog_files(root, collection, [item])
    with StacServer(root) as server:
        yield server.url, folder


def test_real_scene_through_run_region(real_catalog, dask_client, tmp_path):
    url, folder = real_catalog
    out = tmp_path / "real.zarr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GeorefMismatchWarning)
        ds = run_region(BBOX, "2020-02-19/2020-02-19", catalog=url, bands=["B04", "B08"], out=str(out),
                        client=dask_client, model="bicubic")
    assert any(issubclass(w.category, GeorefMismatchWarning) for w in caught)
    assert ds.rio.crs.to_epsg() == 32629
    assert ds.rio.resolution() == (25.0, -25.0)
    assert ds.attrs["input_resolution"] == 100.0 and ds.attrs["stac_item_ids"] == ["S2A_29RKH_20200219_0_L2A"]
    assert ds.sizes["time"] == 1
    # the output is bicubic x4 of the file's own pixels over the same (file-aligned) window
    left, _, _, top = ds.rio.bounds()
    col, row = round((left - 199980.0) / 100), round((2800020.0 - top) / 100)
    assert abs((left - 199980.0) / 100 - col) < 1e-9  # aligned with the file grid
    h, w, halo = ds.sizes["y"] // 4, ds.sizes["x"] // 4, ds.attrs["halo_pixels"]
    assert 0 < halo <= min(row, col)  # the halo lies inside the file: real neighbours on every side
    with rasterio.open(folder / "B04.tif") as src:
        lr = src.read(1)[row - halo : row + h + halo, col - halo : col + w + halo].astype(np.float32)
    with torch.inference_mode():
        ref = models.build("bicubic", scale=4)(torch.from_numpy(lr[None, None] * np.float32(1e-4)))[0, 0].numpy()
    ref = ref[4 * halo : -4 * halo, 4 * halo : -4 * halo]
    np.testing.assert_allclose(ds.reflectance.isel(time=0, band=0).values, ref, atol=1e-5)
    # real SCL: bare desert (5) is clear; the scene's clouds and cirrus (8, 9, 10) are not
    assert 0.9 < float(ds.clear_fraction[0]) < 1.0
    assert ds.clear.isel(time=0).values.min() == 0

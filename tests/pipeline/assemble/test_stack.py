import json
import warnings

import numpy as np
import pystac
import pytest
import rasterio

from srcube.pipeline.assemble.clearance import select_frames
from srcube.pipeline.assemble.stack import assemble, group_by_solar_day, reconcile_georef, solar_day, with_clearance
from srcube.pipeline.errors import GeorefMismatchWarning
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import SENTINEL2
from srcube.pipeline.testing import sample
from tests.support.helpers import shared_path


@pytest.fixture(scope="module")
def sample_items(sample_url):
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    return cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse(sample.DEFAULT_DATES))


def test_solar_day_groups_the_two_tiles(sample_items):
    groups = group_by_solar_day(sample_items)
    assert len(groups) == 6 and all(len(g) == 2 for g in groups)
    assert {solar_day(i).isoformat() for i in groups[0]} == {"2024-05-03"}


def test_stack_grid_values_and_mask(sample_items):
    stack = assemble(sample_items, BBox(*sample.DEFAULT_BBOX), ["B04", "B08"], chunk=128)
    assert stack.reflectance.dims == ("time", "band", "y", "x")
    assert stack.sizes["time"] == 6 and list(stack.band.values) == ["B04", "B08"]
    assert stack.odc.crs.epsg == 32631
    assert stack.reflectance.dtype == np.float32 and stack.reflectance.data.chunks[2][0] == 128
    # pixel edges on the sources' 10 m grid: no resampling of the native pixels
    x_edge = float(stack.x[0]) - 5.0
    y_edge = float(stack.y[0]) + 5.0
    assert x_edge % 10 == 0 and y_edge % 10 == 0
    # values are DN * 1e-4 - 0.1 of the files, bit for bit (B08 of tile A on 2024-06-12)
    t = 4
    ids = str(stack["items"].values[t]).split(",")
    item = next(i for i in sample_items if i.id == ids[0])
    with rasterio.open(item.assets["B08"].href) as src:
        col = int((x_edge - src.transform.c) / 10)
        row = int((src.transform.f - y_edge) / 10)
        dn = src.read(1)[row : row + 50, col : col + 50]
    got = stack.reflectance.isel(time=t, band=1, y=slice(0, 50), x=slice(0, 50)).values
    np.testing.assert_array_equal(got, dn.astype(np.float32) * np.float32(1e-4) + np.float32(-0.1))
    # the clear mask is the SCL classes 4, 5, 6 (SCL at 20 m read by nearest neighbour)
    with rasterio.open(item.assets["SCL"].href) as src:
        scl = src.read(1)[row // 2 : row // 2 + 25, col // 2 : col // 2 + 25]
    expected_clear = np.isin(np.repeat(np.repeat(scl, 2, 0), 2, 1), (4, 5, 6))
    clear = with_clearance(stack, SENTINEL2).clear.isel(time=t, y=slice(0, 50), x=slice(0, 50)).values
    np.testing.assert_array_equal(clear, expected_clear)


def test_clear_fraction_and_frame_selection(sample_items):
    stack = assemble(sample_items, BBox(*sample.DEFAULT_BBOX), ["B04"])
    fr = with_clearance(stack, SENTINEL2).clear_fraction.compute().values
    assert fr.shape == (6,)
    assert fr[4] == pytest.approx(1.0) and fr[1] < 0.3  # 2024-06-12 is clear, 2024-05-13 overcast
    decisions = select_frames(stack.time.values, fr, 0.5)
    assert [d.kept for d in decisions] == [True, False, True, False, True, True]
    assert "too cloudy" in decisions[1].reason and decisions[1].time.startswith("2024-05-13")


def test_swath_edge_is_nodata_not_clear(sample_items):
    # a box across the diagonal swath edge of tile B on 2024-06-22
    box = BBox(4.514, 51.397, 4.544, 51.414)
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    items = cat.search(client, "sentinel-2-l2a", box, DateRange.parse("2024-06-22"))
    stack = assemble(items, box, ["B02"])
    refl = stack.reflectance.isel(time=0, band=0).values
    clear = with_clearance(stack, SENTINEL2).clear.isel(time=0).values
    assert 0.05 < np.isnan(refl).mean() < 0.95
    assert not clear[np.isnan(refl)].any()


def _real_29rkh_item() -> pystac.Item:
    folder = shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219")
    d = json.loads((folder / "S2A_29RKH_20200219_0_L2A.json").read_text())
    d["links"] = []
    files = {"red": "B04", "nir": "B08", "scl": "SCL"}
    d["assets"] = {k: {**v, "href": (folder / f"{files[k]}.tif").as_uri()}
                   for k, v in d["assets"].items() if k in files}
    return pystac.Item.from_dict(d)


def test_file_georeferencing_wins_over_item_metadata():
    item = _real_29rkh_item()
    with pytest.warns(GeorefMismatchWarning, match=r"S2A_29RKH_20200219_0_L2A.*red declares \(10980, 10980\)"):
        fixed = reconcile_georef([item], ["red", "scl"], "first")[0]
    assert fixed.assets["red"].extra_fields["proj:shape"] == [1098, 1098]
    assert fixed.assets["red"].extra_fields["proj:transform"][0] == 100.0
    assert fixed.assets["scl"].extra_fields["proj:transform"][0] == 200.0
    assert item.assets["red"].extra_fields["proj:shape"] == [10980, 10980]  # the input is not mutated
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reconcile_georef([item], ["red"], "none")[0].assets["red"].extra_fields["proj:shape"] == [10980, 10980]


def test_real_scene_assembles_at_the_files_resolution():
    item = _real_29rkh_item()
    box = BBox(-11.5, 25.0, -11.3, 25.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GeorefMismatchWarning)
        stack = assemble([item], box, ["B04", "B08"])
    assert any(issubclass(w.category, GeorefMismatchWarning) for w in caught)
    assert stack.attrs["resolution"] == 100.0 and stack.odc.crs.epsg == 32629
    # aligned with the file grid (origin 199980, 2800020), so values are the file's pixels
    x_edge, y_edge = float(stack.x[0]) - 50.0, float(stack.y[0]) + 50.0
    assert (x_edge - 199980.0) % 100 == 0 and (2800020.0 - y_edge) % 100 == 0
    with rasterio.open(item.assets["red"].href) as src:
        col, row = int((x_edge - 199980.0) / 100), int((2800020.0 - y_edge) / 100)
        dn = src.read(1)[row : row + stack.sizes["y"], col : col + stack.sizes["x"]]
    np.testing.assert_array_equal(stack.reflectance.isel(time=0, band=0).values,
                                  dn.astype(np.float32) * np.float32(1e-4))
    fr = float(with_clearance(stack, SENTINEL2).clear_fraction.compute()[0])
    assert 0.95 < fr <= 1.0  # mostly bare desert (SCL 5) with a few clouds

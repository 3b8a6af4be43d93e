"""Sensor profiles on real catalog items: band mapping, Sentinel-2 harmonisation, PROBA-V status maps."""

import json

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr

from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import PROBAV, SENTINEL2, get_sensor, sensor_for_collection, sensor_for_items
from srcube.pipeline.sensors.bands import asset_key
from srcube.pipeline.sensors.sentinel2 import processing_baseline
from tests.support.helpers import shared_path


def _es_v1_items() -> list[pystac.Item]:
    doc = json.loads(shared_path("sentinel2_stac", "earth_search_v1", "search_cloudcover_lte40_page2.response.json")
                     .read_text())
    return [pystac.Item.from_dict(f) for f in doc["features"] if f["collection"] == "sentinel-2-l2a"]


def _pc_items() -> list[pystac.Item]:
    return [pystac.Item.from_file(p) for p in sorted(shared_path("sentinel2_stac", "planetary_computer", "items")
                                                      .glob("*.json"))]


def test_registry_and_detection():
    assert get_sensor("sentinel-2") is SENTINEL2 and get_sensor("proba-v") is PROBAV
    assert sensor_for_collection("sentinel-2-c1-l2a") is SENTINEL2
    assert sensor_for_collection("terrascope-probav-s1-toc-333m-cog-v2") is PROBAV
    assert sensor_for_collection("landsat-c2-l2") is None
    assert cat.resolve_catalog("terrascope").sensor_for("terrascope-probav-s5-toc-100m-cog-v2") is PROBAV
    assert sensor_for_items(_pc_items()[:1]) is SENTINEL2


@pytest.mark.parametrize("band", [b.name for b in SENTINEL2.vocabulary.bands])
def test_every_s2_band_maps_on_earth_search_and_planetary_computer(band):
    info = SENTINEL2.vocabulary.info(band)
    es, pc = _es_v1_items()[0], _pc_items()[0]
    es_key, pc_key = asset_key(es, info), asset_key(pc, info)
    assert pc_key == band
    assert es_key == {"SCL": "scl"}.get(band, info.aliases[0])
    assert not es_key.endswith("-jp2")


def test_processing_baseline_from_properties_and_product_ids():
    assert {processing_baseline(i) for i in _es_v1_items()} == {5.11}
    assert {processing_baseline(i) for i in _pc_items()} == {2.12}
    v0 = pystac.Item.from_file(shared_path("sentinel2_stac", "earth_search_v0", "S2A_28QCH_20200714_0_L2A.json"))
    assert processing_baseline(v0) == 2.14  # from sentinel:product_id ..._N0214_...
    real = pystac.Item.from_file(shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219", "S2A_29RKH_20200219_0_L2A.json"))
    assert processing_baseline(real) == 2.14


def test_harmonisation_follows_the_baseline_not_the_flags():
    es = _es_v1_items()[0]  # baseline 05.11, raster:bands offset -0.1, boa_offset_applied true
    assert SENTINEL2.scaling(es, "red", "baseline") == (1e-4, pytest.approx(-0.1), 0.0)
    assert SENTINEL2.scaling(es, "red", "raster")[1] == pytest.approx(-0.1)
    assert SENTINEL2.scaling(es, "red", "none")[1] == 0.0
    # the same item re-labelled with an old baseline: the (now wrong) raster offset is not applied
    old = es.clone()
    old.properties["s2:processing_baseline"] = "03.01"
    assert SENTINEL2.scaling(old, "red", "baseline")[1] == 0.0
    assert SENTINEL2.scaling(old, "red", "raster")[1] == pytest.approx(-0.1)
    # a new-baseline item whose metadata forgot the offset still gets it
    pc = _pc_items()[0].clone()
    pc.properties["s2:processing_baseline"] = "05.09"
    assert SENTINEL2.scaling(pc, "B04", "baseline") == (1e-4, pytest.approx(-0.1), 0.0)
    assert SENTINEL2.scaling(_pc_items()[0], "B04", "baseline") == (1e-4, 0.0, 0.0)


def test_real_29rkh_scl_mask():
    """The real scene's SCL: bare soil (5) is clear; clouds (8, 9), cirrus (10), dark (2) and
    unclassified (7) are not. Class counts as recorded in the data's PROVENANCE.md."""
    with rasterio.open(shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219", "SCL.tif")) as src:
        scl = xr.DataArray(src.read(1), dims=("y", "x"))
    counts = dict(zip(*np.unique(scl.values, return_counts=True), strict=True))
    assert {int(k): int(v) for k, v in counts.items()} == {2: 1, 5: 289159, 7: 3, 8: 967, 9: 837, 10: 10434}
    clear = SENTINEL2.clear_mask(scl, SENTINEL2.default_clear, ["B04"])
    assert float(clear.mean()) == pytest.approx(289159 / scl.size)
    # the score gives partial credit to cirrus (0.25), unclassified (0.5) and dark pixels (0.25)
    score = float(SENTINEL2.clearance_weight(scl, SENTINEL2.default_clear).mean())
    assert score == pytest.approx((289159 + 0.25 * 10434 + 0.5 * 3 + 0.25 * 1) / scl.size)
    with_snow = SENTINEL2.validate_clear_classes([4, 5, 6, 11])
    assert with_snow == (4, 5, 6, 11)
    with pytest.raises(ValueError, match="clear classes must be among"):
        SENTINEL2.validate_clear_classes([12])


def test_probav_status_map_bits():
    # code (bits 0-2) | land (bit 3) | quality SWIR, NIR, RED, BLUE (bits 4-7)
    sm = xr.DataArray(np.array([0b11111000, 0b11111001, 0b11111010, 0b11111011, 0b11111100,
                                0b10111000, 0b11110000], np.uint8), dims="x")
    assert list(PROBAV.qa_class(sm).values) == [0, 1, 2, 3, 4, 0, 0]
    # pixel 5 has a bad RED (bit 6 unset): clear for NIR, not for RED
    assert list(PROBAV.clear_mask(sm, (0,), ["NIR"]).values) == [True, False, False, False, False, True, True]
    assert list(PROBAV.clear_mask(sm, (0,), ["RED", "NIR"]).values) == [True, False, False, False, False, False, True]
    assert bool(PROBAV.clear_mask(sm, (0, 4), ["NIR"]).values[4])  # snow counted clear when asked
    assert list(PROBAV.clearance_weight(sm, (0,)).values) == [1.0, 0.0, 0.5, 0.0, 0.0, 1.0, 1.0]

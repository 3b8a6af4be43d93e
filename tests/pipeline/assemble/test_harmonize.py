"""Reflectance harmonisation per collection, verified from the pixels (harmonize="auto").

The real Earth Search scene S2A 29RKH 2020-02-19 (processing baseline 02.14, no offset in its pixels;
a bright desert, the hard case) is served by a real STAC API (rustac) several ways, and every way must
give the same cube reflectance:

* as it is;
* its item claiming baseline 04.00 and ``earthsearch:boa_offset_applied: false`` while the pixels are
  unchanged (what Earth Search's ``sentinel-2-l2a`` does for many items): the pixels show no offset;
* +1000 DN added to every valid pixel of every reflectance band, the item claiming 04.00: the offset is
  in the pixels, as ESA defines it;
* the unchanged pixels under a collection whose rule says the offset is there (``sentinel-2-c1-l2a``):
  the pixels win, with a HarmonizationWarning naming the item.

The table's metadata side is checked on the real Earth Search v1 and Planetary Computer items.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio

from srcube.pipeline import run_region
from srcube.pipeline.assemble.harmonize import ABSENT_BELOW, decide, evidence_of
from srcube.pipeline.errors import GeorefMismatchWarning, HarmonizationWarning
from srcube.pipeline.sensors.sentinel2 import OFFSET_TABLE, offset_rule, provider_of
from srcube.pipeline.testing.sample import write_catalog_files
from srcube.pipeline.testing.stac_server import StacServer
from tests.support.helpers import REPO, shared_path

FILES = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08", "scl": "SCL"}
BBOX = (-11.5, 25.0, -11.3, 25.2)
DAY = "2020-02-19/2020-02-19"
SCENE = "sentinel2_l2a_cog_S2A_29RKH_20200219"


def _item_doc(folder: Path, files: Path, *, baseline: str | None = None, collection: str = "sentinel-2-l2a") -> dict:
    doc = json.loads((folder / "S2A_29RKH_20200219_0_L2A.json").read_text())
    doc["links"] = [link for link in doc["links"] if link["rel"] not in ("self", "canonical", "collection",
                                                                          "parent", "root")]
    doc["assets"] = {k: {**a, "href": (files / f"{FILES[k]}.tif").as_uri()} for k, a in doc["assets"].items()
                     if k in FILES}
    doc["collection"] = collection
    if baseline is not None:
        doc["properties"]["s2:processing_baseline"] = baseline
        doc["properties"]["earthsearch:boa_offset_applied"] = False
    return doc


def _serve(root: Path, doc: dict) -> StacServer:
    item = pystac.Item.from_dict(doc)
    collection = pystac.Collection(
        doc["collection"], "one real Earth Search item re-hosted for tests",
        pystac.Extent(pystac.SpatialExtent([list(item.bbox)]), pystac.TemporalExtent([[item.datetime, item.datetime]])),
        license="proprietary")
    write_catalog_files(root, collection, [item])
    return StacServer(root)


@pytest.fixture(scope="module")
def plus_1000(tmp_path_factory) -> Path:
    """The scene's reflectance bands with +1000 DN on every valid pixel (SCL unchanged)."""
    folder = shared_path(SCENE)
    out = tmp_path_factory.mktemp("plus1000")
    for band in FILES.values():
        if band == "SCL":
            shutil.copy(folder / "SCL.tif", out / "SCL.tif")
            continue
        with rasterio.open(folder / f"{band}.tif") as src:
            profile, data = src.profile, src.read(1)
        shifted = np.where(data != 0, data.astype(np.int32) + 1000, 0).astype(np.uint16)
        profile.update(driver="COG", compress="DEFLATE")
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        profile.pop("tiled", None)
        with rasterio.open(out / f"{band}.tif", "w", **profile) as dst:
            dst.write(shifted, 1)
    return out


def _run(tmp_path: Path, doc: dict, name: str, client) -> tuple[np.ndarray, list[dict], list[warnings.WarningMessage]]:
    with _serve(tmp_path / f"cat-{name}", doc) as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HarmonizationWarning)
        warnings.simplefilter("ignore", GeorefMismatchWarning)  # the COGs are decimated 10x (see PROVENANCE)
        # bicubic: harmonisation is under test, not the model (a linear one passes an offset through exactly)
        cube = run_region(BBOX, DAY, catalog=server.url, collection=doc["collection"], bands=["B04", "B08"],
                          out=str(tmp_path / f"{name}.zarr"), client=client, model="bicubic")
        refl = cube.reflectance.isel(time=0).values
    frames = json.loads(cube.attrs["frames"])
    return refl, frames[0]["harmonization"], [w for w in caught if issubclass(w.category, HarmonizationWarning)]


@pytest.mark.integration
def test_three_ways_of_serving_a_real_scene_give_one_reflectance(plus_1000, dask_client, tmp_path):
    folder = shared_path(SCENE)
    as_is, h_as_is, w_as_is = _run(tmp_path, _item_doc(folder, folder), "as-is", dask_client)
    claims, h_claims, w_claims = _run(tmp_path, _item_doc(folder, folder, baseline="04.00"), "claims", dask_client)
    shifted, h_shift, w_shift = _run(tmp_path, _item_doc(folder, plus_1000, baseline="04.00"), "plus1000",
                                     dask_client)
    c1, h_c1, w_c1 = _run(tmp_path, _item_doc(folder, folder, baseline="04.00", collection="sentinel-2-c1-l2a"),
                          "c1", dask_client)
    assert np.isfinite(as_is).mean() > 0.99
    # the reference: baseline 02.14, no offset, and the bicubic x4 of DN / 10000
    assert h_as_is[0]["offset_applied"] == 0.0 and h_as_is[0]["rule"] == "no-offset" and not w_as_is
    for other in (claims, shifted, c1):
        np.testing.assert_allclose(other, as_is, atol=1e-3)
    # Earth Search sentinel-2-l2a at 04.00: the rule is unknown, the desert's darkest blue pixels decide
    assert h_claims[0]["rule"] == "unknown" and h_claims[0]["evidence"] == "absent"
    assert h_claims[0]["offset_applied"] == 0.0 and h_claims[0]["darkest_dn"] < ABSENT_BELOW and not w_claims
    # +1000 DN: nothing dark enough to tell; ESA's definition applies, and the user is told it is unverified
    assert h_shift[0]["offset_applied"] == -0.1 and h_shift[0]["evidence"] == "inconclusive"
    assert w_shift and "S2A_29RKH_20200219_0_L2A" in str(w_shift[0].message)
    # a collection whose rule says "offset" but whose pixels have none: the pixels win, with a warning
    assert h_c1[0]["rule"] == "offset" and h_c1[0]["offset_applied"] == 0.0
    assert w_c1 and "pixels win" in str(w_c1[0].message) and "S2A_29RKH_20200219_0_L2A" in str(w_c1[0].message)


@pytest.mark.integration
def test_baseline_mode_is_what_the_old_rule_gives(dask_client, tmp_path):
    """harmonize="baseline" stays available: it trusts the claimed 04.00 and is 0.1 too low on these pixels."""
    folder = shared_path(SCENE)
    doc = _item_doc(folder, folder, baseline="04.00")
    with _serve(tmp_path / "cat", doc) as server, warnings.catch_warnings():
        warnings.simplefilter("ignore", GeorefMismatchWarning)
        # bicubic: linear, so the 0.1 offset passes through the super-resolution exactly
        auto = run_region(BBOX, DAY, catalog=server.url, bands=["B04"], out=str(tmp_path / "a.zarr"),
                          client=dask_client, model="bicubic")
        base = run_region(BBOX, DAY, catalog=server.url, bands=["B04"], out=str(tmp_path / "b.zarr"),
                          client=dask_client, harmonize="baseline", model="bicubic")
    diff = (auto.reflectance - base.reflectance).values
    np.testing.assert_allclose(diff[np.isfinite(diff)], 0.1, atol=1e-4)
    assert base.attrs["harmonize"] == "baseline" and auto.attrs["harmonize"] == "auto"


def test_table_on_real_catalog_items():
    """The metadata side of the table on real Earth Search v1 and Planetary Computer items."""
    root = shared_path("sentinel2_stac")
    page = json.loads((root / "earth_search_v1" / "search_cloudcover_lte40_page2.response.json").read_text())
    seen = set()
    for doc in page["features"]:
        if doc["collection"] not in ("sentinel-2-l2a", "sentinel-2-c1-l2a"):
            continue
        item = pystac.Item.from_dict(doc, migrate=False)  # as served (the storage-extension migration warns)
        rule, baseline = offset_rule(item)
        assert provider_of(item) == "earth-search" and baseline == 5.11
        expected = "unknown" if doc["collection"] == "sentinel-2-l2a" else "offset"
        assert rule is not None and rule.pixels == expected, (doc["collection"], rule)
        seen.add(doc["collection"])
    assert seen == {"sentinel-2-l2a", "sentinel-2-c1-l2a"}
    pc = [pystac.Item.from_dict(json.loads(p.read_text())) for p in sorted((root / "planetary_computer" / "items")
                                                                           .glob("*.json"))]
    assert pc
    for item in pc:
        rule, baseline = offset_rule(item)
        # these 2019 acquisitions were reprocessed with baseline 02.12: no offset; newer ones keep ESA's offset
        assert provider_of(item) == "planetary-computer" and baseline is not None and baseline < 4
        assert rule is not None and rule.pixels == "no-offset"
    newer = pc[0].clone()
    newer.properties["s2:processing_baseline"] = "05.09"
    assert offset_rule(newer)[0].pixels == "offset"  # type: ignore[union-attr]
    # a named catalog wins over what the item looks like; the last row is ESA's definition for everyone else
    assert provider_of(newer, "cdse") == "cdse"
    assert OFFSET_TABLE[-1].provider == "*" and OFFSET_TABLE[-1].pixels == "offset"


@pytest.mark.parametrize(("rule_pixels", "darkest", "offset", "warn"), [
    ("offset", 650.0, False, True),      # pixels contradict the rule: the pixels win, with a warning
    ("offset", 1050.0, True, False),     # dark surfaces just above 1000 DN: offset confirmed
    ("offset", 1600.0, True, False),     # nothing dark: the rule stands
    ("unknown", 650.0, False, False),    # Earth Search l2a: pixels decide
    ("unknown", 1050.0, True, False),
    ("unknown", 1600.0, True, True),     # unverifiable: ESA's definition, with a warning
    ("no-offset", 1050.0, False, False),  # baseline < 04.00: no offset, whatever the pixels look like
])
def test_decision_table(rule_pixels, darkest, offset, warn):
    baseline = {"offset": "05.10", "unknown": "05.10", "no-offset": "02.14"}[rule_pixels]
    props = {"s2:processing_baseline": baseline}
    if rule_pixels == "unknown":
        props["earthsearch:boa_offset_applied"] = False
    item = pystac.Item("x", None, None, __import__("datetime").datetime(2024, 1, 1), props,
                       collection="sentinel-2-l2a")
    decision = decide(item, None, darkest, ["B02"])
    assert decision["rule"] == rule_pixels
    assert decision["offset_in_pixels"] is offset and decision["warn"] is warn, decision
    assert evidence_of(None) == "none"


def test_the_documented_catalog_table_is_the_code():
    from srcube.pipeline.search.catalog import offset_table_markdown

    doc = (REPO / "ARCHITECTURE.md").read_text()
    assert offset_table_markdown() in doc, "ARCHITECTURE.md's catalog table is stale: paste offset_table_markdown()"

import hashlib
import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from pystac.validation import validate_dict

from srcube.pipeline.errors import (
    CatalogUnavailableError,
    EmptySearchError,
    UnknownBandError,
    UnknownCatalogError,
    UnknownCollectionError,
)
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.sensors import SENTINEL2
from srcube.pipeline.sensors.bands import asset_key
from srcube.pipeline.testing import sample
from tests.support.helpers import shared_path


def _items(sample_dir: Path) -> list[dict]:
    return json.loads((sample_dir / "items.json").read_text())["features"]


def test_archive_layout_and_extensions(sample_dir):
    items = _items(sample_dir)
    assert len(items) == len(sample.ACQUISITIONS) * len(sample.TILES)
    for d in items:
        validate_dict(d, extensions=[])  # STAC core schema (bundled; no download)
        exts = " ".join(d["stac_extensions"])
        assert "projection" in exts and "/eo/" in exts and "raster" in exts
        assert d["properties"]["proj:code"] == "EPSG:32631"
        assert set(d["assets"]) == {"B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL"}
        b04, b11, scl = d["assets"]["B04"], d["assets"]["B11"], d["assets"]["SCL"]
        assert b04["proj:shape"] == [512, 512] and b04["proj:transform"][0] == 10
        assert scl["proj:shape"] == [256, 256] and scl["proj:transform"][0] == 20
        # the 20 m bands on the tile's 20 m grid: the same corner as the 10 m bands
        assert b11["proj:shape"] == [256, 256] and b11["proj:transform"] == [20, 0.0, *b04["proj:transform"][2:3],
                                                                             0.0, -20, b04["proj:transform"][5]]
        assert b11["raster:bands"][0]["offset"] == -0.1 and b11["eo:bands"][0]["common_name"] == "swir16"
        with rasterio.open(b11["href"]) as src:
            assert src.shape == (256, 256) and src.dtypes[0] == "uint16"
            assert tuple(src.transform)[:6] == tuple(b11["proj:transform"])
        assert b04["raster:bands"][0]["scale"] == 0.0001 and b04["raster:bands"][0]["offset"] == -0.1
        assert b04["eo:bands"][0]["common_name"] == "red"
        assert b04["href"].startswith("file:///")
        with rasterio.open(b04["href"]) as src:
            assert src.shape == (512, 512) and src.crs.to_epsg() == 32631 and src.dtypes[0] == "uint16"
            assert src.overviews(1)  # a COG with overviews
            assert tuple(src.transform)[:6] == tuple(b04["proj:transform"])


def test_scl_has_clouds_shadows_cirrus_and_nodata(sample_dir):
    seen: set[int] = set()
    for d in _items(sample_dir):
        with rasterio.open(d["assets"]["SCL"]["href"]) as src:
            seen |= set(np.unique(src.read(1)).tolist())
    assert {0, 3, 4, 5, 6, 8, 9, 10} <= seen


def test_tiles_overlap_with_identical_pixels(sample_dir):
    a = next(d for d in _items(sample_dir) if d["id"] == "S2A_T31UFS-A_20240612_0_L2A")
    b = next(d for d in _items(sample_dir) if d["id"] == "S2A_T31UFS-B_20240612_0_L2A")
    with rasterio.open(a["assets"]["B08"]["href"]) as ra, rasterio.open(b["assets"]["B08"]["href"]) as rb:
        # tile B starts 256 columns east and 128 rows south of tile A
        np.testing.assert_array_equal(ra.read(1)[128:, 256:], rb.read(1)[:384, :256])
    with rasterio.open(a["assets"]["B11"]["href"]) as ra, rasterio.open(b["assets"]["B11"]["href"]) as rb:
        np.testing.assert_array_equal(ra.read(1)[64:, 128:], rb.read(1)[:192, :128])  # the same at 20 m


def test_generation_is_seeded(tmp_path):
    def digest(root: Path) -> str:
        with rasterio.open(root / "cogs" / "T31UFS-A_20240523" / "B04.tif") as src:
            return hashlib.sha256(src.read(1).tobytes()).hexdigest()

    sample.generate(tmp_path / "one")
    sample.generate(tmp_path / "two")
    assert digest(tmp_path / "one") == digest(tmp_path / "two")


def test_reflectance_is_realistic(sample_dir):
    d = next(d for d in _items(sample_dir) if d["id"] == "S2A_T31UFS-A_20240612_0_L2A")
    refl = {}
    for b in ("B04", "B08"):
        with rasterio.open(d["assets"][b]["href"]) as src:
            refl[b] = src.read(1) * 1e-4 - 0.1
    ndvi = (refl["B08"] - refl["B04"]) / (refl["B08"] + refl["B04"])
    assert 0.01 < float(np.median(refl["B04"])) < 0.2
    assert 0.15 < float(np.median(refl["B08"])) < 0.5
    assert float(np.percentile(ndvi, 90)) > 0.6  # vegetated fields in June


# --- the real local STAC API and the search ----------------------------------------------


def test_sample_server_serves_stac_api(sample_url):
    client = cat.open_catalog(cat.resolve_catalog("sample"))
    assert client.self_href.rstrip("/") == sample_url.rstrip("/") or sample_url in client.self_href
    cat.check_collection(client, "sentinel-2-l2a")
    items = cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse(sample.DEFAULT_DATES))
    assert len(items) == 12
    assert [i.datetime for i in items] == sorted(i.datetime for i in items)
    few = cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse("2024-06-12"))
    assert {i.id for i in few} == {"S2A_T31UFS-A_20240612_0_L2A", "S2A_T31UFS-B_20240612_0_L2A"}
    # only tile A covers its north-west corner
    corner = cat.search(client, "sentinel-2-l2a", BBox(4.440, 51.438, 4.445, 51.441), DateRange.parse("2024-06-12"))
    assert [i.id for i in corner] == ["S2A_T31UFS-A_20240612_0_L2A"]


def test_max_cloud_cover_filters_client_side(sample_url):
    client = cat.open_catalog(cat.resolve_catalog(sample_url))
    items = cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse(sample.DEFAULT_DATES),
                       max_cloud_cover=10)
    assert items and all(i.properties["eo:cloud_cover"] <= 10 for i in items)
    with pytest.raises(EmptySearchError, match=r"none with eo:cloud_cover <= 0"):
        cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse("2024-05-13"),
                   max_cloud_cover=0)


def test_search_errors(sample_url):
    client = cat.open_catalog(cat.resolve_catalog(sample_url))
    with pytest.raises(UnknownCollectionError,
                       match=r"'landsat-c2-l2' not found.*it has: proba-v-s1-toc-333m, sentinel-2-l2a"):
        cat.check_collection(client, "landsat-c2-l2")
    with pytest.raises(EmptySearchError, match="no sentinel-2-l2a items"):
        cat.search(client, "sentinel-2-l2a", BBox(*sample.DEFAULT_BBOX), DateRange.parse("2019-01-01/2019-02-01"))
    with pytest.raises(EmptySearchError):
        cat.search(client, "sentinel-2-l2a", BBox(10.0, 40.0, 10.1, 40.1), DateRange.parse(sample.DEFAULT_DATES))


def test_catalog_profiles_and_errors():
    assert {"sample", "earth-search", "planetary-computer", "cdse"} <= set(cat.list_catalogs())
    assert cat.resolve_catalog("earth-search").url == "https://earth-search.aws.element84.com/v1"
    # Earth Search defaults to the Collection-1 reprocessing (offset kept and declared in the pixels)
    assert cat.resolve_catalog("earth-search").collection == "sentinel-2-c1-l2a"
    # items are searched unsigned; each catalog names how its pixels are read
    assert {p: cat.resolve_catalog(p).access for p in ("earth-search", "planetary-computer", "cdse", "terrascope")} \
        == {"earth-search": "none", "planetary-computer": "planetary-computer", "cdse": "cdse",
            "terrascope": "terrascope"}
    generic = cat.resolve_catalog("https://example.org/stac/")
    assert generic.url == "https://example.org/stac" and generic.collection == "sentinel-2-l2a"
    with pytest.raises(UnknownCatalogError, match="use one of cdse, earth-search, planetary-computer, sample"):
        cat.resolve_catalog("earthsearch")
    with pytest.raises(UnknownCatalogError):
        cat.resolve_catalog("")


def test_unreachable_catalog_names_the_url():
    import socket

    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stac"
    with pytest.raises(CatalogUnavailableError, match=f"127.0.0.1:{port}"):
        cat.open_catalog(cat.resolve_catalog(url), retries=0)


def test_planetary_computer_access_signs_at_read_time_at_the_http_boundary(monkeypatch):
    """Real PC items stay unsigned; the access signs an href right before a read (the token endpoint, on the
    internet, is replaced at the HTTP layer), reuses the cached token, and drops it when a read is refused."""
    import planetary_computer
    import requests

    from srcube.pipeline.search.access import access_for

    calls: list[str] = []

    class FakeResponse:
        status_code = 200

        def raise_for_status(self):
            pass

        def json(self):
            return {"msft:expiry": "2999-01-01T00:00:00Z", "token": f"sv=fake&sig=abc{len(calls)}"}

    def fake_get(self, url, **kw):
        calls.append(url)
        return FakeResponse()

    monkeypatch.setattr(planetary_computer.sas, "TOKEN_CACHE", {})
    monkeypatch.setattr(requests.Session, "get", fake_get)
    path = shared_path("sentinel2_stac", "planetary_computer", "single_item")
    item = pystac.Item.from_file(next(path.glob("*.json")))
    href = item.assets["B04"].href
    assert "sig=" not in href  # what the search gives and srcube keeps
    access = access_for(cat.resolve_catalog("planetary-computer").access)
    first, _, _ = access.prepare(href)
    again, _, _ = access.prepare(item.assets["B08"].href)
    assert "sig=abc1" in first and "sig=abc1" in again and len(calls) == 1  # one token for the container
    access.refresh(first)  # a refused read: the cached token is dropped, the next read gets a new one
    renewed, _, _ = access.prepare(href)
    assert "sig=abc2" in renewed and len(calls) == 2


# --- band vocabulary on real items from three catalogs -----------------------------------


def test_band_assets_on_real_catalog_items():
    es_v1 = json.loads(shared_path("sentinel2_l2a_cog_S2A_29RKH_20200219", "S2A_29RKH_20200219_0_L2A.json").read_text())
    es = pystac.Item.from_dict(es_v1)
    assert asset_key(es, SENTINEL2.vocabulary.info("B04")) == "red"
    assert asset_key(es, SENTINEL2.vocabulary.info("B8A")) == "nir08"
    assert asset_key(es, SENTINEL2.vocabulary.info("SCL")) == "scl"
    pc_path = next(shared_path("sentinel2_stac", "planetary_computer", "items").glob("*.json"))
    pc = pystac.Item.from_file(pc_path)
    assert asset_key(pc, SENTINEL2.vocabulary.info("B04")) == "B04"
    assert asset_key(pc, SENTINEL2.vocabulary.info("SCL")) == "SCL"
    v0 = pystac.Item.from_file(shared_path("sentinel2_stac", "earth_search_v0", "S2A_28QCH_20200714_0_L2A.json"))
    assert asset_key(v0, SENTINEL2.vocabulary.info("B11")) == "B11"
    cdse_like = pystac.Item("x", None, None, pc.datetime, {})
    cdse_like.add_asset("B04_10m", pystac.Asset("s3://eodata/x/B04_10m.jp2"))
    assert asset_key(cdse_like, SENTINEL2.vocabulary.info("B04")) == "B04_10m"
    with pytest.raises(UnknownBandError, match="has no asset for band B05"):
        asset_key(cdse_like, SENTINEL2.vocabulary.info("B05"))


def test_band_vocabulary():
    assert SENTINEL2.vocabulary.validate(None) == ("B02", "B03", "B04", "B08")
    assert SENTINEL2.vocabulary.validate(["red", "nir", "B04"]) == ("B04", "B08")
    assert SENTINEL2.vocabulary.validate("b8a") == ("B8A",)
    with pytest.raises(UnknownBandError, match="unknown sentinel-2 band 'B13'"):
        SENTINEL2.vocabulary.validate(["B13"])
    with pytest.raises(UnknownBandError, match="quality band"):
        SENTINEL2.vocabulary.validate(["SCL"])
    with pytest.raises(UnknownBandError, match="no bands"):
        SENTINEL2.vocabulary.validate([])

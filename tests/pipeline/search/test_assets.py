"""Items that lack an asset the run needs are left out and recorded, as items whose files cannot be read are
(issue 22, item 7): whichever item it is (the first found decided every band's asset key before), and also
with ``asset_check="none"`` (no read is needed to see a missing asset). A band that no item has stays an
error of the request."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from srcube.pipeline import run_region
from srcube.pipeline.errors import AssetError, AssetsExcludedWarning, UnknownBandError
from srcube.pipeline.region import RegionJob
from srcube.pipeline.testing import sample
from srcube.pipeline.testing.stac_server import StacServer

BBOX = sample.DEFAULT_BBOX
SHORT = "2024-06-12/2024-06-22"
FIRST = "S2A_T31UFS-A_20240612_0_L2A"  # the oldest item of SHORT: the one whose assets named every band's key


@pytest.fixture(scope="module")
def missing_b08(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The sample catalog with the B08 asset removed from the first item of SHORT, behind a real STAC API."""
    root = tmp_path_factory.mktemp("missing") / "archive"
    root.mkdir()
    shutil.copy(sample_dir / "collection.json", root / "collection.json")
    fc = json.loads((sample_dir / "items.json").read_text())
    for feature in fc["features"]:
        if feature["id"] == FIRST:
            del feature["assets"]["B08"]
    (root / "items.json").write_text(json.dumps(fc))
    with StacServer(root) as server:
        yield server.url


@pytest.mark.parametrize("asset_check", ["blocks", "none"])
def test_an_item_missing_an_asset_is_left_out_and_recorded(missing_b08: str, tmp_path: Path, asset_check: str):
    job = RegionJob.prepare(BBOX, SHORT, catalog=missing_b08, out=str(tmp_path / "m.zarr"), model="bicubic",
                            bands=["B04", "B08"], asset_check=asset_check)
    with pytest.warns(AssetsExcludedWarning, match=f"1 of 4 items left out.*{FIRST} B08: the item has no such asset"):
        found = job.find()
    assert FIRST not in {it.id for it in found.items} and len(found.items) == 3
    assert found.excluded == [{"item": FIRST, "asset": "B08", "href": "", "reason": "the item has no such asset"}]


def test_an_item_missing_an_asset_fails_the_run_with_fail_on_error(missing_b08: str, tmp_path: Path):
    job = RegionJob.prepare(BBOX, SHORT, catalog=missing_b08, out=str(tmp_path / "m.zarr"), model="bicubic",
                            bands=["B04", "B08"], fail_on_error=True)
    with pytest.raises(AssetError, match=f"1 of 4 items have unusable assets: {FIRST} B08: the item has no such"):
        job.find()


def test_a_band_no_item_has_is_still_an_error_of_the_request(missing_b08: str, tmp_path: Path):
    # the north-west corner of tile A, on the first item's day: that item is the only one found
    job = RegionJob.prepare((4.440, 51.438, 4.445, 51.441), "2024-06-12", catalog=missing_b08,
                            out=str(tmp_path / "m.zarr"), model="bicubic", bands=["B04", "B08"])
    with pytest.raises(UnknownBandError, match="none of the 1 items found has an asset for band B08"):
        job.find()


@pytest.mark.integration
def test_the_run_completes_without_the_item(missing_b08: str, dask_client, tmp_path: Path):
    out = tmp_path / "m.zarr"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AssetsExcludedWarning)
        cube = run_region(BBOX, SHORT, catalog=missing_b08, out=str(out), client=dask_client, model="bicubic",
                          bands=["B04", "B08"], tile=64)
    assert any(issubclass(w.category, AssetsExcludedWarning) for w in caught)
    assert cube.attrs["complete"] is True and FIRST not in cube.attrs["stac_item_ids"]
    assert [p["item"] for p in json.loads(cube.attrs["excluded_items"])] == [FIRST]

"""The stack cache: a second run reads the zarr stack instead of the catalog and the archive."""

import json
import shutil

import numpy as np
import pytest
import xarray as xr

from srcube.pipeline import run_region
from srcube.pipeline.assemble.stackcache import cache_key
from srcube.pipeline.testing import sample
from srcube.pipeline.testing.stac_server import StacServer
from tests.support.servers import rehosted_catalog

pytestmark = pytest.mark.integration
#: a corner of the sample region (a few chunks per frame): three runs of it stay quick
CORNER = [4.465, 51.401, 4.487, 51.414]


def test_second_run_reads_the_cache_not_the_network(sample_dir, tmp_path, dask_client):
    archive = tmp_path / "archive"  # a copy of the session's COGs and a catalog of them: this one is cut off below
    shutil.copytree(sample_dir / "cogs", archive / "cogs")
    rehosted_catalog(sample_dir, archive, lambda path: (archive / path.relative_to(sample_dir)).resolve().as_uri())
    cache = tmp_path / "stacks"
    kwargs = dict(bands=["B04", "B08"], client=dask_client, stack_cache=str(cache), tile=128, model="bicubic")
    with StacServer(archive) as server:
        first = run_region(CORNER, sample.DEFAULT_DATES, catalog=server.url, out=str(tmp_path / "a.zarr"),
                           **kwargs)
        url = server.url
    assert first.attrs["stack_from_cache"] is False
    stores = list(cache.glob("stack-*.zarr"))
    assert len(stores) == 1
    cached = xr.open_zarr(stores[0])
    assert set(cached.data_vars) == {"reflectance", "qa"} and cached.attrs["complete"] is True
    assert cached.reflectance.encoding["chunks"] == (1, 2, 128, 128)  # one inference tile per chunk
    assert json.loads(cached.attrs["request"])["bands"] == ["B04", "B08"]
    # the catalog is down and the COGs are gone: only the cache can make the same cube
    shutil.rmtree(archive / "cogs")
    second = run_region(CORNER, sample.DEFAULT_DATES, catalog=url, out=str(tmp_path / "b.zarr"),
                        **kwargs)
    assert second.attrs["stack_from_cache"] is True
    assert second.attrs["stac_item_ids"] == first.attrs["stac_item_ids"]
    np.testing.assert_array_equal(second.reflectance.values, first.reflectance.values)
    np.testing.assert_array_equal(second.clear.values, first.clear.values)
    # clear classes can change without a new download: the cache keeps the raw SCL, and counting
    # SCL 7 (unclassified) as clear makes more pixels clear, never fewer
    wider = run_region(CORNER, sample.DEFAULT_DATES, catalog=url, out=str(tmp_path / "c.zarr"),
                       clear_classes=[4, 5, 6, 7], **kwargs)
    assert wider.attrs["stack_from_cache"] is True and wider.attrs["clear_classes"] == [4, 5, 6, 7]
    before, after = first.clear_count.values.astype(int), wider.clear_count.values.astype(int)
    assert (after >= before).all() and after.sum() > before.sum()


def test_cache_key_depends_on_the_request():
    base = {"catalog": "sample", "collection": "sentinel-2-l2a", "bbox": (1, 2, 3, 4), "bands": ["B04"]}
    assert cache_key(base) == cache_key(dict(reversed(list(base.items()))))
    assert cache_key(base) != cache_key({**base, "bands": ["B08"]})
    assert cache_key(base) != cache_key({**base, "bbox": (1, 2, 3, 5)})

"""Cubes in an S3-compatible object store: moto's server on 127.0.0.1 (as zarr and s3fs test themselves).

out=s3://bucket/prefix/cube.zarr end to end with credentials from storage options and from the
environment, and the resume of a partial cube (chunks counted) matching an uninterrupted local run.
"""

from __future__ import annotations

import pytest

from srcube.pipeline.write.store import CubeStore, open_cube
from tests.support.helpers import S3_CREDS as CREDS

pytestmark = pytest.mark.integration
BBOX = [4.465, 51.401, 4.487, 51.414]
DATES = "2024-06-12/2024-06-22"  # two clear days: what is under test is the store, not the time series
MODEL = "bicubic"  # the object store is under test, not the model


@pytest.fixture(scope="module")
def storage_options(s3_endpoint: str) -> dict:
    return {"key": CREDS["AWS_ACCESS_KEY_ID"], "secret": CREDS["AWS_SECRET_ACCESS_KEY"],
            "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": CREDS["AWS_REGION"]}}


@pytest.fixture(scope="module")
def local_reference(tmp_path_factory, sample_dir, dask_client):
    from srcube.pipeline import run_region

    return run_region(BBOX, DATES, model=MODEL, out=str(tmp_path_factory.mktemp("s3ref") / "ref.zarr"),
                      client=dask_client)


def _same(cube, reference) -> None:
    for name in ("reflectance", "clear", "clear_count"):
        assert cube[name].equals(reference[name]), name
    assert cube.attrs["request_hash"] == reference.attrs["request_hash"]


def test_cube_to_s3_with_storage_options(storage_options, local_reference, dask_client):
    import s3fs

    from srcube.pipeline import run_region

    url = "s3://cubes/prefix/opts.zarr"
    cache = "s3://cubes/stack-cache"
    cube = run_region(BBOX, DATES, model=MODEL, out=url, client=dask_client, storage_options=storage_options,
                      stack_cache=cache)
    assert cube.attrs["complete"] is True and cube.attrs["stack_from_cache"] is False
    _same(open_cube(url, storage_options=storage_options), local_reference)
    # the stack cache in the object store serves the next run of the same request
    again = run_region(BBOX, DATES, model=MODEL, out="s3://cubes/prefix/opts-again.zarr", client=dask_client,
                       storage_options=storage_options, stack_cache=cache)
    assert again.attrs["stack_from_cache"] is True
    _same(again, local_reference)
    fs = s3fs.S3FileSystem(**storage_options)
    keys = fs.find("cubes/prefix/opts.zarr")
    assert "cubes/prefix/opts.zarr/zarr.json" in keys and any("/reflectance/c/" in k for k in keys)
    assert not any("/.srcube/" in k for k in keys)  # the manifest is gone once complete


def test_partial_s3_cube_resumes_only_missing_chunks(storage_options, local_reference, dask_client):
    from srcube.pipeline import run_region
    from srcube.pipeline.errors import IncompleteCubeError
    from srcube.pipeline.region import RegionJob

    url = "s3://cubes/prefix/partial.zarr"
    job = RegionJob.prepare(BBOX, DATES, model=MODEL, out=url, storage_options=storage_options)
    job.load(dask_client)
    job.decide(dask_client)
    job.build(dask_client)
    job.start()
    pending = job.pending()
    written = job.write(dask_client, only=pending[: len(pending) // 3])  # a run that died a third of the way
    store = CubeStore(url, storage_options)
    assert store.status() == "incomplete"
    assert sum(len(store.done(n)) for n in store.expected()) == written > 0
    # what a flow batch asks: which of its own writes are recorded (one check per entry, no listing)
    assert store.written(pending) == {(n, i) for n in store.expected() for i in store.done(n)}
    assert store.written(pending[len(pending) // 3 :]) == set()
    with pytest.raises(IncompleteCubeError):
        open_cube(url, storage_options=storage_options)

    cube = run_region(BBOX, DATES, model=MODEL, out=url, client=dask_client, storage_options=storage_options)
    assert cube.attrs["last_run"] == {"resumed": True, "chunk_writes": len(pending) - written}
    _same(cube, local_reference)


def test_cube_to_s3_with_credentials_from_the_environment(s3_endpoint, storage_options, local_reference,
                                                          monkeypatch):
    """No storage options: s3fs/botocore read AWS_* (as from a Kubernetes Secret); the LocalCluster
    started for the run inherits them."""
    from srcube.pipeline import run_region

    for k, v in {**CREDS, "AWS_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(k, v)
    import fsspec

    fsspec.config.conf.pop("s3", None)
    url = "s3://cubes/prefix/env.zarr"
    cube = run_region(BBOX, DATES, model=MODEL, out=url, n_workers=1)
    assert cube.attrs["complete"] is True
    _same(open_cube(url, storage_options=storage_options), local_reference)

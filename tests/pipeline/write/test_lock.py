"""The writer lock (pipeline/write/lock.py) when its object store stops answering, as in a network partition
(botocore then raises its own errors, which are not ``OSError``): the store is moto's S3 server behind a
:class:`~tests.support.cluster.Gate`, a TCP forwarder that is cut (connections reset, new ones refused) and mended.
Found by the area drill (tests/pipeline/test_area_drill.py): a worker cut off while it held a cell's lock left the
lock behind, held by its live process, and the cell was recorded failed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import boto3
import pytest
import s3fs

from srcube.pipeline.write.lock import StoreLock
from tests.support.cluster import Gate
from tests.support.helpers import S3_CREDS

pytestmark = pytest.mark.integration


@pytest.fixture
def gate(s3_endpoint: str) -> Iterator[Gate]:
    url = urlsplit(s3_endpoint)
    with Gate(url.hostname or "127.0.0.1", url.port or 80) as g:
        yield g


def _fs(endpoint: str) -> s3fs.S3FileSystem:
    # one attempt per request: the store is down or not, botocore's own retries would only make the test slower
    return s3fs.S3FileSystem(key=S3_CREDS["AWS_ACCESS_KEY_ID"], secret=S3_CREDS["AWS_SECRET_ACCESS_KEY"],
                             client_kwargs={"endpoint_url": endpoint, "region_name": S3_CREDS["AWS_REGION"]},
                             config_kwargs={"retries": {"max_attempts": 1}}, skip_instance_cache=True)


def _record(s3_endpoint: str, key: str) -> dict | None:
    """The lock object as the store holds it (read past the gate), or None."""
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name=S3_CREDS["AWS_REGION"],
                      aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"])
    try:
        return json.loads(s3.get_object(Bucket="cubes", Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


def _until(check, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_a_lock_the_store_cannot_remove_goes_once_the_store_answers_again(gate, s3_endpoint):
    key = "locks/release.zarr.lock"
    lock = StoreLock(_fs(gate.url), f"cubes/{key}", heartbeat=0.5, stale_after=60)
    lock.acquire()
    gate.cut()
    lock.release()  # no error out of the run's finally: the run's own error (or result) is what matters
    assert not lock.held and _record(s3_endpoint, key)["token"] == lock.token  # still there: nothing reached it
    gate.mend()
    assert _until(lambda: _record(s3_endpoint, key) is None), "the lock was not removed once the store answered"


def test_the_heartbeat_outlasts_a_store_that_stops_answering(gate, s3_endpoint):
    key = "locks/beat.zarr.lock"
    lock = StoreLock(_fs(gate.url), f"cubes/{key}", heartbeat=0.2, stale_after=60)
    lock.acquire()
    try:
        gate.cut()
        time.sleep(3.0)  # several beats fail, past s3fs's own retries of a reset connection
        before = _record(s3_endpoint, key)["heartbeat"]
        gate.mend()
        # the holder's heartbeat goes on: others do not take a live run's lock over after stale_after
        assert _until(lambda: _record(s3_endpoint, key)["heartbeat"] > before), "the heartbeat stopped"
    finally:
        lock.release()
    assert _record(s3_endpoint, key) is None

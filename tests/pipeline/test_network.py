"""DeadlineSession: every attempt of a request has a wall-clock deadline, from sending it to the last byte of the
answer, which a per-socket read timeout alone is not; failed attempts are retried with backoff. Against
:class:`tests.support.faultproxy.FaultProxy` in front of the sample archive's real STAC API."""

from __future__ import annotations

import pickle
import time

import pytest
import requests

from srcube.pipeline.network import DeadlineExceeded, DeadlineSession, backoff, gdal_timeouts, store_options
from tests.support.faultproxy import FaultProxy


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", ["hang", "drip", "stall"])
def test_each_attempt_ends_at_its_deadline(sample_url, fault):
    with FaultProxy(sample_url, schedule=(fault,), drip_s=0.3) as proxy, DeadlineSession(1.0, retries=1) as session:
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"GET http://127\.0\.0\.1:\d+/collections: no complete answer "
                                                   r"within 1 s"):
            session.get(f"{proxy.url}/collections")
        took = time.monotonic() - t0
    assert proxy.counts[fault] == 2
    assert 2.0 <= took < 2.5 + 10  # two attempts of 1 s and 0.5 s between them (plus a loaded machine's slack)


def test_failed_attempts_are_retried_and_the_connection_is_reused_after(sample_url):
    # a 503, a reset and a stalled answer, then answers: one request survives all three
    with FaultProxy(sample_url, schedule=("503", "reset", "hang", None, None, None)) as proxy, \
            DeadlineSession(1.0, retries=3) as session:
        resp = session.get(f"{proxy.url}/collections")
        assert resp.status_code == 200 and resp.json()["collections"]
        assert [session.get(f"{proxy.url}/").status_code for _ in range(2)] == [200, 200]
    assert proxy.counts == {**proxy.counts, "503": 1, "reset": 1, "hang": 1, "ok": 3}


def test_the_last_answer_is_returned_when_retries_are_spent(sample_url):
    with FaultProxy(sample_url, schedule=("503",)) as proxy, DeadlineSession(5.0, retries=1) as session:
        assert session.get(f"{proxy.url}/").status_code == 503
    assert proxy.counts["503"] == 2


def test_a_refused_connection_says_so_plainly():
    with DeadlineSession(1.0) as session, pytest.raises(requests.ConnectionError) as err:
        session.get("http://127.0.0.1:9/")
    assert str(err.value).startswith("GET http://127.0.0.1:9/: ") and "Connection refused" in str(err.value)
    assert "_Watched" not in str(err.value)


def test_backoff_and_library_timeouts():
    assert [backoff(i) for i in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert gdal_timeouts(0.4) == {"GDAL_HTTP_TIMEOUT": "1", "GDAL_HTTP_CONNECTTIMEOUT": "1"}  # whole seconds, >= 1
    assert store_options("/data/cube.zarr", None, 5) is None
    assert store_options("s3://b/c.zarr", {"key": "k"}, 5) == {"key": "k", "config_kwargs": {"connect_timeout": 5,
                                                                                             "read_timeout": 5}}
    with pytest.raises(ValueError, match="positive number of seconds"):
        DeadlineSession(0)


def test_a_pickled_session_keeps_its_deadline_and_retries(sample_url):
    """Sessions travel with STAC objects (a client's StacIO) into Dask graphs."""
    session = pickle.loads(pickle.dumps(DeadlineSession(2.5, retries=3, statuses=(503,))))
    assert (session.timeout, session.retries, session.statuses) == (2.5, 3, (503,))
    with FaultProxy(sample_url, schedule=("hang", None)) as proxy, session:
        assert session.get(f"{proxy.url}/").status_code == 200  # the hung attempt ended and was retried

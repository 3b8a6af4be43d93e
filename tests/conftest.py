"""Shared fixtures: the sample archive behind a real local STAC API, a LocalCluster, network guard."""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.helpers import REPO, S3_CREDS, shared_path, stop_process_group  # noqa: F401

# the CLI's tables are read by the tests: one width whatever runs them (a terminal, a pipe, an xdist worker)
os.environ["COLUMNS"] = "200"
# pytest-xdist: each worker process gets a Prefect home of its own (its local database and result storage)
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("PREFECT_HOME"):
    os.environ["PREFECT_HOME"] = os.path.join(os.environ["PREFECT_HOME"], os.environ["PYTEST_XDIST_WORKER"])

# --- no network except loopback --------------------------------------------------------------

_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> object:
    if self.family in (socket.AF_INET, socket.AF_INET6) and isinstance(address, tuple):
        host = str(address[0])
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"tests may not reach the network: connect to {address} blocked")
    return _real_connect(self, address)


@pytest.fixture(autouse=True, scope="session")
def _block_network() -> Iterator[None]:
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]


# --- sample archive and its STAC API ---------------------------------------------------------


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample archive, generated once per run by the project's own code (about 10 s): under pytest-xdist the
    worker processes share one, made by the first that needs it while the others wait. Tests only read it."""
    from srcube.pipeline.testing import sample

    base = tmp_path_factory.getbasetemp()
    # under xdist: the run's folder, above each worker's
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = shared / "sample-archive"
    os.environ["SRCUBE_SAMPLE_DIR"] = str(root)  # catalog="sample" serves this archive
    with open(shared / "sample-archive.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return sample.ensure_archive(root)


@pytest.fixture(scope="session")
def sample_url(sample_dir: Path) -> str:
    """URL of the real STAC API (rustac serve on 127.0.0.1) over the sample archive."""
    from srcube.pipeline.testing.stac_server import sample_server_url

    return sample_server_url(sample_dir)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[object]:
    """A real LocalCluster shared by the end-to-end tests (2 single-threaded worker processes)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The cache of exported ONNX graphs for the session ($SRCUBE_ONNX_CACHE): each model is exported once, by the
    first test that needs its graph (an export costs seconds), never into the user's cache."""
    folder = tmp_path_factory.getbasetemp() / "onnx-cache"
    folder.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRCUBE_ONNX_CACHE", str(folder))
        yield folder


# --- an S3-compatible object store ------------------------------------------------------------

@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto in server mode on a free loopback port (as zarr and s3fs test themselves), with the buckets
    ``cubes`` and ``results``."""
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency (pip install -e .[test])")
    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"], region_name=S3_CREDS["AWS_REGION"])
        for bucket in ("cubes", "results"):
            s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


# --- a Prefect server ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drain_prefect_services() -> None:
    """Send what this process still holds for a server, then stop the services that send it. Prefect's events
    and API-log workers are process-wide and keep the API client they started with: drained when a module's server
    starts (they start again with its URL) and before it stops (its flow runs' last events and logs reach it)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=30)


@contextlib.contextmanager
def no_default_dask_client() -> Iterator[None]:
    """No default Dask client in this process for a while. prefect_dask's DaskTaskRunner attaches to the default
    client's cluster when there is one, even when it is handed an address or a cluster class: with the session's
    ``dask_client`` as default, a module's flow runs would send their tasks to the session's worker processes,
    which keep the Prefect API of the first module that used them; once that module's server stopped, their task-run
    events went nowhere (CI: task runs missing on the server). distributed keeps its default clients in a private
    registry and a context variable; both are put back on exit."""
    import dask
    from distributed import client as dc

    saved = dict(dc._global_clients)
    dc._global_clients.clear()
    current = dc._current_client.set(None)  # what ``with Client(...)`` (the session fixture's) made current
    try:
        with dask.config.set(scheduler="threads"):  # the default client had made "dask.distributed" the default
            yield
    finally:
        dc._current_client.reset(current)
        dc._global_clients.update(saved)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path, dask_client: object) -> Iterator[str]:
    """``prefect server start`` on 127.0.0.1 (own SQLite database), and this process pointed at it. The session's
    ``dask_client`` is made first, so that it is hidden while the module's flows run (no_default_dask_client)."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_LOGGING_LEVEL,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        get_current_settings,
        temporary_settings,
    )

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {"PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           # no PREFECT_LOGGING_LEVEL: the flow runs' worker processes log at Prefect's INFO, as in production (their
           # task-run logs are on the server only if they are logged at all)
           "DASK_LOGGING__DISTRIBUTED": "warning",
           # the scheduler service creates the runs of new schedules within a second, not a minute
           "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
           "SRCUBE_SAMPLE_DIR": str(sample_dir), "SRCUBE_HOME": str(REPO)}
    log = open(home / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--no-ui"], env={**os.environ, **env}, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    saved = {k: os.environ.get(k) for k in [*env, "PREFECT_API_URL"]}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.read() == b"true":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        os.environ.update({**env, "PREFECT_API_URL": url})  # for subprocesses and Dask workers started now
        _drain_prefect_services()  # workers an earlier test started bound another server's URL: start them anew
        # Prefect's services run on threads of their own, which do not see temporary_settings (a context variable)
        # but the process-global settings read from the environment when prefect was imported (no API URL): they
        # are read again from the environment above (as prefect.testing's harness does)
        refresh_global_settings_context()
        seen: list[object] = []
        probe = threading.Thread(target=lambda: seen.append(get_current_settings().api.url))
        probe.start()
        probe.join()
        assert seen == [url], f"a thread of this process sees Prefect API {seen}, not {url}"
        with temporary_settings({PREFECT_API_URL: url, PREFECT_HOME: str(home), PREFECT_LOGGING_LEVEL: "WARNING",
                                 PREFECT_SERVER_ANALYTICS_ENABLED: False}), no_default_dask_client():
            try:
                yield url
            finally:
                _drain_prefect_services()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        refresh_global_settings_context()
        stop_process_group(server)
        log.close()


# --- a small cube for the map page (srcube view) ---------------------------------------------------------------

#: a corner of the sample region, two dates (one clear, one with clouds and the swath's edge), four bands (true and
#: false colour), the bicubic baseline with the consistency projection (so the cube has the consistency layer and the
#: page's input view is the exact kind), and tiles of 64 input px (so one map tile of 256 px spans several chunks)
VIEW_CUBE = {"bbox": (4.465, 51.401, 4.487, 51.414), "dates": "2024-06-12/2024-06-22", "model": "bicubic",
             "consistency": True, "bands": ["B02", "B03", "B04", "B08"], "tile": 64}


@pytest.fixture(scope="session")
def view_cube(tmp_path_factory: pytest.TempPathFactory, sample_url: str) -> Path:
    """A complete cube (:data:`VIEW_CUBE`, 628 x 596 px) for the map page's tests, made once per session; the input
    stack it was made from is in the stack cache beside it (``stacks/``)."""
    from srcube.pipeline import run_region

    out = tmp_path_factory.mktemp("view") / "corner.zarr"
    run_region(VIEW_CUBE["bbox"], VIEW_CUBE["dates"], out=str(out), stack_cache=str(out.parent / "stacks"),
               **{k: v for k, v in VIEW_CUBE.items() if k not in ("bbox", "dates")})
    return out

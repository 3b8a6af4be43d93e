"""Shared fixtures: the sample archive behind a real local STAC API, a LocalCluster, network guard."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SRCUBE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with the reason."""
    path = SHARED.joinpath("data", *parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (../shared is not beside the repo)")
    return path


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
    """The sample archive, generated once per session by the project's own code."""
    from pipeline import sample

    root = tmp_path_factory.getbasetemp() / "sample-archive"
    os.environ["SRCUBE_SAMPLE_DIR"] = str(root)  # catalog="sample" serves this archive
    return sample.ensure_archive(root)


@pytest.fixture(scope="session")
def sample_url(sample_dir: Path) -> str:
    """URL of the real STAC API (rustac serve on 127.0.0.1) over the sample archive."""
    from pipeline.stac_server import sample_server_url

    return sample_server_url(sample_dir)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[object]:
    """A real LocalCluster shared by the end-to-end tests (2 single-threaded worker processes)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client

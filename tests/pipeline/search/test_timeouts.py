"""Timeouts that hold: a catalog, token endpoint or asset server that accepts a connection and then stalls
(answers nothing, answers one byte per second, or stops half way through a page) ends the run with a typed
error in bounded time, whatever a per-socket read timeout would allow, and the run's lock is released.

The stalls come from :class:`tests.support.faultproxy.FaultProxy` in front of the sample archive's real STAC
API. Timeouts are small and retries few, so each case lasts a few seconds; the bounds checked are generous
(``timeout x (retries + 1)`` plus the backoff, plus ``SLACK``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from rasterio.errors import RasterioIOError
from typer.testing import CliRunner

import srcube.cli.commands as cli
from srcube.pipeline import run_region
from srcube.pipeline.errors import CatalogUnavailableError, PublishError, StoreLockedError
from srcube.pipeline.network import gdal_timeouts
from srcube.pipeline.options import RunOptions
from srcube.pipeline.params import BBox, DateRange
from srcube.pipeline.region import RegionJob
from srcube.pipeline.search import catalog as cat
from srcube.pipeline.search.access import (
    TOKEN_RETRIES,
    BearerTokenAccess,
    PlanetaryComputerAccess,
    ReadSettings,
    current,
    register_on_workers,
)
from srcube.pipeline.search.assets import probe_asset
from srcube.pipeline.testing import sample
from srcube.pipeline.write.store import CubeStore
from tests.support.faultproxy import FaultProxy

BBOX = sample.DEFAULT_BBOX
SHORT = "2024-06-12/2024-06-22"
FAST = {"tile": 64, "model": "bicubic"}
#: seconds allowed beyond the computed bound (a loaded test machine); the stalls themselves never end
SLACK = 15.0

#: (fault, requests it applies to, timeout): every request hangs; every answer drips one byte a second (the
#: timeout is above a second, so no single read ever times out); the search page stops half way
STALLS = [("hang", None, 1.0), ("drip", None, 2.0), ("stall", "/search", 1.0)]


def _bound(timeout: float, retries: int) -> float:
    """What a stalled request may take at most: every attempt's deadline and the backoff between them."""
    return timeout * (retries + 1) + sum(min(30.0, 0.5 * 2**i) for i in range(retries))


def _search(url: str, *, timeout: float, retries: int) -> None:
    client = cat.open_catalog(cat.resolve_catalog(url), timeout=timeout, retries=retries)
    cat.check_collection(client, "sentinel-2-l2a")
    cat.search(client, "sentinel-2-l2a", BBox(*BBOX), DateRange.parse(SHORT))


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("fault", "only", "timeout"), STALLS, ids=[s[0] for s in STALLS])
def test_stalled_catalog_gives_the_typed_error_in_bounded_time(sample_url, fault, only, timeout):
    retries = 1
    with FaultProxy(sample_url, schedule=(fault,), only=only) as proxy:
        t0 = time.monotonic()
        with pytest.raises(CatalogUnavailableError) as err:
            _search(proxy.url, timeout=timeout, retries=retries)
        took = time.monotonic() - t0
    print(f"{fault}: CatalogUnavailableError after {took:.1f} s (bound {_bound(timeout, retries):.1f} s)")
    assert took < _bound(timeout, retries) + SLACK
    assert took >= timeout * (retries + 1) * 0.9  # each attempt had its full time
    assert proxy.counts[fault] == retries + 1, proxy.counts  # the stalled request was tried again, once
    msg = str(err.value)
    assert proxy.url in msg and f"after {retries + 1} attempts" in msg
    assert f"{timeout:g} s" in msg and "--catalog-timeout" in msg  # what happened and what to change


@pytest.mark.timeout(90)
def test_stalled_catalog_releases_the_lock_of_the_run(sample_url, tmp_path):
    """run_region against a catalog that never answers: the typed error in bounded time, the lock held
    meanwhile (a second writer is refused) and released after (the next run takes it at once)."""
    out = tmp_path / "stalled.zarr"
    opts = {"catalog_timeout": 1.5, "catalog_retries": 1, **FAST}
    errors: list[BaseException] = []
    with FaultProxy(sample_url, schedule=("hang",)) as proxy:

        def first() -> None:
            try:
                run_region(BBOX, SHORT, catalog=proxy.url, out=str(out), **opts)
            except BaseException as exc:  # checked below
                errors.append(exc)

        t0 = time.monotonic()
        runner = threading.Thread(target=first)
        runner.start()
        deadline = time.monotonic() + 30
        while not proxy.counts["hang"] and time.monotonic() < deadline:  # the first run is in its search
            time.sleep(0.05)
        with pytest.raises(StoreLockedError):
            run_region(BBOX, SHORT, catalog=proxy.url, out=str(out), **opts)
        runner.join(timeout=60)
        took = time.monotonic() - t0
        assert not runner.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], CatalogUnavailableError), errors
        print(f"run_region: CatalogUnavailableError after {took:.1f} s")
        assert took < _bound(1.5, 1) + SLACK
        assert not Path(f"{out}.lock").exists()
        # the next run takes the lock right away: it gets as far as the (still stalled) catalog
        with pytest.raises(CatalogUnavailableError):
            run_region(BBOX, SHORT, catalog=proxy.url, out=str(out), catalog_timeout=0.5, catalog_retries=0,
                       **FAST)
    assert not Path(f"{out}.lock").exists()
    assert CubeStore(str(out)).status() == "absent"  # nothing was written


@pytest.mark.timeout(90)
def test_cli_run_against_a_dripping_catalog_exits_2_in_bounded_time(sample_url, tmp_path):
    """``srcube run`` against a catalog that answers one byte per second: exit 2, the typed error's message,
    no traceback, in bounded time."""
    out = tmp_path / "cli.zarr"
    with FaultProxy(sample_url, schedule=("drip",)) as proxy:
        t0 = time.monotonic()
        res = CliRunner().invoke(cli.app, ["run", f"--bbox={','.join(map(str, BBOX))}", f"--dates={SHORT}",
                                           f"--catalog={proxy.url}", "--catalog-timeout=2", "--catalog-retries=0",
                                           "--model=bicubic", f"--out={out}"])
        took = time.monotonic() - t0
    print(f"srcube run: exit {res.exit_code} after {took:.1f} s")
    text = " ".join(res.output.split())
    assert res.exit_code == 2, text
    assert isinstance(res.exception, SystemExit) and "Traceback" not in text
    assert "no complete answer within 2 s" in text and "--catalog-timeout" in text
    assert took < _bound(2.0, 0) + SLACK
    assert not Path(f"{out}.lock").exists()


# --- token requests ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_planetary_computer_token_request_that_never_answers(monkeypatch):
    """Signing an href asks Planetary Computer's token endpoint (the package's own request has no timeout):
    one that never answers gives CatalogUnavailableError in bounded time, on whichever worker signs."""
    from planetary_computer import sas
    from planetary_computer.settings import Settings

    monkeypatch.setattr(sas, "TOKEN_CACHE", {})
    monkeypatch.setattr(Settings.get(), "sas_url", Settings.get().sas_url)  # restored after the test
    with FaultProxy("http://127.0.0.1:9", schedule=("hang",)) as proxy:
        access = PlanetaryComputerAccess(sas_url=f"{proxy.url}/api/sas/v1/token", timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(CatalogUnavailableError, match="no complete answer within 1 s") as err:
            access.prepare("http://srcubesample.blob.core.windows.net/archive/cogs/B04.tif")
        took = time.monotonic() - t0
    print(f"token endpoint: CatalogUnavailableError after {took:.1f} s")
    assert proxy.counts["hang"] == TOKEN_RETRIES + 1
    assert took < _bound(1.0, TOKEN_RETRIES) + SLACK
    assert "--network-timeout" in str(err.value)


@pytest.mark.timeout(60)
def test_bearer_token_request_that_never_answers():
    """Terrascope's OIDC endpoint stalling is the service being down (retried by the flow), not a refused
    password (AssetAuthError, as before, for a 401)."""
    from srcube.pipeline.search import access as acc

    with FaultProxy("http://127.0.0.1:9", schedule=("hang",)) as proxy:
        access = BearerTokenAccess(username="scientist", password="pw", token_url=f"{proxy.url}/token", timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(CatalogUnavailableError, match="no complete answer within 1 s"):
            access.bearer()
        took = time.monotonic() - t0
    acc._BEARER_CACHE.clear()
    print(f"bearer token endpoint: CatalogUnavailableError after {took:.1f} s")
    assert took < _bound(1.0, TOKEN_RETRIES) + SLACK


# --- asset reads, the object store, publishing, and the option on the workers -----------------------


@pytest.mark.timeout(60)
def test_asset_read_from_a_server_that_never_answers_ends_in_bounded_time():
    """GDAL's timeouts come from ``network_timeout``: a COG server that accepts and never answers fails the
    probe as network trouble (left to the retries, not taken for a bad file) in bounded time."""
    with FaultProxy("http://127.0.0.1:9", schedule=("hang",)) as proxy:
        settings = ReadSettings.capture(gdal_timeouts(1.0), defaults={"GDAL_HTTP_MAX_RETRY": "1"})
        t0 = time.monotonic()
        with pytest.raises(RasterioIOError, match=r"(?i)timed out|timeout"):
            probe_asset(f"{proxy.url}/cogs/B04.tif", settings=settings)
        took = time.monotonic() - t0
    print(f"asset read: RasterioIOError (network) after {took:.1f} s")
    assert took < 4 * 1.0 + SLACK


def test_network_timeout_sets_gdal_tokens_and_the_object_store(tmp_path, monkeypatch, dask_client):
    """One option for every network call but the catalog's: GDAL's timeouts (over the environment's when the
    option is given), the token requests' and an s3:// store's, on the client and on every worker."""
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "17")
    default = RegionJob.prepare(BBOX, SHORT, out=str(tmp_path / "a.zarr"), model="bicubic")
    assert default.plan.read_settings.as_dict()["GDAL_HTTP_TIMEOUT"] == "17"  # the environment's, as before
    assert default.plan.read_settings.as_dict()["GDAL_HTTP_CONNECTTIMEOUT"] == "60"
    job = RegionJob.prepare(BBOX, SHORT, out=str(tmp_path / "b.zarr"), model="bicubic", auth="planetary-computer",
                            network_timeout=13.0)
    gdal = job.plan.read_settings.as_dict()
    assert gdal["GDAL_HTTP_TIMEOUT"] == gdal["GDAL_HTTP_CONNECTTIMEOUT"] == "13"
    assert isinstance(job.plan.access, PlanetaryComputerAccess) and job.plan.access.timeout == 13.0
    register_on_workers(dask_client, job.plan.read_settings, job.plan.access)

    def inside() -> tuple[str, str, float]:
        settings, access = current()
        assert settings is not None
        opts = settings.as_dict()
        return opts["GDAL_HTTP_TIMEOUT"], opts["GDAL_HTTP_CONNECTTIMEOUT"], float(getattr(access, "timeout", 0))

    assert set(dask_client.run(inside).values()) == {("13", "13", 13.0)}
    # an s3:// store: botocore's timeouts unless the storage options set their own
    opts = job.opts.store_options("s3://cubes/x.zarr")
    assert opts == {"config_kwargs": {"connect_timeout": 13.0, "read_timeout": 13.0}}
    own = RunOptions(network_timeout=13.0, storage_options={"config_kwargs": {"read_timeout": 300}, "anon": True})
    assert own.store_options("s3://cubes/x.zarr") == {"anon": True,
                                                      "config_kwargs": {"read_timeout": 300, "connect_timeout": 13.0}}
    assert job.opts.store_options(str(tmp_path / "c.zarr")) is None  # a local path takes no options
    import s3fs

    fs = s3fs.S3FileSystem(key="k", secret="s", endpoint_url="http://127.0.0.1:9", skip_instance_cache=True, **opts)
    fs.connect()
    config = fs.s3.meta.config
    assert (config.connect_timeout, config.read_timeout) == (13.0, 13.0)


@pytest.mark.timeout(60)
def test_publish_to_a_dripping_api_gives_publish_error_in_bounded_time(sample_url, monkeypatch):
    from srcube.pipeline.write import publish as pub

    monkeypatch.setattr(pub, "RETRIES", 1)  # one retry instead of four: the same path, a shorter test
    with FaultProxy(sample_url, schedule=("drip",)) as proxy:
        t0 = time.monotonic()
        with pytest.raises(PublishError, match="no complete answer within 2 s"):
            pub.check_transactions(proxy.url, timeout=2.0)
        took = time.monotonic() - t0
    print(f"publish: PublishError after {took:.1f} s")
    assert proxy.counts["drip"] == 2
    assert took < _bound(2.0, 1) + SLACK

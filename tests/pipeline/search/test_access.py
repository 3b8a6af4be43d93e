"""Reading from real services: signed hrefs that expire, settings and credentials on every worker, a
Terrascope-like bearer token, CDSE-like S3 keys. Each against a loopback server that refuses what the
real service refuses (tests/servers.py; moto's S3 server with IAM authentication on)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import rasterio

from srcube.pipeline import run_region
from srcube.pipeline.errors import AssetAuthError
from srcube.pipeline.search.access import (
    BearerTokenAccess,
    PlanetaryComputerAccess,
    ReadSettings,
    S3KeysAccess,
    current,
    with_access,
)
from srcube.pipeline.testing import sample, sample_probav
from srcube.pipeline.testing.stac_server import StacServer
from tests.support.servers import BearerService, BlobService, free_port, rehosted_catalog

pytestmark = pytest.mark.integration
BBOX = sample.DEFAULT_BBOX
SHORT = "2024-06-12/2024-06-22"  # two clear days
FAST = {"tile": 64, "model": "bicubic"}  # many small reads, so a run lasts longer than a token


@pytest.fixture(scope="module")
def reference(sample_url, dask_client, tmp_path_factory):
    """The request read from local files, with nothing to sign."""
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    return run_region(BBOX, SHORT, catalog=sample_url, out=str(out), client=dask_client, **FAST)


def _same(cube, reference) -> None:
    for name in ("reflectance", "clear", "clear_count"):
        np.testing.assert_array_equal(cube[name].values, reference[name].values, err_msg=name)


# --- signed hrefs that expire -------------------------------------------------------------------


@pytest.fixture
def blob_catalog(sample_dir, tmp_path, monkeypatch):
    """The sample archive in 'blob storage' whose SAS tokens die after 100 requests (the token endpoint says
    they last an hour), behind a real STAC API with unsigned hrefs."""
    from planetary_computer.settings import Settings

    saved = Settings.get().sas_url
    with BlobService(sample_dir, uses=100) as blob:
        root = rehosted_catalog(sample_dir, tmp_path / "blob-catalog", blob.href)
        with StacServer(root) as stac:
            monkeypatch.setenv("PC_SDK_SAS_URL", blob.sas_url)
            monkeypatch.setenv("GDAL_HTTP_PROXY", blob.address)  # GDAL reaches *.blob.core.windows.net here
            yield stac.url, blob
    Settings.get().sas_url = saved


@pytest.mark.slow  # ~50 s; in the default run a dying token is renewed between a file's open and its first read
# (test_a_token_dying_between_head_and_first_read_is_renewed) and terrascope tokens expire and renew during a run
def test_signed_once_dies_signed_at_read_time_lives(blob_catalog, dask_client, reference, tmp_path):
    url, blob = blob_catalog
    items = json.loads((tmp_path / "blob-catalog" / "items.json").read_text())["features"]
    signed = PlanetaryComputerAccess.capture().prepare(items[0]["assets"]["B04"]["href"])[0]
    assert "sig=" in signed
    with rasterio.open(signed) as src:  # a fresh signature reads
        src.read(1, window=((0, 8), (0, 8)))
    blob.revoke()
    with pytest.raises(rasterio.errors.RasterioIOError, match="403"):  # as if signed at search time: dead now
        rasterio.open(signed + "&srcube-test=again")  # (another URL, so GDAL asks the server again)

    before = blob.counts
    cube = run_region(BBOX, SHORT, catalog=url, auth="planetary-computer", out=str(tmp_path / "pc.zarr"),
                      client=dask_client, **FAST)
    # tokens died during the run (403s), reads re-signed and went on; the cube is the unexpiring one
    during = blob.counts - before
    assert during["refused"] >= 1 and during["tokens"] >= 2 and during["reads"] > 30, during
    _same(cube, reference)
    assert "sig=" not in json.dumps(cube.attrs)  # nothing signed in the cube


def test_a_token_dying_between_head_and_first_read_is_renewed(sample_dir, tmp_path, monkeypatch):
    """GDAL opens a remote file with a HEAD, then a range GET. A token that dies in between answers the GET with
    a 403 whose XML body is no raster: GDAL says "not recognized as being in a supported file format", not 403
    (seen in CI). With credentials that is renewed and read again; a file that is not a raster still fails."""
    from planetary_computer.settings import Settings

    saved = Settings.get().sas_url
    tif = next(iter(sorted(sample_dir.rglob("*.tif"))))
    (tmp_path / "not-a-raster.tif").write_bytes(b"<html>not a raster</html>" * 100)
    try:
        with BlobService(sample_dir, uses=3) as blob:  # HEAD + GET header + GET block
            monkeypatch.setenv("PC_SDK_SAS_URL", blob.sas_url)
            Settings.get().sas_url = blob.sas_url
            access, settings = PlanetaryComputerAccess.capture(), ReadSettings.capture({"GDAL_HTTP_PROXY":
                                                                                          blob.address})
            href = blob.href(tif)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": blob.url}))
            for _ in range(2):  # the cached token has one use left: GDAL's HEAD
                opener.open(access.prepare(href)[0], timeout=5).close()

            def read(target: str) -> np.ndarray:
                with rasterio.open(target) as src:
                    return src.read(1, window=((0, 8), (0, 8)))

            block = with_access(href, access, settings, read)
            assert block.shape == (8, 8) and dict(blob.counts)["tokens"] == 2, blob.counts
            with rasterio.open(tif) as src:
                np.testing.assert_array_equal(block, src.read(1, window=((0, 8), (0, 8))))
        with BlobService(tmp_path) as other:  # a file that is no raster: renewed once, then raised as it is
            monkeypatch.setenv("PC_SDK_SAS_URL", other.sas_url)
            Settings.get().sas_url = other.sas_url
            access, settings = PlanetaryComputerAccess.capture(), ReadSettings.capture({"GDAL_HTTP_PROXY":
                                                                                          other.address})
            with pytest.raises(rasterio.errors.RasterioIOError, match="not recognized"):
                with_access(other.href(tmp_path / "not-a-raster.tif"), access, settings, read)
            assert dict(other.counts)["tokens"] == 2, other.counts
    finally:
        Settings.get().sas_url = saved


# --- GDAL settings and credentials on every worker ----------------------------------------------


def test_read_settings_and_credentials_reach_every_worker_process(sample_url, dask_client, tmp_path, monkeypatch):
    """The session's LocalCluster was started before these variables existed: its worker processes
    get them only through srcube (the reader driver in the graph and the worker plugin)."""
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "17")
    monkeypatch.setenv("GDAL_HTTP_USERAGENT", "srcube-test")
    monkeypatch.setenv("CDSE_S3_ACCESS_KEY", "worker-key-id")
    monkeypatch.setenv("CDSE_S3_SECRET_KEY", "worker-secret-value")
    before = dask_client.run(lambda: os.environ.get("GDAL_HTTP_USERAGENT"))
    assert set(before.values()) == {None}  # not inherited
    run_region(BBOX, "2024-06-12/2024-06-12", catalog=sample_url, auth="cdse", out=str(tmp_path / "w.zarr"),
               client=dask_client, **FAST)

    def inside() -> dict:
        import odc.loader._rio as odc_rio
        import rasterio

        from srcube.pipeline.search.access import current, read_env

        settings, access = current()
        with read_env(settings):
            gdal = rasterio.env.getenv()
        return {"pid": os.getpid(), "timeout": gdal.get("GDAL_HTTP_TIMEOUT"), "agent": gdal.get("GDAL_HTTP_USERAGENT"),
                "odc": odc_rio._CFG._gdal_opts.get("GDAL_HTTP_TIMEOUT"), "kind": type(access).__name__,
                "key": getattr(access, "access_key", None)}

    seen = dask_client.run(inside)
    assert len({s["pid"] for s in seen.values()}) == len(seen) >= 2  # separate processes
    for s in seen.values():
        assert s == {**s, "timeout": "17", "agent": "srcube-test", "odc": "17", "kind": "S3KeysAccess",
                     "key": "worker-key-id"}, s
    settings, _ = current()
    assert settings is not None and settings.as_dict()["GDAL_HTTP_TIMEOUT"] == "17"


def test_read_settings_capture():
    s = ReadSettings.capture({"GDAL_HTTP_MAX_RETRY": "9"}, environ={"GDAL_CACHEMAX": "256", "GDAL_DATA": "/x",
                                                                      "HOME": "/root"})
    opts = s.as_dict()
    assert opts["GDAL_CACHEMAX"] == "256" and opts["GDAL_HTTP_MAX_RETRY"] == "9"
    assert "GDAL_DATA" not in opts and "HOME" not in opts  # machine-local paths and non-GDAL variables stay


# --- Terrascope: a bearer token -----------------------------------------------------------------


@pytest.fixture
def bearer_catalog(sample_dir, tmp_path):
    """The PROBA-V sample behind a bearer-token proxy (token endpoint, STAC API and files)."""
    port = free_port()  # the items' hrefs name the proxy, which must know the STAC API behind it
    hrefs = BearerService("", sample_dir, port=port)
    root = rehosted_catalog(sample_dir, tmp_path / "bearer-catalog", hrefs.href, probav=True)
    with StacServer(root) as stac, BearerService(stac.url, sample_dir, ttl=2.0, port=port) as svc:
        yield svc


PV = {"collection": sample_probav.COLLECTION_ID, "bands": ["RED", "NIR"]}
PV_BBOX, PV_DATES = (4.3, 51.05, 4.7, 51.45), "2024-06-01/2024-06-06"


def test_terrascope_bearer_token_end_to_end(bearer_catalog, sample_url, dask_client, tmp_path, monkeypatch):
    svc = bearer_catalog
    ref = run_region(PV_BBOX, PV_DATES, catalog=sample_url, out=str(tmp_path / "ref.zarr"), client=dask_client, **PV)
    for var in ("TERRASCOPE_TOKEN", "TERRASCOPE_USERNAME", "TERRASCOPE_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERRASCOPE_TOKEN_URL", svc.token_url)
    # without credentials: refused before any work, saying what to set
    with pytest.raises(AssetAuthError, match="TERRASCOPE_TOKEN"):
        run_region(PV_BBOX, PV_DATES, catalog=svc.stac_url, auth="terrascope", out=str(tmp_path / "x.zarr"),
                   client=dask_client, **PV)
    # the server refuses an anonymous read
    href = json.loads((tmp_path / "bearer-catalog" / "items.json").read_text())["features"][0]["assets"]
    with pytest.raises(rasterio.errors.RasterioIOError, match="401"):
        rasterio.open(next(iter(href.values()))["href"])
    # a wrong password: a clear error
    monkeypatch.setenv("TERRASCOPE_USERNAME", svc.user)
    monkeypatch.setenv("TERRASCOPE_PASSWORD", "wrong")
    with pytest.raises(AssetAuthError, match="bearer token"):
        run_region(PV_BBOX, PV_DATES, catalog=svc.stac_url, auth="terrascope", out=str(tmp_path / "y.zarr"),
                   client=dask_client, **PV)
    # user and password: tokens fetched, renewed as they expire (2 s), on the client and on the workers
    monkeypatch.setenv("TERRASCOPE_PASSWORD", svc.password)
    cube = run_region(PV_BBOX, PV_DATES, catalog=svc.stac_url, auth="terrascope", out=str(tmp_path / "ts.zarr"),
                      client=dask_client, tile=32, **PV)
    assert svc.counts["tokens"] >= 2 and svc.counts["reads"] > 0 and svc.counts["stac"] > 0, svc.counts
    _same(cube, ref)
    # a token handed out of band (TERRASCOPE_TOKEN) works too; secrets never reach the cube's attributes
    monkeypatch.setenv("TERRASCOPE_TOKEN", svc.static)
    cube2 = run_region(PV_BBOX, PV_DATES, catalog=svc.stac_url, auth="terrascope", out=str(tmp_path / "t2.zarr"),
                       client=dask_client, **PV)
    _same(cube2, ref)
    text = json.dumps(cube2.attrs)
    assert svc.static not in text and svc.password not in text


def test_bearer_access_never_shows_its_secrets():
    access = BearerTokenAccess(token="abcdef-secret", username="u", password="pw-secret")
    assert "secret" not in repr(access)
    assert "secret" not in repr(S3KeysAccess("AKIDSECRETX", "topsecret"))


# --- CDSE: s3://eodata with its own keys --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def eodata(sample_dir, tmp_path_factory):
    """moto's S3 server in its own process with IAM authentication on: only requests signed with the
    access key made here (and its secret) are served. The sample archive is uploaded to bucket eodata."""
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency (pip install -e .[test])")
    import boto3

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # create user, key and policy unauthenticated
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.2)
        anon = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "bootstrap",
                "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **anon)
        iam.create_user(UserName="cdse")
        key = iam.create_access_key(UserName="cdse")["AccessKey"]
        iam.put_user_policy(UserName="cdse", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="eodata")
        for path in (sample_dir / "cogs").rglob("*.tif"):
            s3.upload_file(str(path), "eodata", path.relative_to(sample_dir).as_posix())
        yield endpoint, key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cdse_s3_keys_end_to_end(eodata, sample_dir, dask_client, reference, tmp_path, monkeypatch):
    endpoint, key_id, secret = eodata
    root = rehosted_catalog(sample_dir, tmp_path / "cdse-catalog",
                            lambda p: f"s3://eodata/{Path(p).relative_to(sample_dir).as_posix()}")
    monkeypatch.setenv("CDSE_S3_ENDPOINT", endpoint)
    for var in ("CDSE_S3_ACCESS_KEY", "CDSE_S3_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    # the output store's keys are other keys: they must not be used for eodata
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "output-store-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "output-store-secret")
    with StacServer(root) as stac:
        with pytest.raises(AssetAuthError, match="CDSE_S3_ACCESS_KEY"):  # no keys: refused before any work
            run_region(BBOX, SHORT, catalog=stac.url, auth="cdse", out=str(tmp_path / "a.zarr"), client=dask_client)
        monkeypatch.setenv("CDSE_S3_ACCESS_KEY", key_id)
        monkeypatch.setenv("CDSE_S3_SECRET_KEY", "not-the-secret")
        with pytest.raises(AssetAuthError, match="refused"):  # wrong secret: the server says no, clearly
            run_region(BBOX, SHORT, catalog=stac.url, auth="cdse", out=str(tmp_path / "b.zarr"), client=dask_client)
        monkeypatch.setenv("CDSE_S3_SECRET_KEY", secret)
        cube = run_region(BBOX, SHORT, catalog=stac.url, auth="cdse", out=str(tmp_path / "c.zarr"),
                          client=dask_client, **FAST)
    _same(cube, reference)
    assert secret not in json.dumps(cube.attrs)
    # the provider is told from the s3://eodata hrefs: CDSE keeps ESA's offset, as the sample's pixels do
    frames = json.loads(cube.attrs["frames"])
    assert all(h["offset_applied"] == -0.1 for f in frames for h in f["harmonization"])

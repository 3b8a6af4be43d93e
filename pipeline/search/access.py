"""How srcube reads asset pixels: signing at read time, credentials, and GDAL settings on every worker.

Real catalogs differ in what a read needs:

* Planetary Computer: asset hrefs need a SAS token that expires (about an hour). srcube never stores a
  signed href: items are searched and passed around unsigned, and each read signs its href right
  before it opens the file (the ``planetary_computer`` package caches tokens and renews them a minute
  before they expire). A read refused with HTTP 403 drops the cached token, signs again and retries
  once before it counts as failed.
* Terrascope (PROBA-V): files need an OIDC bearer token (``TERRASCOPE_TOKEN``, or one fetched with
  ``TERRASCOPE_USERNAME``/``TERRASCOPE_PASSWORD`` from Terrascope's token endpoint and renewed
  before it expires), sent as an ``Authorization`` header by GDAL.
* CDSE: assets are ``s3://eodata/...`` on CDSE's own S3 endpoint, with CDSE S3 keys
  (``CDSE_S3_ACCESS_KEY``/``CDSE_S3_SECRET_KEY``), kept apart from any AWS keys the output store uses.

An :class:`AssetAccess` says, per href, what to open and with which GDAL options. It is a small
picklable object: it travels inside the Dask graph (the odc-stac reader driver
:class:`AccessDriver`) and in a worker plugin (:class:`ReadSettingsPlugin`), so the settings and
credentials captured on the client are restored on every worker, whatever process or pod it is.
:class:`ReadSettings` holds the GDAL options themselves: srcube's cloud defaults, any ``GDAL_*`` /
``CPL_*`` / ``VSI_*`` variables of the client's environment, and explicit overrides.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import glob
import logging
import os
import re
import threading
import time
import urllib.parse
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import rasterio
import rasterio.errors
import requests
from distributed.diagnostics.plugin import WorkerPlugin
from odc.loader._rio import RioDriver, RioReader, rio_read
from rasterio.session import DummySession, Session

from srcube.pipeline.network import DeadlineSession, gdal_timeouts
from srcube.pipeline.search.catalog import ACCESS_KINDS

log = logging.getLogger(__name__)

# odc-stac's warps go through un-georeferenced scratch datasets, and rasterio says so on every read
# (from reader threads, where a catch_warnings block would race): that one message only, from rasterio.warp
warnings.filterwarnings("ignore", message="Dataset has no geotransform, gcps, or rpcs",
                        category=rasterio.errors.NotGeoreferencedWarning, module="rasterio.warp")

#: seconds a token request or an asset read may take (the default of the ``network_timeout`` option)
NETWORK_TIMEOUT = 60.0
#: GDAL settings for remote COGs (odc-stac's cloud defaults, plus srcube's timeouts: connecting, and a whole
#: transfer, which bounds a server that sends a byte now and then as well as one that sends nothing)
GDAL_DEFAULTS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    **gdal_timeouts(NETWORK_TIMEOUT),
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.TIFF,.jp2,.JP2",
}
#: environment variables of the client that are GDAL configuration and travel to the workers
_GDAL_ENV = re.compile(r"^(GDAL_|CPL_|VSI_|CPL_VSIL_)[A-Z0-9_]+$")
#: GDAL options that are not the client's to hand on (paths of this machine's installation)
_LOCAL_ONLY = {"GDAL_DATA", "GDAL_DRIVER_PATH", "CPL_DEBUG", "CPL_LOG"}


@dataclass(frozen=True)
class ReadSettings:
    """GDAL configuration for every read, on the client and on every worker."""

    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def capture(cls, overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None, *,
                defaults: Mapping[str, str] | None = None) -> ReadSettings:
        """srcube's defaults (updated with ``defaults``: the run's timeouts), then the client's
        ``GDAL_*``/``CPL_*``/``VSI_*`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        opts = {**GDAL_DEFAULTS, **dict(defaults or {})}
        opts.update({k: v for k, v in env.items() if _GDAL_ENV.match(k) and k not in _LOCAL_ONLY})
        opts.update({str(k): str(v) for k, v in (overrides or {}).items()})
        return cls(tuple(sorted(opts.items())))

    def as_dict(self) -> dict[str, str]:
        return dict(self.options)


# --- credentials and signing ----------------------------------------------------------------------

#: what GDAL says when a server refused the credentials (401/403, S3 error codes)
_AUTH_REFUSED = re.compile(r"HTTP response code: 40[13]\b|\b40[13]\b.*(forbidden|unauthori[sz]ed)|Access ?Denied|"
                           r"InvalidAccessKeyId|SignatureDoesNotMatch|signature we calculated does not match|"
                           r"Access Key Id you provided does not exist|ExpiredToken|token has expired|"
                           r"AuthenticationFailed|Server failed to authenticate", re.I)


def refused(exc: BaseException) -> bool:
    """Whether a read failed because the server refused its credentials (expired token, missing auth)."""
    return bool(_AUTH_REFUSED.search(str(exc)))


class AssetAccess:
    """Plain access: hrefs are opened as they are, with no credentials."""

    name = "none"
    credentials = False  # whether reads carry credentials that can expire or be refused

    def prepare(self, href: str) -> tuple[str, dict[str, str], Session | None]:
        """(href to open, extra GDAL options, rasterio session or None) for one read, right before it."""
        return href, {}, None

    def refresh(self, href: str) -> None:
        """Forget cached credentials for ``href`` after the server refused them."""

    def describe(self) -> str:
        return self.name

    def check(self) -> None:
        """Raise :class:`pipeline.errors.AssetAuthError` before any work when credentials are missing."""


def _clear_gdal_http_cache(href: str) -> None:
    """Drop GDAL's cached answers (size, existence, blocks) for ``href``: after a refused read with the
    same URL and new credentials, GDAL would otherwise answer from the cached failure."""
    lib = _gdal_lib()
    if lib is None:
        return
    prefix = href if href.startswith("/vsi") else f"/vsicurl/{href}"
    with contextlib.suppress(Exception):
        lib.VSICurlPartialClearCache(prefix.encode())


_GDAL: list[Any] = []


def _gdal_lib() -> Any | None:
    if not _GDAL:
        lib = None
        libs = sorted(glob.glob(os.path.join(os.path.dirname(rasterio.__file__), os.pardir, "rasterio.libs",
                                             "libgdal*.so*")))
        for path in libs:
            with contextlib.suppress(OSError):
                candidate = ctypes.CDLL(path)
                if hasattr(candidate, "VSICurlPartialClearCache"):
                    candidate.VSICurlPartialClearCache.argtypes = [ctypes.c_char_p]
                    lib = candidate
                    break
        _GDAL.append(lib)
    return _GDAL[0]


@dataclass(frozen=True)
class PlanetaryComputerAccess(AssetAccess):
    """Planetary Computer: sign each href at read time with the ``planetary_computer`` package.

    ``sas_url`` and ``subscription_key`` are captured from the client (``PC_SDK_SAS_URL``,
    ``PC_SDK_SUBSCRIPTION_KEY``) and restored in the worker process before signing.
    """

    sas_url: str | None = None
    subscription_key: str | None = field(default=None, repr=False)
    timeout: float = NETWORK_TIMEOUT  # seconds per attempt of a token request
    name = "planetary-computer"
    credentials = True

    @classmethod
    def capture(cls, timeout: float = NETWORK_TIMEOUT) -> PlanetaryComputerAccess:
        return cls(os.environ.get("PC_SDK_SAS_URL") or None, os.environ.get("PC_SDK_SUBSCRIPTION_KEY") or None,
                   timeout)

    def _settings(self) -> None:
        from planetary_computer.settings import Settings

        settings = Settings.get()
        if self.sas_url and settings.sas_url != self.sas_url:
            settings.sas_url = self.sas_url
        if self.subscription_key and settings.subscription_key != self.subscription_key:
            settings.subscription_key = self.subscription_key

    def prepare(self, href: str) -> tuple[str, dict[str, str], Session | None]:
        import planetary_computer

        self._settings()
        self._fetch_token(href)
        return planetary_computer.sign_url(href), {}, None

    def _fetch_token(self, href: str) -> None:
        """Put the SAS token of ``href``'s container in the ``planetary_computer`` cache when it lacks one with a
        minute left (as the package would), fetched with this access's timeout: the package's own request has
        none, and a token endpoint that never answers would hang every read."""
        from planetary_computer import sas
        from planetary_computer.settings import Settings

        parsed = urllib.parse.urlparse(href.rstrip("/"))
        if not parsed.netloc.endswith(sas.BLOB_STORAGE_DOMAIN) or parsed.netloc == _PC_PUBLIC or \
                set(urllib.parse.parse_qs(parsed.query)) & {"st", "se", "sp"}:  # not signed by the package
            return
        try:
            account, container = sas.parse_blob_url(parsed)
        except ValueError:
            return  # the package leaves it unsigned too
        settings = Settings.get()
        url = f"{settings.sas_url}/{account}/{container}"
        cached = sas.TOKEN_CACHE.get(url)
        if cached is not None and cached.ttl() >= 60:
            return
        headers = {"Ocp-Apim-Subscription-Key": settings.subscription_key} if settings.subscription_key else {}
        doc = _token_request("a SAS token", url, self.timeout, "PC_SDK_SUBSCRIPTION_KEY (or none)", headers=headers)
        try:
            sas.TOKEN_CACHE[url] = sas.SASToken(**doc)
        except ValueError as exc:  # pydantic's ValidationError
            from srcube.pipeline.errors import CatalogUnavailableError

            raise CatalogUnavailableError(f"getting a SAS token: {url} answered JSON that is not one ({exc}); check "
                                          "PC_SDK_SAS_URL") from None

    def refresh(self, href: str) -> None:
        from planetary_computer import sas

        try:
            account, container = sas.parse_blob_url(urllib.parse.urlparse(href))
        except Exception:  # not a blob URL: nothing was signed
            return
        for key in [k for k in sas.TOKEN_CACHE if k.endswith(f"/{account}/{container}")]:
            sas.TOKEN_CACHE.pop(key, None)


#: the blob account the planetary_computer package never signs (public thumbnails)
_PC_PUBLIC = "ai4edatasetspublicassets.blob.core.windows.net"

# tokens fetched with a password, per (token url, user): (token, monotonic expiry)
_BEARER_CACHE: dict[tuple[str, str], tuple[str, float]] = {}
_BEARER_LOCK = threading.Lock()

TERRASCOPE_TOKEN_URL = "https://sso.terrascope.be/auth/realms/terrascope/protocol/openid-connect/token"


@dataclass(frozen=True)
class BearerTokenAccess(AssetAccess):
    """An OIDC bearer token in the ``Authorization`` header of every GDAL request (Terrascope).

    Either a ``token`` given as it is, or ``username``/``password`` exchanged at ``token_url``
    (resource-owner password grant, client ``client_id``) for a token that is renewed 30 s before
    it expires and after a refused read.
    """

    token: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token_url: str = TERRASCOPE_TOKEN_URL
    client_id: str = "public"
    name = "bearer"
    credentials = True
    env_prefix: str = "TERRASCOPE"
    timeout: float = NETWORK_TIMEOUT  # seconds per attempt of a token request

    @classmethod
    def capture(cls, prefix: str = "TERRASCOPE", token_url: str = TERRASCOPE_TOKEN_URL,
                timeout: float = NETWORK_TIMEOUT) -> BearerTokenAccess:
        env = os.environ
        return cls(env.get(f"{prefix}_TOKEN") or None, env.get(f"{prefix}_USERNAME") or None,
                   env.get(f"{prefix}_PASSWORD") or None, env.get(f"{prefix}_TOKEN_URL") or token_url,
                   env.get(f"{prefix}_CLIENT_ID") or "public", env_prefix=prefix, timeout=timeout)

    def check(self) -> None:
        from srcube.pipeline.errors import AssetAuthError

        if not self.token and not (self.username and self.password):
            p = self.env_prefix
            raise AssetAuthError(f"reading these assets needs a bearer token: set {p}_TOKEN, or {p}_USERNAME and "
                                 f"{p}_PASSWORD (exchanged at {self.token_url}); on Kubernetes put them in the "
                                 "srcube-catalog-credentials Secret")

    def _fetch(self) -> str:
        key = (self.token_url, str(self.username))
        with _BEARER_LOCK:
            cached = _BEARER_CACHE.get(key)
            if cached is not None and cached[1] > time.monotonic():
                return cached[0]
            form = {"grant_type": "password", "client_id": self.client_id, "username": self.username,
                    "password": self.password}
            doc = _token_request("a bearer token", self.token_url, self.timeout,
                                 f"{self.env_prefix}_USERNAME/_PASSWORD (user {self.username})", data=form)
            token, life = doc.get("access_token"), doc.get("expires_in", 300)
            if not isinstance(token, str) or not token or not isinstance(life, (int, float)):
                from srcube.pipeline.errors import CatalogUnavailableError

                raise CatalogUnavailableError(f"getting a bearer token: {self.token_url} answered JSON without an "
                                              "access_token (or with a non-numeric expires_in); is it an OIDC token "
                                              f"endpoint? Check {self.env_prefix}_TOKEN_URL")
            life = float(life)
            _BEARER_CACHE[key] = (token, time.monotonic() + max(1.0, life - min(30.0, life / 4)))
            return token

    def bearer(self) -> str:
        return self.token or self._fetch()

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bearer()}"}

    def prepare(self, href: str) -> tuple[str, dict[str, str], Session | None]:
        if "://" not in href or href.startswith("file:"):
            return href, {}, None
        return href, {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {self.bearer()}"}, None

    def refresh(self, href: str) -> None:
        if self.username:
            with _BEARER_LOCK:
                _BEARER_CACHE.pop((self.token_url, str(self.username)), None)
        _clear_gdal_http_cache(href)


#: tries after the first of a token request that failed on the network or with HTTP 429/5xx
TOKEN_RETRIES = 2


def _token_request(what: str, url: str, timeout: float, credentials: str, *, headers: Mapping[str, str] | None = None,
                   data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON answer of a token endpoint (GET, or POST of the form ``data``), each attempt within ``timeout`` s
    (see :class:`~srcube.pipeline.network.DeadlineSession`). A refusal (HTTP 400/401/403) is an
    :class:`AssetAuthError` naming ``credentials``; no answer, or a server error after the retries, a
    :class:`CatalogUnavailableError` (worth retrying later)."""
    from srcube.pipeline.errors import AssetAuthError, CatalogUnavailableError

    t0 = time.monotonic()
    try:
        with DeadlineSession(timeout, TOKEN_RETRIES) as session:
            resp = session.get(url, headers=headers) if data is None else session.post(url, data=data, headers=headers)
            if resp.status_code in (400, 401, 403):
                raise AssetAuthError(f"could not get {what}: {url} refused the request (HTTP {resp.status_code}: "
                                     f"{resp.text.strip()[:200]}); check {credentials}")
            resp.raise_for_status()
            doc = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise CatalogUnavailableError(
            f"getting {what} from {url} failed after {TOKEN_RETRIES + 1} attempts over {time.monotonic() - t0:.1f} s "
            f"(each allowed {timeout:g} s): {exc}. Check that the token endpoint is up and reachable from here; "
            f"a slow one needs a longer --network-timeout (network_timeout=, now {timeout:g} s)") from exc
    if not isinstance(doc, dict):
        raise CatalogUnavailableError(f"getting {what}: {url} answered {type(doc).__name__} JSON, not a token")
    return doc


class _S3KeySession(Session):
    """A rasterio session with explicit S3 keys and endpoint (no boto3, no other AWS settings)."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self._options = dict(options)

    @classmethod
    def hascreds(cls, config: Mapping[str, Any]) -> bool:
        return "AWS_ACCESS_KEY_ID" in config and "AWS_SECRET_ACCESS_KEY" in config

    def get_credential_options(self) -> dict[str, str]:
        return dict(self._options)


@dataclass(frozen=True)
class S3KeysAccess(AssetAccess):
    """``s3://`` assets on an S3-compatible endpoint with their own keys (CDSE ``eodata``).

    Read from ``{prefix}_ACCESS_KEY``, ``{prefix}_SECRET_KEY``, ``{prefix}_ENDPOINT`` (host[:port]) and
    ``{prefix}_HTTPS`` (``YES``/``NO``); the keys go to GDAL only for these reads, never into the
    process environment, so they do not mix with the keys of the output object store.
    """

    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    endpoint: str = "eodata.dataspace.copernicus.eu"
    https: bool = True
    region: str = "default"
    env_prefix: str = "CDSE_S3"
    name = "s3-keys"
    credentials = True

    @classmethod
    def capture(cls, prefix: str = "CDSE_S3", endpoint: str = "eodata.dataspace.copernicus.eu") -> S3KeysAccess:
        env = os.environ
        raw = env.get(f"{prefix}_ENDPOINT") or endpoint
        https = env.get(f"{prefix}_HTTPS", "").upper() not in ("NO", "FALSE", "0") and not raw.startswith("http://")
        host = re.sub(r"^https?://", "", raw).rstrip("/")
        return cls(env.get(f"{prefix}_ACCESS_KEY") or None, env.get(f"{prefix}_SECRET_KEY") or None, host, https,
                   env.get(f"{prefix}_REGION") or "default", env_prefix=prefix)

    def check(self) -> None:
        from srcube.pipeline.errors import AssetAuthError

        if not (self.access_key and self.secret_key):
            p = self.env_prefix
            raise AssetAuthError(f"the s3:// assets of this catalog need S3 keys for {self.endpoint}: set "
                                 f"{p}_ACCESS_KEY and {p}_SECRET_KEY (CDSE: create them at "
                                 "https://eodata-s3keysmanager.dataspace.copernicus.eu); on Kubernetes put them in "
                                 "the srcube-catalog-credentials Secret")

    def prepare(self, href: str) -> tuple[str, dict[str, str], Session | None]:
        if not href.startswith(("s3://", "/vsis3/")):
            return href, {}, None
        opts = {"AWS_S3_ENDPOINT": self.endpoint, "AWS_VIRTUAL_HOSTING": "FALSE",
                "AWS_HTTPS": "YES" if self.https else "NO", "AWS_REGION": self.region}
        creds = {**opts, "AWS_ACCESS_KEY_ID": str(self.access_key or ""),
                 "AWS_SECRET_ACCESS_KEY": str(self.secret_key or "")}
        return href, opts, _S3KeySession(creds)

    def refresh(self, href: str) -> None:
        _clear_gdal_http_cache(href)


def access_for(kind: str, *, timeout: float = NETWORK_TIMEOUT) -> AssetAccess:
    """The access of a kind, with credentials captured from this process's environment; its token requests
    (if any) take at most ``timeout`` s per attempt."""
    if kind in ("none", ""):
        return AssetAccess()
    if kind == "planetary-computer":
        return PlanetaryComputerAccess.capture(timeout)
    if kind == "terrascope":
        return BearerTokenAccess.capture("TERRASCOPE", timeout=timeout)
    if kind == "cdse":
        return S3KeysAccess.capture("CDSE_S3")
    if kind == "bearer":  # any catalog: SRCUBE_ASSET_TOKEN or SRCUBE_ASSET_USERNAME/_PASSWORD/_TOKEN_URL
        return BearerTokenAccess.capture("SRCUBE_ASSET", timeout=timeout)
    if kind == "s3-keys":  # any S3-compatible endpoint: SRCUBE_ASSET_S3_ACCESS_KEY ...
        return S3KeysAccess.capture("SRCUBE_ASSET_S3", endpoint="")
    raise ValueError(f"unknown asset access {kind!r}; one of {', '.join(ACCESS_KINDS)}")



# --- reads ------------------------------------------------------------------------------------------

T = TypeVar("T")


@contextlib.contextmanager
def read_env(settings: ReadSettings, opts: Mapping[str, str] | None = None,
             session: Session | None = None) -> Iterator[None]:
    """A rasterio environment with ``settings`` (and one read's extra options and session)."""
    with rasterio.Env(session=session or DummySession(), **{**settings.as_dict(), **dict(opts or {})}):
        yield


def with_access(href: str, access: AssetAccess, settings: ReadSettings, read: Callable[[str], T]) -> T:
    """``read(prepared_href)`` inside the read environment. When the access holds credentials and the read
    fails (refused outright, or a block read failing after the credentials expired mid-read), renew them and
    try once more; a second refusal is an :class:`AssetAuthError` (not worth retrying)."""
    for attempt in (0, 1):
        target, opts, session = access.prepare(href)
        try:
            with read_env(settings, opts, session):
                return read(target)
        except rasterio.errors.RasterioIOError as exc:
            if not access.credentials or (attempt == 0 and not (refused(exc) or _READ_FAILED in str(exc)
                                                                 or _OPEN_FAILED in str(exc))):
                raise
            if attempt == 0:
                log.info("read of %s failed (%s); renewing credentials and trying again", _redacted(href),
                         _redacted(str(exc)))
                access.refresh(target)
                continue
            if not refused(exc):
                raise
            from srcube.pipeline.errors import AssetAuthError

            raise AssetAuthError(f"the server refused to read {_redacted(href)} with the {access.describe()} "
                                 f"credentials, also after renewing them: {_redacted(str(exc))}; check the "
                                 "credentials (see `srcube catalogs`) and that the account may read this "
                                 "collection") from exc
    raise AssertionError("unreachable")


#: what rasterio says when a block read failed (GDAL's error, e.g. a 403 on a range request, is logged before)
_READ_FAILED = "Read failed"
#: what GDAL says when the credentials died between its HEAD and its first range GET (the GET's 403 body is
#: no raster): with credentials, renewed and tried once more; a second failure is raised as it is
_OPEN_FAILED = "not recognized as being in a supported file format"


def _redacted(href: str) -> str:
    from srcube.pipeline.redact import redact

    return redact(href)


# --- odc-stac reader driver -------------------------------------------------------------------------


class _Reader(RioReader):
    """odc-stac's rasterio reader, with the href prepared (signed, credentials) right before each read."""

    def __init__(self, src: Any, ctx: Any, drv: AccessDriver) -> None:
        super().__init__(src, ctx)
        self._drv = drv

    def read(self, cfg: Any, dst_geobox: Any, *, dst: Any = None, selection: Any = None) -> Any:
        def run(href: str) -> Any:
            return rio_read(replace(self._src, uri=href), cfg, dst_geobox, dst=dst, selection=selection)

        return with_access(self._src.uri, self._drv.access, self._drv.settings, run)


class _LocalContext:
    """Per-load local context of the reader (odc-loader's protocol)."""


class AccessDriver(RioDriver):
    """An odc-stac reader driver (``odc.stac.load(driver=...)``) that reads with ``settings`` and prepares
    each href with ``access`` at read time, on whichever worker the read runs (see the module docstring)."""

    def __init__(self, access: AssetAccess, settings: ReadSettings) -> None:
        super().__init__()
        self.access, self.settings = access, settings

    def capture_env(self) -> dict[str, Any]:
        return {}  # the driver itself carries the settings into the graph

    @contextlib.contextmanager
    def restore_env(self, env: dict[str, Any], load_state: Any) -> Iterator[Any]:
        yield load_state.local_ctx(_LocalContext)

    def open(self, src: Any, ctx: Any) -> _Reader:
        return _Reader(src, ctx, self)

    def __reduce__(self) -> tuple[Any, ...]:
        return AccessDriver, (self.access, self.settings)


# --- workers ------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


class ReadSettingsPlugin(WorkerPlugin):
    """A Dask worker plugin that installs the run's read settings and access in every worker process
    (and in workers that join later): odc-stac's rasterio configuration (:func:`odc.stac.configure_rio`)
    and :func:`current` for code that reads outside odc-stac."""

    name = "srcube-read-settings"

    def __init__(self, settings: ReadSettings, access: AssetAccess) -> None:
        self.settings, self.access = settings, access

    def setup(self, worker: Any = None) -> None:
        install(self.settings, self.access)


def install(settings: ReadSettings, access: AssetAccess) -> None:
    """Make ``settings`` this process's GDAL configuration for odc-stac reads, and remember ``access``."""
    import odc.stac

    opts: dict[str, Any] = settings.as_dict()
    odc.stac.configure_rio(cloud_defaults=True, **opts)
    _WORKER.update(settings=settings, access=access, installed=dt.datetime.now(dt.UTC).isoformat())


def current() -> tuple[ReadSettings | None, AssetAccess | None]:
    """The read settings and access installed in this process (None before :func:`install`)."""
    return _WORKER.get("settings"), _WORKER.get("access")


def register_on_workers(client: Any, settings: ReadSettings, access: AssetAccess) -> None:
    """Install ``settings`` and ``access`` on every worker of ``client`` (and on workers that join later)."""
    client.register_plugin(ReadSettingsPlugin(settings, access), name=ReadSettingsPlugin.name)
    install(settings, access)

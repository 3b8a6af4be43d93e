"""Timeouts that hold, for every network call srcube makes.

A per-socket timeout (what ``requests``, urllib3 and botocore call a read timeout) only bounds the wait for
the next bytes: a server that accepts the connection and then sends a byte now and then, or a client library
that drops the timeout on the way (pystac-client's ``Client.open`` does), never lets it expire, and a run
waits for ever while its lock keeps every other writer out. So srcube's own HTTP requests (STAC search and
paging, token requests, publishing) go through :class:`DeadlineSession`: each attempt has a wall-clock
deadline from its first byte sent to the last byte of the answer, and when the deadline passes the
attempt's socket is shut down, which ends whatever read blocks on it. Failed attempts (connection errors,
timeouts, answers cut short, and the retried HTTP statuses) are tried again ``retries`` times, with a
backoff of 0.5, 1, 2, 4 ... s (at most 30 s; ``Retry-After`` is honoured up to that), so a request that
never gets an answer fails within ``timeout x (retries + 1)`` plus the backoff.

Reads through libraries get their timeouts from the run's ``network_timeout``: GDAL's
``GDAL_HTTP_TIMEOUT`` (curl's whole-transfer limit, a deadline too) and ``GDAL_HTTP_CONNECTTIMEOUT``
(:func:`gdal_timeouts`), and an S3 object store's connect and read timeouts (:func:`store_options`, where
the ``storage_options`` do not set their own).
"""

from __future__ import annotations

import contextvars
import logging
import re
import socket
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

#: HTTP statuses worth another attempt (rate limits and server trouble)
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: seconds before the first retry (doubling after each failed attempt), and the most between two attempts
BACKOFF, BACKOFF_MAX = 0.5, 30.0


def backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt`` (0-based) before the next one."""
    return float(min(BACKOFF_MAX, BACKOFF * 2**attempt))


# --- one attempt's deadline ----------------------------------------------------------------------


class _Watch:
    """The deadline of one attempt: when it passes, the sockets the attempt reads from are shut down, which
    ends a read blocked on them (closing would not: the blocked thread holds the file descriptor)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._done = False
        self._socks: list[Any] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._token: contextvars.Token[_Watch | None] | None = None

    def attach(self, sock: Any) -> None:
        with self._lock:
            if self.expired:
                _shutdown(sock)
            else:
                self._socks.append(sock)

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            for sock in self._socks:
                _shutdown(sock)

    def __enter__(self) -> _Watch:
        self._token = _CURRENT.set(self)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()
        if self._token is not None:
            _CURRENT.reset(self._token)


_CURRENT: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("srcube_network_watch", default=None)


def _shutdown(sock: Any) -> None:
    raw = getattr(sock, "socket", sock)  # urllib3's SSLTransport (TLS through an HTTPS proxy) wraps a socket
    try:
        # the plain socket's shutdown, also for an SSLSocket: the blocked TLS read then sees the end of the stream
        socket.socket.shutdown(raw, socket.SHUT_RDWR)
    except (OSError, TypeError):  # already closed, or not a socket
        pass


class _WatchedHTTPConnection(HTTPConnection):
    def getresponse(self) -> Any:
        watch = _CURRENT.get()
        if watch is not None and self.sock is not None:
            watch.attach(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(HTTPSConnection):
    def getresponse(self) -> Any:
        watch = _CURRENT.get()
        if watch is not None and self.sock is not None:
            watch.attach(self.sock)
        return super().getresponse()


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with connections whose sockets the current attempt's deadline can shut down (no
    retries of its own: :class:`DeadlineSession` retries whole attempts)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are their own classes: per-socket timeouts only
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class DeadlineExceeded(requests.Timeout):
    """An attempt got no complete answer within its deadline."""


#: request failures worth another attempt (connection refused or reset, timeouts, answers cut short)
_RETRIED = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError)


class DeadlineSession(requests.Session):
    """A ``requests`` session whose every request has a wall-clock deadline per attempt and is retried.

    ``timeout`` (seconds) bounds the connection, each read, and the whole attempt from sending the request to
    the last byte of the answer (bodies are read inside it: do not pass ``stream=True``); a ``timeout`` given
    to a call is ignored, so a library that resets it (pystac-client) cannot turn it off. Connection errors,
    timeouts, answers cut short and ``statuses`` are tried again ``retries`` times with :func:`backoff` in
    between; after the last attempt the error is raised, or the last answer returned (with its status).
    """

    # what requests pickles of a session (sessions travel with STAC objects into Dask graphs)
    __attrs__ = [*requests.Session.__attrs__, "timeout", "retries", "statuses"]  # noqa: RUF012  (requests' own)

    def __init__(self, timeout: float, retries: int = 0, *, statuses: tuple[int, ...] = RETRY_STATUSES) -> None:
        super().__init__()
        if not timeout > 0:
            raise ValueError(f"a network timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout, self.retries, self.statuses = float(timeout), max(0, int(retries)), tuple(statuses)
        adapter = _WatchedAdapter()
        self.mount("http://", adapter)
        self.mount("https://", adapter)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["timeout"] = (self.timeout, self.timeout)
        attempt = 0
        while True:
            last = attempt >= self.retries
            with _Watch(self.timeout) as watch:
                try:
                    resp = super().send(request, **kwargs)
                except _RETRIED as exc:
                    if watch.expired or isinstance(exc, requests.Timeout):
                        error: requests.RequestException = DeadlineExceeded(
                            f"{request.method} {request.url}: no complete answer within {self.timeout:g} s",
                            request=request)
                    else:
                        error = type(exc)(f"{request.method} {request.url}: {_reason(exc)}", request=request)
                    if last:
                        raise error from exc
                    why, delay = str(error), backoff(attempt)
                else:
                    if resp.status_code not in self.statuses or last:
                        return resp
                    why = f"{request.method} {request.url}: HTTP {resp.status_code}"
                    delay = max(backoff(attempt), _retry_after(resp))
                    resp.close()
            log.warning("%s; attempt %d of %d, trying again in %.1f s", why, attempt + 1, self.retries + 1, delay)
            time.sleep(delay)
            attempt += 1


def _reason(exc: BaseException) -> str:
    """What went wrong in a failed request, without urllib3's wrapping ("Max retries exceeded ... Caused by
    NewConnectionError(<connection object>: ...)")."""
    inner: Any = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    inner = getattr(inner, "reason", None) or inner  # MaxRetryError: what made it give up
    return re.sub(r"^\w+\(host='[^']*', port=\d+\): ", "", str(inner))


def _retry_after(resp: requests.Response) -> float:
    """The answer's ``Retry-After`` in seconds (0 without one), at most :data:`BACKOFF_MAX`."""
    value = resp.headers.get("Retry-After")
    if not value:
        return 0.0
    try:
        return float(min(BACKOFF_MAX, max(0.0, Retry(0).parse_retry_after(value))))
    except Exception:  # a malformed header: the plain backoff
        return 0.0


# --- timeouts handed to libraries ------------------------------------------------------------------


def gdal_timeouts(timeout: float) -> dict[str, str]:
    """GDAL's options for ``timeout``: curl's limit on a whole transfer and on connecting (seconds)."""
    seconds = str(max(1, round(timeout)))  # GDAL reads whole seconds
    return {"GDAL_HTTP_TIMEOUT": seconds, "GDAL_HTTP_CONNECTTIMEOUT": seconds}


def store_options(url: str, storage_options: Mapping[str, Any] | None, timeout: float) -> dict[str, Any] | None:
    """``storage_options`` for the fsspec store at ``url`` with connect and read timeouts of ``timeout`` s
    where they set none: an ``s3://`` store (s3fs, botocore's ``connect_timeout``/``read_timeout`` in
    ``config_kwargs``). Other stores are given their options as they are (local paths need none)."""
    options = dict(storage_options or {})
    if not str(url).startswith(("s3://", "s3a://")):
        return options or None
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("connect_timeout", timeout)
    config.setdefault("read_timeout", timeout)
    options["config_kwargs"] = config
    return options

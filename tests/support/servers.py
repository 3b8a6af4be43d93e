"""Loopback servers that behave like the real services srcube reads from, for the auth and signing tests.

* :class:`BlobService`: Azure Blob Storage as Planetary Computer serves it. An HTTP proxy (GDAL reaches
  ``http://<account>.blob.core.windows.net/<container>/<path>`` through ``GDAL_HTTP_PROXY``) that serves
  files from a folder, with HTTP ranges, and only to requests carrying a SAS token it issued; plus
  Planetary Computer's token endpoint (``/api/sas/v1/token/<account>/<container>``). Tokens are refused
  ``ttl`` seconds after they were issued, or after ``uses`` requests, or when revoked (``POST /_revoke``),
  while the endpoint says they last an hour, as a service whose tokens die early (revoked, clock skew)
  would: only read-time signing with re-signing after a 403 survives that. Counting uses instead of seconds
  makes tokens die mid-run however slow or loaded the machine is.
* :class:`BearerService`: Terrascope-like. An OIDC token endpoint (password grant) and a reverse proxy in
  front of a STAC API and of a folder of files, refusing every request without a valid bearer token.

Both count what they saw, for the tests' assertions. Each runs in a process of its own (``python -m
tests.servers KIND ...``): GDAL holds the GIL while it waits for an HTTP answer, so a server thread in
the reading process would never answer. :class:`Running` starts one and reads its counts over HTTP
(``GET /_counts``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Server:
    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self.url = ""
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def start(self, port: int = 0) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self.handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True).start()
        return self.url

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def send_file(handler: BaseHTTPRequestHandler, path: Path, head: bool = False) -> None:
    """Serve ``path`` with HTTP range support (what GDAL's /vsicurl/ needs)."""
    if not path.is_file():
        send(handler, 404, b"not found")
        return
    size = path.stat().st_size
    rng = handler.headers.get("Range")
    start, end, status = 0, size - 1, 200
    if rng and rng.startswith("bytes="):
        a, _, b = rng[len("bytes="):].split(",")[0].partition("-")
        start = int(a) if a else max(0, size - int(b))
        end = min(int(b), size - 1) if a and b else size - 1
        status = 206
    handler.send_response(status)
    handler.send_header("Content-Type", "image/tiff")
    handler.send_header("Accept-Ranges", "bytes")
    handler.send_header("Content-Length", str(end - start + 1))
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{size}")
    handler.end_headers()
    if not head:
        with path.open("rb") as f:
            f.seek(start)
            handler.wfile.write(f.read(end - start + 1))


def send(handler: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "text/plain") -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":  # a body after a HEAD answer would corrupt the next answer on the connection
        handler.wfile.write(body)


class _BlobServer(_Server):
    """Blob storage + SAS token endpoint on loopback (see the module docstring)."""

    def __init__(self, root: Path, *, account: str, container: str, ttl: float | None,
                 uses: int | None = None) -> None:
        super().__init__()
        self.root, self.account, self.container, self.ttl, self.uses = Path(root), account, container, ttl, uses
        self.issued: dict[str, float] = {}  # sig -> monotonic issue time
        self.used: Counter[str] = Counter()  # sig -> requests served

    def handler(self) -> type[BaseHTTPRequestHandler]:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _token(self) -> None:
                parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
                if parts[-2:] != [svc.account, svc.container]:
                    send(self, 404, b"unknown account/container")
                    return
                sig = secrets.token_urlsafe(12)
                svc.issued[sig] = time.monotonic()
                svc.count("tokens")
                claimed = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)  # what the service says
                se = claimed.strftime("%Y-%m-%dT%H:%M:%SZ")
                body = json.dumps({"msft:expiry": claimed.isoformat().replace("+00:00", "Z"),
                                   "token": f"st=2024-01-01T00%3A00%3A00Z&se={se}&sp=rl&sv=2021-06-08&sr=c&sig={sig}"})
                send(self, 200, body.encode(), "application/json")

            def _blob(self, head: bool) -> None:
                url = urllib.parse.urlsplit(self.path)
                host = url.hostname or self.headers.get("Host", "")
                if host != f"{svc.account}.blob.core.windows.net":
                    send(self, 404, b"unknown host")
                    return
                sig = urllib.parse.parse_qs(url.query).get("sig", [""])[0]
                issued = svc.issued.get(sig)
                if issued is None or (svc.ttl is not None and time.monotonic() - issued > svc.ttl) or (
                        svc.uses is not None and svc.used[sig] >= svc.uses):
                    svc.count("refused")
                    send(self, 403, b"<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>"
                                    b"Server failed to authenticate the request.</Message></Error>",
                         "application/xml")
                    return
                svc.count("reads")
                svc.used[sig] += 1
                container, _, rel = url.path.lstrip("/").partition("/")
                if container != svc.container:
                    send(self, 404, b"unknown container")
                    return
                send_file(self, svc.root / urllib.parse.unquote(rel), head=head)

            def do_GET(self) -> None:
                if self.path == "/_counts":
                    send(self, 200, json.dumps(svc.counts).encode(), "application/json")
                elif self.path.startswith("/api/sas/v1/token/"):
                    self._token()
                else:
                    self._blob(head=False)

            def do_HEAD(self) -> None:
                self._blob(head=True)

            def do_POST(self) -> None:
                if self.path == "/_revoke":  # every token issued so far dies
                    svc.issued.clear()
                    send(self, 200, b"revoked")
                else:
                    send(self, 404, b"")

        return Handler


class _BearerServer(_Server):
    """An OIDC token endpoint and a bearer-token reverse proxy in front of a STAC API and a folder of files.

    ``/token``: password grant for ``user``/``password``; tokens live ``ttl`` seconds. ``/stac/...`` is
    forwarded to ``upstream`` (links rewritten to come back through here); ``/files/...`` serves ``root``.
    Every request but ``/token`` needs ``Authorization: Bearer <a live token>`` (else 401).
    """

    def __init__(self, upstream: str, root: Path, *, user: str, password: str, ttl: float, static: str) -> None:
        super().__init__()
        self.upstream, self.root = upstream.rstrip("/"), Path(root)
        self.user, self.password, self.ttl = user, password, ttl
        self.tokens: dict[str, float] = {static: float("inf")}  # a token handed out of band (TERRASCOPE_TOKEN)

    @property
    def stac_url(self) -> str:
        return f"{self.url}/stac"

    def handler(self) -> type[BaseHTTPRequestHandler]:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
                born = svc.tokens.get(token)
                if born is None or time.monotonic() - born > svc.ttl:
                    svc.count("refused")
                    send(self, 401, b'{"error": "invalid_token"}', "application/json")
                    return False
                return True

            def _token(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type") != ["password"] or form.get("username") != [svc.user] \
                        or form.get("password") != [svc.password]:
                    svc.count("bad-login")
                    send(self, 401, b'{"error": "invalid_grant"}', "application/json")
                    return
                token = secrets.token_urlsafe(16)
                svc.tokens[token] = time.monotonic()
                svc.count("tokens")
                send(self, 200, json.dumps({"access_token": token, "token_type": "Bearer",
                                            "expires_in": svc.ttl}).encode(), "application/json")

            def _stac(self, body: bytes | None) -> None:
                up = urllib.parse.urlsplit(svc.upstream)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "accept-encoding", "authorization")}
                conn.request(self.command, self.path[len("/stac"):] or "/", body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read().replace(svc.upstream.encode(), svc.stac_url.encode())
                conn.close()
                svc.count("stac")
                send(self, resp.status, data, resp.getheader("Content-Type") or "application/json")

            def _route(self, head: bool = False) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path == "/token" and self.command == "POST":
                    self._token()
                    return
                body = self.rfile.read(length) if length else None
                if not self._authorised():
                    return
                if self.path.startswith("/stac"):
                    self._stac(body)
                elif self.path.startswith("/files/"):
                    svc.count("reads")
                    rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path[len("/files/"):])
                    send_file(self, svc.root / rel, head=head)
                else:
                    send(self, 404, b"not found")

            def do_GET(self) -> None:
                if self.path == "/_counts":
                    send(self, 200, json.dumps(svc.counts).encode(), "application/json")
                    return
                self._route()

            def do_POST(self) -> None:
                self._route()

            def do_HEAD(self) -> None:
                self._route(head=True)

        return Handler


class CannedServer(_Server):
    """Fixed answers on loopback (in this process: the clients are ``requests``, which lets it answer): ``routes``
    maps a path to (status, content type, body), ``{url}`` in a body being the server's own URL; other paths
    answer 404. A "catalog" that answers, but not as a STAC API (a web page, other JSON, a static catalog)."""

    def __init__(self, routes: dict[str, tuple[int, str, str]]) -> None:
        super().__init__()
        self.routes = dict(routes)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = urllib.parse.urlsplit(self.path).path
                status, ctype, body = svc.routes.get(path, (404, "text/plain", "not found"))
                svc.count(path)
                send(self, status, body.replace("{url}", svc.url).encode(), ctype)

            do_GET = _answer
            do_POST = _answer

        return Handler


REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    """One of the servers above in a process of its own, on ``127.0.0.1:port``."""

    kind = ""

    def __init__(self, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._args = args
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        self._proc = subprocess.Popen([sys.executable, "-m", "tests.support.servers", self.kind,
                                       "--port", str(self.port), *self._args], cwd=REPO,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.counts  # noqa: B018  (answers once the server listens)
                return self.url
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"{self.kind} server did not start: {err}") from None
                time.sleep(0.1)

    @property
    def counts(self) -> Counter[str]:
        with urllib.request.urlopen(f"{self.url}/_counts", timeout=5) as resp:
            return Counter(json.loads(resp.read()))

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stderr:
                proc.stderr.close()

    def __enter__(self) -> Any:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class BlobService(Running):
    """Blob storage + SAS token endpoint (see :class:`_BlobServer`); tokens refused ``ttl`` s after issue or
    after ``uses`` requests, and all tokens issued so far by :meth:`revoke`."""

    kind = "blob"

    def __init__(self, root: Path, *, account: str = "srcubesample", container: str = "archive",
                 ttl: float | None = None, uses: int | None = None) -> None:
        super().__init__("--root", str(root), "--account", account, "--container", container,
                         *(["--ttl", str(ttl)] if ttl is not None else []),
                         *(["--uses", str(uses)] if uses is not None else []))
        self.root, self.account, self.container = Path(root), account, container

    def revoke(self) -> None:
        """Every token issued so far is refused from now on."""
        req = urllib.request.Request(f"{self.url}/_revoke", method="POST", data=b"")
        with urllib.request.urlopen(req, timeout=5):
            pass

    def href(self, path: Path) -> str:
        """The blob URL of a file under ``root``."""
        rel = Path(path).resolve().relative_to(self.root.resolve()).as_posix()
        return f"http://{self.account}.blob.core.windows.net/{self.container}/{rel}"

    @property
    def sas_url(self) -> str:
        return f"{self.url}/api/sas/v1/token"


class BearerService(Running):
    """Token endpoint + bearer-token proxy of a STAC API and files (see :class:`_BearerServer`)."""

    kind = "bearer"

    def __init__(self, upstream: str, root: Path, *, user: str = "scientist", password: str = "s3cret-pw",
                 ttl: float = 300.0, port: int | None = None) -> None:
        self.static = "static-" + secrets.token_urlsafe(16)
        super().__init__("--upstream", upstream, "--root", str(root), "--user", user, "--password", password,
                         "--ttl", str(ttl), "--static", self.static, port=port)
        self.root, self.user, self.password = Path(root), user, password

    @property
    def stac_url(self) -> str:
        return f"{self.url}/stac"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def href(self, path: Path) -> str:
        return f"{self.url}/files/{Path(path).resolve().relative_to(self.root.resolve()).as_posix()}"


def rehosted_catalog(sample_dir: Path, out: Path, href: Any, *, probav: bool = False) -> Path:
    """The sample archive's items (Sentinel-2, or PROBA-V with ``probav``) with every asset href passed
    through ``href(local_path)``, written as a catalog folder for :class:`pipeline.testing.stac_server.StacServer`."""
    suffix = "-probav" if probav else ""
    out.mkdir(parents=True, exist_ok=True)
    collection = json.loads((sample_dir / f"collection{suffix}.json").read_text())
    items = json.loads((sample_dir / f"items{suffix}.json").read_text())
    base = sample_dir.resolve().as_uri()
    for feature in items["features"]:
        for asset in feature["assets"].values():
            if asset["href"].startswith(base):
                local = sample_dir / urllib.parse.unquote(asset["href"][len(base) + 1:])
                asset["href"] = href(local)
    (out / "collection.json").write_text(json.dumps(collection))
    (out / "items.json").write_text(json.dumps(items))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="loopback test servers (tests/servers.py)")
    ap.add_argument("kind", choices=["blob", "bearer"])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True)
    ap.add_argument("--ttl", type=float, default=None)
    ap.add_argument("--uses", type=int, default=None)
    ap.add_argument("--account", default="srcubesample")
    ap.add_argument("--container", default="archive")
    ap.add_argument("--upstream", default="")
    ap.add_argument("--user", default="")
    ap.add_argument("--password", default="")
    ap.add_argument("--static", default="")
    a = ap.parse_args(argv)
    server: _Server
    if a.kind == "blob":
        server = _BlobServer(Path(a.root), account=a.account, container=a.container, ttl=a.ttl, uses=a.uses)
    else:
        server = _BearerServer(a.upstream, Path(a.root), user=a.user, password=a.password,
                               ttl=a.ttl if a.ttl is not None else 300.0, static=a.static)
    server.start(a.port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()

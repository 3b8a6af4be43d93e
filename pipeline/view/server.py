"""The web server of ``srcube view``: the map page and its tiles on 127.0.0.1 only (stdlib ``http.server``, threads).

Routes (GET unless said):

* ``/``: the page (``static/index.html``, with ``static/view.js`` and ``static/view.css``: the package's own
  files, no external request: no CDN, no fonts, no basemap; the Content-Security-Policy says so to the browser);
* ``/info.json``: the cube as the page needs it (:meth:`tiles.CubeView.info`);
* ``/tiles/{level}/{ty}/{tx}.png?t={date index}&layer={layer}``: one map tile (:mod:`.tiles`);
* ``/legend.json?t=..&layer=..``: a layer's stretch or ramp;
* ``/stats.json``: what was served and read (:class:`tiles.Counters`); ``POST /stats/reset`` sets it to zero.

A request the map cannot answer is a 4xx with a one-line reason, never a traceback; a request whose ``Host`` is not
this server's own address is refused (403), so that a web page elsewhere cannot read the cube through a DNS name
bound to 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from srcube.pipeline.errors import SrcubeError
from srcube.pipeline.redact import redact
from srcube.pipeline.view.tiles import CubeView, TileRequestError, parse_tile_path, query_int, query_one

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
#: the page's files: URL path -> (file in static/, content type)
STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/static/view.js": ("view.js", "text/javascript; charset=utf-8"),
          "/static/view.css": ("view.css", "text/css; charset=utf-8")}
#: what the page may load: its own files, tiles and JSON from this server, nothing else
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_file(name: str) -> bytes:
    return resources.files("srcube.pipeline.view").joinpath("static", name).read_bytes()


class ViewServer(ThreadingHTTPServer):
    """Serves one :class:`tiles.CubeView` on ``127.0.0.1:port`` (0: a free port); :attr:`url` is the page."""

    daemon_threads = True  # a browser's open keep-alive connections never hold up Ctrl-C
    block_on_close = False  # nor does closing wait for them (a keep-alive handler waits for its next request)
    allow_reuse_address = False  # two servers on one port: the second fails (EADDRINUSE), it does not share it

    def __init__(self, view: CubeView, port: int = 0) -> None:
        self.view = view
        super().__init__((HOST, port), _Handler)
        self.port = int(self.server_address[1])
        self.url = f"http://{HOST}:{self.port}/"
        self._thread: threading.Thread | None = None

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A broken connection (the browser moved on) is no error; anything else is logged, never printed raw."""
        log.debug("view server: request from %s failed", client_address, exc_info=True)

    def start(self) -> ViewServer:
        """Serve in a background thread (tests, benches, scripts); :meth:`stop` ends it."""
        self._thread = threading.Thread(target=self.serve_forever, name="srcube-view", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> ViewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"
    server_version = "srcube-view"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("view server: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, doc: Any, status: int = 200) -> None:
        self._send(status, json.dumps(doc).encode(), "application/json", {"Cache-Control": "no-store"})

    def _error(self, status: int, message: str) -> None:
        self._send(status, (message.replace("\n", " ") + "\n").encode(), "text/plain; charset=utf-8",
                   {"Cache-Control": "no-store"})

    def _host_ok(self) -> bool:
        host = self.headers.get("Host", "")
        return host in (f"{HOST}:{self.server.port}", f"localhost:{self.server.port}")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        try:
            self._get()
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_POST(self) -> None:
        try:
            if not self._host_ok():
                self._error(HTTPStatus.FORBIDDEN, "this server answers requests for its own address only")
            elif urlsplit(self.path).path == "/stats/reset":
                self.server.view.counters.reset()
                self._json({"reset": True})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"nothing to post at {self.path[:80]}")
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _get(self) -> None:
        if not self._host_ok():
            self._error(HTTPStatus.FORBIDDEN, "this server answers requests for its own address only")
            return
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        view = self.server.view
        try:
            if url.path in STATIC:
                name, kind = STATIC[url.path]
                self._send(200, static_file(name), kind, {"Cache-Control": "no-cache"})
            elif url.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
            elif url.path == "/info.json":
                self._json(view.info())
            elif url.path == "/stats.json":
                self._json(view.counters.to_json())
            elif url.path == "/legend.json":
                self._json(view.legend(query_int(query, "t"), query_one(query, "layer")))
            elif url.path.startswith("/tiles/"):
                level, ty, tx, t, layer = parse_tile_path(url.path, query)
                png = view.tile_png(level, ty, tx, t, layer)
                self._send(200, png, "image/png", {"Cache-Control": "private, max-age=3600"})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such page: {url.path[:80]}")
        except TileRequestError as exc:
            self._error(exc.status, str(exc))
        except SrcubeError as exc:  # a damaged chunk (CorruptCubeError) and the like: said, not a traceback
            log.warning("view server: %s", exc)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as exc:  # what else reading a tile can raise (zarr, the object store): one line to the page
            said = redact(f"{type(exc).__name__}: {exc}")
            log.warning("view server: %s failed: %s", url.path[:80], said)
            log.debug("view server: %s failed", url.path[:80], exc_info=True)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, said)

"""A fault-injecting HTTP reverse proxy on 127.0.0.1, for testing srcube against flaky catalogs.

It forwards every request to an upstream STAC API and rewrites the upstream's base URL in the
bodies (so the links pystac-client follows, ``next`` pages included, come back through the
proxy). A seeded share (``rate``) of requests instead gets one fault: an HTTP 503, a connection
reset (RST, no answer), or a slow answer (forwarded after ``slow_s`` seconds). ``schedule``
replaces the dice with a fixed cycle (``("503", "reset", "slow", None, ...)``: request i gets
entry i mod n). ``down=True`` resets every connection (a catalog that stays down). ``only``
limits the faults to requests whose path starts with it (the others are forwarded). Counts of
what happened are kept for the test.

Three more faults are stalls, which no per-socket timeout alone ends (given by ``schedule``):

* ``"hang"``: the connection is accepted and the request read, and nothing is ever answered;
* ``"drip"``: the upstream's answer, status line and headers included, one byte every ``drip_s``
  seconds (each read gets a byte before a read timeout could expire);
* ``"stall"``: the headers and the first half of the body, then nothing more (a page cut mid-way).

A stalled answer lasts until the client gives up or the proxy stops.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("503", "reset", "slow")
STALLS = ("hang", "drip", "stall")


class FaultProxy:
    def __init__(self, upstream: str, *, rate: float = 0.3, seed: int = 0, slow_s: float = 1.5,
                 faults: tuple[str, ...] = FAULTS, down: bool = False,
                 schedule: tuple[str | None, ...] | None = None, only: str | None = None,
                 drip_s: float = 1.0) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate, self.slow_s, self.faults, self.down = rate, slow_s, faults, down
        self.schedule, self.only, self.drip_s = schedule, only, drip_s
        self._stopped = threading.Event()  # ends the stalled answers
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def _choose(self, path: str) -> str | None:
        with self._lock:
            if self.only is not None and not path.startswith(self.only):
                self.counts["passed"] += 1
                return None
            self.counts["requests"] += 1
            if self.down:
                self.counts["reset"] += 1
                return "reset"
            if self.schedule is not None:
                fault = self.schedule[(self.counts["requests"] - 1) % len(self.schedule)]
            else:
                fault = self._rng.choice(self.faults) if self._rng.random() < self.rate else None
            if fault is not None:
                self.counts[fault] += 1
                return fault
            self.counts["ok"] += 1
            return None

    def start(self) -> str:
        proxy = self
        up = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reset(self) -> None:
                # SO_LINGER 0: close() sends RST, the client sees "connection reset by peer"
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _stalled(self, head: bytes, data: bytes, fault: str) -> None:
                """Send ``head`` and ``data`` byte by byte (drip), or the head and half the data (stall), then
                wait for the proxy to stop."""
                try:
                    if fault == "drip":
                        for byte in head + data:
                            if proxy._stopped.wait(proxy.drip_s):
                                break
                            self.wfile.write(bytes([byte]))
                    else:
                        self.wfile.write(head + data[: len(data) // 2])
                except OSError:  # the client gave up and closed the connection
                    pass
                proxy._stopped.wait()
                self.close_connection = True

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._choose(self.path)
                if fault == "hang":  # the request was read; no answer ever comes
                    proxy._stopped.wait()
                    self.close_connection = True
                    return
                if fault == "reset":
                    self._reset()
                    return
                if fault == "503":
                    payload = b'{"code": "ServiceUnavailable", "description": "injected"}'
                    self.send_response(503)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault == "slow":
                    time.sleep(proxy.slow_s)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "accept-encoding")}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read().replace(proxy.upstream.encode(), proxy.url.encode())
                conn.close()
                if fault in ("drip", "stall"):
                    ctype = resp.getheader("Content-Type") or "application/json"
                    head = (f"HTTP/1.1 {resp.status} {resp.reason}\r\nContent-Type: {ctype}\r\n"
                            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode()
                    self._stalled(head, data, fault)
                    return
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _forward
            do_POST = _forward
            do_HEAD = _forward  # GDAL's first request for a file

        self._stopped.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True).start()
        return self.url

    def stop(self) -> None:
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

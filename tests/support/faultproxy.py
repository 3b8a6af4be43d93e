"""A fault-injecting HTTP reverse proxy on 127.0.0.1, for testing srcube against flaky catalogs.

It forwards every request to an upstream STAC API and rewrites the upstream's base URL in the
bodies (so the links pystac-client follows, ``next`` pages included, come back through the
proxy). A seeded share (``rate``) of requests instead gets one fault: an HTTP 503, a connection
reset (RST, no answer), or a slow answer (forwarded after ``slow_s`` seconds). ``schedule``
replaces the dice with a fixed cycle (``("503", "reset", "slow", None, ...)``: request i gets
entry i mod n). ``down=True`` resets every connection (a catalog that stays down). Counts of
what happened are kept for the test.
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


class FaultProxy:
    def __init__(self, upstream: str, *, rate: float = 0.3, seed: int = 0, slow_s: float = 1.5,
                 faults: tuple[str, ...] = FAULTS, down: bool = False,
                 schedule: tuple[str | None, ...] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.rate, self.slow_s, self.faults, self.down = rate, slow_s, faults, down
        self.schedule = schedule
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    def _choose(self) -> str | None:
        with self._lock:
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

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._choose()
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
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _forward
            do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

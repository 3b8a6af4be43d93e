"""A real STAC API server on loopback: ``rustac serve`` over a collection and its items.

It backs ``catalog="sample"``, the demo and the tests. The server is a subprocess on
127.0.0.1 with a free port chosen at start; it is stopped on exit.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from srcube.pipeline.errors import CatalogUnavailableError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rustac_exe() -> str:
    exe = shutil.which("rustac") or str(Path(sys.executable).with_name("rustac"))
    if not Path(exe).exists():
        raise CatalogUnavailableError(
            "the local STAC server needs the 'rustac' command (pip package rustac), which was not "
            "found; install srcube with its dependencies: pip install -e .")
    return exe


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, have the server killed when this process dies, even by SIGKILL (no atexit then).

    The kernel ties this to the *thread* that starts the server, so it is only armed from the
    main thread; servers started from worker threads rely on atexit and ``stop()``.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes
    import signal

    def arm() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return arm


class StacServer:
    """``rustac serve`` over every ``collection*.json`` + ``items*.json`` in ``root``, on 127.0.0.1."""

    def __init__(self, root: Path, *, startup_timeout: float = 20.0) -> None:
        self.root = Path(root)
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> str:
        if self._proc is not None:
            return self.url
        collections = sorted(self.root.glob("collection*.json"))
        hrefs = [str(p) for p in (*collections, *sorted(self.root.glob("items*.json")))]
        if not collections:
            raise FileNotFoundError(f"no collection*.json in {self.root} for the STAC server")
        last_err = ""
        for _attempt in range(3):  # the chosen port can be taken between choice and bind
            port = _free_port()
            proc = subprocess.Popen([_rustac_exe(), "serve", "--addr", f"127.0.0.1:{port}", *hrefs],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    preexec_fn=_die_with_parent())
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + self.startup_timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(url, timeout=1) as resp:
                        resp.read()
                    self._proc, self.url = proc, url
                    return url
                except (urllib.error.URLError, OSError):
                    time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            last_err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise CatalogUnavailableError(f"the local STAC server over {self.root} did not start: {last_err}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()

    def __enter__(self) -> StacServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


_SAMPLE_LOCK = threading.Lock()
_SAMPLE_SERVERS: dict[Path, StacServer] = {}


def sample_server_url(root: Path | None = None) -> str:
    """URL of the process-wide STAC server over the sample archive (generated and started once)."""
    from srcube.pipeline.testing import sample

    archive = sample.ensure_archive(root)
    with _SAMPLE_LOCK:
        server = _SAMPLE_SERVERS.get(archive)
        if server is None or server._proc is None or server._proc.poll() is not None:
            server = StacServer(archive)
            server.start()
            _SAMPLE_SERVERS[archive] = server
        return server.url


@atexit.register
def _stop_sample_servers() -> None:
    for server in _SAMPLE_SERVERS.values():
        server.stop()
    _SAMPLE_SERVERS.clear()

"""Headless Chromium driven over the DevTools protocol: what the browser test, ``bench/view.py`` and the README's
screenshot script load ``srcube view``'s page with.

Debian's ``chromium`` package (``scripts/browser.sh`` installs it where it can) is started with
``--headless=new --remote-debugging-port=0`` on a profile folder of its own; the port it chose is read from its
``DevToolsActivePort`` file, and the protocol spoken over one websocket (the ``websockets`` package, a test
dependency) to one page target. The browser's own background traffic is off (``--disable-background-networking``,
no component updates, no sync) and anything not on loopback goes to a proxy that does not exist, so nothing reaches
the network; the page's requests are recorded (``Network.requestWillBeSent``) so a test can check where they went.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the names Debian and others give Chromium's executable
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserError(RuntimeError):
    """Chromium could not be started, or a DevTools command failed or took too long."""


def find_chromium() -> str | None:
    """The path of a Chromium executable (``$SRCUBE_CHROMIUM`` first), or None."""
    given = os.environ.get("SRCUBE_CHROMIUM")
    if given:
        return given if shutil.which(given) else None
    return next((found for name in EXECUTABLES if (found := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page of ``width x height`` CSS pixels (device scale 1), as a context manager."""

    def __init__(self, executable: str | None = None, width: int = 1200, height: int = 800,
                 timeout: float = 30.0) -> None:
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no Chromium here (looked for " + ", ".join(EXECUTABLES) + "); scripts/browser.sh "
                               "installs Debian's chromium package")
        self.width, self.height, self.timeout = width, height, timeout
        self.events: list[dict[str, Any]] = []
        self._id = 0
        self._profile = Path(tempfile.mkdtemp(prefix="srcube-chromium-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._ws: Any = None
        self._session = ""

    # --- start and stop ---------------------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        from websockets.sync.client import connect

        assert self.executable is not None
        args = [self.executable, "--headless=new", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
                f"--user-data-dir={self._profile}", f"--window-size={self.width},{self.height}", "--no-first-run",
                "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--disable-extensions", "--metrics-recording-only",
                "--disable-features=MediaRouter,OptimizationHints,Translate", "--mute-audio", "--hide-scrollbars",
                "--disable-dev-shm-usage", "--proxy-server=http://127.0.0.1:9",
                "--proxy-bypass-list=127.0.0.1;localhost;[::1]",
                "--force-color-profile=srgb", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium's sandbox refuses to run as root (containers, CI)
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)
        active = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (active.exists() and len(active.read_text().splitlines()) >= 2):
            if self._proc.poll() is not None:
                raise BrowserError(f"{self.executable} exited with {self._proc.returncode} before it listened")
            if time.monotonic() > deadline:
                raise BrowserError(f"{self.executable} did not open its DevTools port in {self.timeout:.0f} s")
            time.sleep(0.05)
        port, path = active.read_text().splitlines()[:2]
        self._ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=self.timeout)
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                  session=False)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        for domain in ("Page", "Network", "Runtime"):
            self.send(f"{domain}.enable")

    def close(self) -> None:
        if self._ws is not None:
            try:
                self.send("Browser.close", session=False)
            except (BrowserError, OSError):
                pass
            self._ws.close()
            self._ws = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=10)
            self._proc = None
        shutil.rmtree(self._profile, ignore_errors=True)

    # --- the protocol -----------------------------------------------------------------------------------------

    def send(self, method: str, params: dict[str, Any] | None = None, *, session: bool = True) -> dict[str, Any]:
        """Send one DevTools command and return its result; events that arrive meanwhile go to :attr:`events`."""
        from websockets.exceptions import ConnectionClosed

        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self._session
        deadline = time.monotonic() + self.timeout
        try:
            self._ws.send(json.dumps(msg))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BrowserError(f"no answer to {method} in {self.timeout:.0f} s")
                try:
                    doc = json.loads(self._ws.recv(timeout=left))
                except TimeoutError:
                    continue
                if doc.get("id") == self._id:
                    if "error" in doc:
                        raise BrowserError(f"{method}: {doc['error']}")
                    return dict(doc.get("result", {}))
                if "method" in doc:
                    self.events.append(doc)
        except ConnectionClosed as exc:
            raise BrowserError(f"the browser closed the connection during {method}") from exc

    def goto(self, url: str) -> None:
        """Load ``url`` and wait for its load event."""
        start = len(self.events)
        self.send("Page.navigate", {"url": url})
        self.wait_for_event("Page.loadEventFired", start)

    def wait_for_event(self, method: str, start: int = 0) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            found = next((e for e in self.events[start:] if e.get("method") == method), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise BrowserError(f"no {method} in {self.timeout:.0f} s")
            self.evaluate("1")  # reads the events that came meanwhile

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited); an exception is a BrowserError."""
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in res:
            raise BrowserError(f"{expression[:80]}: {res['exceptionDetails'].get('exception', {}).get('description')}")
        return res.get("result", {}).get("value")

    def wait_until(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"{expression[:80]} still false after {timeout or self.timeout:.0f} s")
            time.sleep(0.02)

    def screenshot(self, path: str | os.PathLike[str] | None = None) -> bytes:
        """A PNG of the page as shown; written to ``path`` too when given."""
        png = base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return png

    def requests(self) -> Iterator[str]:
        """The URLs of every request the page made (its documents, scripts, images, fetches)."""
        for e in self.events:
            if e.get("method") == "Network.requestWillBeSent":
                yield str(e["params"]["request"]["url"])

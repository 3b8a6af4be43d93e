"""One writer per cube: a lock object beside the store, with a heartbeat.

``<out>.lock`` (a sibling of the zarr store, so replacing the store never removes it) holds who
writes: host, pid, a random token, when it started and a heartbeat the holder refreshes every
``heartbeat`` seconds from a daemon thread. A second run into the same output waits up to
``wait`` seconds for the lock and then fails with :class:`StoreLockedError` naming the holder.

A lock is stale, and taken over with a warning, when its holder is a dead process on this host,
or when its heartbeat is older than ``stale_after`` seconds (a holder on another machine that
died). On a local filesystem the lock is created atomically (``O_EXCL``); object stores have no
portable create-if-absent, so there srcube writes, waits briefly and reads the lock back to see
who won (a race within that instant is possible; give concurrent writers different outputs).

The store may stop answering while a lock is held (a network partition: botocore raises its own errors, not
``OSError``): the heartbeat keeps trying, and a lock that could not be removed when its run ended (or whose
``acquire`` failed after writing it) is removed from a daemon thread as soon as the store answers again, so a live
process does not hold a cube it has given up for ``stale_after`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
import warnings
from types import TracebackType
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from srcube.pipeline.errors import StaleLockWarning, StoreLockedError

log = logging.getLogger(__name__)
#: seconds between a holder's heartbeats, and since the last one after which its lock is stale
HEARTBEAT_S, STALE_AFTER_S = 30.0, 120.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StoreLock:
    """The lock of one output (see the module docstring)."""

    def __init__(self, fs: Any, path: str, *, heartbeat: float = HEARTBEAT_S, stale_after: float = STALE_AFTER_S,
                 note: str = "") -> None:
        if heartbeat <= 0 or stale_after <= heartbeat:
            raise ValueError(f"need 0 < heartbeat < stale_after, got {heartbeat} and {stale_after}")
        self.fs, self.path = fs, path
        self.heartbeat, self.stale_after = heartbeat, stale_after
        self.token = uuid.uuid4().hex
        self.doc = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                    "started": time.time(), "note": note}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    # --- reading and writing the lock object -------------------------------------------------

    def read(self) -> dict[str, Any] | None:
        """The current holder's record, or None when there is no lock (or it is unreadable)."""
        try:
            self.fs.invalidate_cache(self.path)
            with self.fs.open(self.path, "rb") as f:
                doc = json.load(f)
            return doc if isinstance(doc, dict) else None
        except (FileNotFoundError, ValueError):
            return None

    def _payload(self) -> bytes:
        return json.dumps({**self.doc, "heartbeat": time.time()}).encode()

    def _create(self) -> bool:
        """Create the lock if absent; True when this process now holds it."""
        if isinstance(self.fs, LocalFileSystem):
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._payload())
            return True
        if self.read() is not None:
            return False
        self.fs.pipe_file(self.path, self._payload())
        time.sleep(0.2)  # let a concurrent writer's object land, then see who won
        doc = self.read()
        return doc is not None and doc.get("token") == self.token

    def _stale_reason(self, doc: dict[str, Any]) -> str | None:
        age = time.time() - float(doc.get("heartbeat", doc.get("started", 0)))
        if doc.get("host") == socket.gethostname() and isinstance(doc.get("pid"), int) and not _alive(doc["pid"]):
            return f"its process {doc['pid']} on this host is gone"
        if age > self.stale_after:
            return f"its heartbeat is {age:.0f} s old (stale after {self.stale_after:.0f} s)"
        return None

    # --- acquire / release -------------------------------------------------------------------

    def acquire(self, wait: float = 0.0, poll: float = 0.5) -> None:
        """Hold the lock, waiting up to ``wait`` seconds; raise StoreLockedError otherwise."""
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                created = self._create()
            except Exception:
                self._let_go()  # the store stopped answering, maybe after this lock was written
                raise
            if created:
                break
            doc = self.read()
            if doc is None:
                continue  # released between the two looks
            reason = self._stale_reason(doc)
            if reason is not None:
                warnings.warn(StaleLockWarning(
                    f"taking over the lock {self.path} of a dead run (host {doc.get('host')}, pid "
                    f"{doc.get('pid')}): {reason}"), stacklevel=2)
                self.fs.rm_file(self.path)
                continue
            if time.monotonic() >= deadline:
                started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(doc.get("started", 0))))
                raise StoreLockedError(
                    f"another run is writing this output: lock {self.path} held by host {doc.get('host')} pid "
                    f"{doc.get('pid')} since {started}{' (' + str(doc['note']) + ')' if doc.get('note') else ''}"
                    f"; wait for it (lock_wait=<seconds>, CLI --lock-wait), write elsewhere, or, if that run is "
                    f"dead on another machine, wait {self.stale_after:.0f} s for its heartbeat to go stale")
            time.sleep(poll)
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"srcube-lock-{self.token[:6]}", daemon=True)
        self._thread.start()
        log.debug("lock %s acquired", self.path)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                doc = self.read()
                if doc is None or doc.get("token") != self.token:
                    log.error("lock %s was taken over by another run; this run no longer holds it", self.path)
                    return
                self.fs.pipe_file(self.path, self._payload())
            except Exception as exc:  # a flaky or unreachable store: try again at the next beat
                log.warning("could not refresh lock %s: %s", self.path, exc)

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.held = False
        self._let_go()

    def _remove_if_ours(self, quiet: bool = False) -> bool:
        """Remove the lock object if this lock wrote it; False when the store could not be asked."""
        try:
            doc = self.read()
            if doc is not None and doc.get("token") == self.token:
                self.fs.rm_file(self.path)
            return True
        except Exception as exc:  # an unreachable store (botocore's errors are not OSError)
            log.log(logging.DEBUG if quiet else logging.WARNING, "could not remove lock %s: %s", self.path, exc)
            return False

    def _let_go(self, poll: float = 2.0) -> None:
        """Remove this lock's object now or, when the store does not answer, from a daemon thread as soon as it
        does (until ``stale_after`` has passed: others take the lock over by then anyway)."""
        if self._remove_if_ours():
            return

        log.warning("lock %s is left in place until the store answers again (at most %.0f s)", self.path,
                    self.stale_after)

        def retry() -> None:
            deadline = time.monotonic() + self.stale_after
            while time.monotonic() < deadline and not self.held:
                time.sleep(poll)
                if not self.held and self._remove_if_ours(quiet=True):
                    log.info("lock %s removed once the store answered again", self.path)
                    return

        threading.Thread(target=retry, name=f"srcube-unlock-{self.token[:6]}", daemon=True).start()

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()

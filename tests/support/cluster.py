"""A cluster the way production runs it, on one machine: every part a process of its own, as pods are.

* :class:`Pod`: one process group (``start_new_session``) with its log file, optionally inside a network namespace
  (``ip netns exec``) and with a hostname of its own (a UTS namespace, ``unshare --uts``: as a Kubernetes pod has;
  without one every pod is this machine, whose dead processes a lock recognises at once by their pid);
  SIGKILLing the group is a pod (or its node) disappearing: the Nanny, its worker process and whatever they started
  (the worker's local STAC server) die at once.
* :class:`Network`: where the pods live. With ``ip netns`` (root, CAP_NET_ADMIN) a Linux bridge ``sdb<tag>`` in this
  namespace at ``10.213.<n>.1/24`` (the "node": scheduler, object store and the area's client listen on that
  address) and one namespace per worker pod, joined to the bridge by a veth pair (``eth0`` inside, at
  ``10.213.<n>.<10+i>``), its own loopback up (each worker's local STAC API of ``catalog="sample"`` lives there).
  :meth:`Network.cut` is a partition: the pod's ``eth0`` down, then up. Without ``ip netns`` every pod listens
  on 127.0.0.1 (:attr:`Network.isolated` is False) and a "partition" can only freeze the pod (SIGSTOP, then SIGCONT):
  it sends and answers nothing meanwhile, but its sockets stay open -- not the same fault, and the drill says so.
* :class:`Gate`: a TCP forwarder that can be cut and mended, for a partition between one process and a server
  without namespaces (tests/pipeline/write/test_lock.py).
* :func:`cluster`: moto's S3 server, ``dask scheduler`` and ``dask worker`` pods on a :class:`Network`, torn down
  (process groups SIGTERMed then SIGKILLed, namespaces and bridge deleted) however the test ends.

Namespaces are named ``srcube-drill-<pid>-...`` after the test process, so a later run deletes those a killed run
left behind (its pid is gone).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from srcube.pipeline.write.lock import _alive  # a process of this host still there
from tests.support.helpers import S3_CREDS
from tests.support.servers import free_port

PREFIX = "srcube-drill"
BIN = Path(sys.executable).parent


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_unavailable() -> str | None:
    """Why pods cannot have network namespaces here (None when they can): not Linux, no ``ip``, not root, or the
    kernel/container refuses ``ip netns add``."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux only (this is {sys.platform})"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "ip netns needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); the tests run as an unprivileged user"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add is refused here: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def remove_leftovers() -> list[str]:
    """Delete the namespaces and bridges of drills whose test process is gone (a run killed before its teardown)."""
    removed = []
    names = _ip("netns", "list", check=False).stdout.split("\n")
    for name in (line.split()[0] for line in names if line.strip()):
        m = re.fullmatch(rf"{PREFIX}-(\d+)-.*", name)
        if m and not _alive(int(m.group(1))):
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for line in _ip("-o", "link", "show", "type", "bridge", check=False).stdout.splitlines():
        m = re.match(r"\d+: (sdb(\d+)):", line)
        if m and not _alive(int(m.group(2))):
            _ip("link", "del", m.group(1), check=False)
            removed.append(m.group(1))
    return removed


# --- pods ------------------------------------------------------------------------------------------------------


@dataclass
class Pod:
    """One process group, as a pod: started in its own session, optionally inside network namespace ``netns``,
    its stdout and stderr in ``log``."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    log: Path
    netns: str | None = None
    address: str = "127.0.0.1"
    hostname: str | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Pod:
        argv = list(self.argv)
        if self.hostname:  # the process execs itself in: one pid, one process group
            argv = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, *argv]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, env=dict(self.env), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"pod {self.name} was not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def owns(self, pid: int) -> bool:
        """Whether process ``pid`` is one of this pod's (in its process group)."""
        try:
            return os.getpgid(pid) == self.pid
        except ProcessLookupError:
            return False

    def signal(self, sig: int) -> None:
        """``sig`` to every process of the pod."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole pod: no ``finally``, no atexit, sockets reset by the kernel."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the pod's processes, SIGKILL what is left after ``timeout`` s (stragglers of a dead leader too)."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a frozen pod cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 3000) -> str:
        return f"--- {self.name} ({self.log}) ---\n{self.text()[-n:]}"

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first match of ``pattern`` in the pod's log, waiting up to ``timeout`` s (an error if it dies)."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text())
            if m:
                return m
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"pod {self.name} {'died' if not self.alive() else 'timed out'} before "
                                   f"{pattern!r}:\n{self.tail()}")
            time.sleep(0.2)


# --- the network -----------------------------------------------------------------------------------------------


class Network:
    """A bridge and one namespace per pod (``isolated``), or loopback for every pod (see the module docstring)."""

    def __init__(self, isolated: bool) -> None:
        self.isolated = isolated
        self.tag = str(os.getpid())
        self.bridge = f"sdb{self.tag}"[:15]
        self.namespaces: dict[str, str] = {}  # pod name -> namespace
        self.host = "127.0.0.1"  # where the pods reach the node's servers
        self._next = 10

    def __enter__(self) -> Network:
        if self.isolated:
            remove_leftovers()
            net = self._free_subnet()
            self.host = f"10.213.{net}.1"
            self._subnet = f"10.213.{net}"
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        return self

    @staticmethod
    def _free_subnet() -> int:
        used = _ip("-4", "-o", "addr", "show", check=False).stdout + _ip("-4", "route", check=False).stdout
        for n in [os.getpid() % 200 + 20, *range(20, 220)]:
            if f"10.213.{n}." not in used:
                return n
        raise RuntimeError("no free 10.213.<n>.0/24 subnet for the drill's bridge")

    def add(self, pod: str) -> tuple[str | None, str]:
        """(the namespace, the address) of a new pod named ``pod``: its own namespace on the bridge, or loopback."""
        if not self.isolated:
            return None, "127.0.0.1"
        ns = f"{PREFIX}-{self.tag}-{pod}"
        outside = f"sdv{self.tag}{pod}"[-15:]
        address = f"{self._subnet}.{self._next}"
        self._next += 1
        _ip("netns", "add", ns)
        self.namespaces[pod] = ns
        _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", outside, "master", self.bridge)
        _ip("link", "set", outside, "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns, address

    def cut(self, pod: Pod) -> str:
        """Partition ``pod`` from the rest; :meth:`mend` ends it. Returns what was done."""
        if self.isolated and pod.netns:
            _ip("-n", pod.netns, "link", "set", "eth0", "down")
            what = f"eth0 of {pod.netns} down"
        else:
            pod.signal(signal.SIGSTOP)
            what = f"process group {pod.pid} frozen (SIGSTOP): no network namespaces here"
        return what

    def mend(self, pod: Pod) -> None:
        if self.isolated and pod.netns:
            _ip("-n", pod.netns, "link", "set", "eth0", "up")
        else:
            pod.signal(signal.SIGCONT)

    def __exit__(self, *exc: object) -> None:
        for ns in self.namespaces.values():  # a namespace's veth pair goes with it
            _ip("netns", "del", ns, check=False)
        if self.isolated:
            _ip("link", "del", self.bridge, check=False)


# --- a gate: a partition without namespaces ----------------------------------------------------------------------


class Gate:
    """A TCP forwarder on 127.0.0.1 to ``upstream`` (``host``, ``port``) that can be cut: :meth:`cut` resets every
    connection through it and stops listening (new ones are refused, as by an unreachable host), :meth:`mend` listens
    again on the same port. What its clients see of an object store or a scheduler behind a partition, for a test in
    one process."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mend(self) -> None:
        """Listen (again) and forward."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="gate", daemon=True).start()

    start = mend

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # cut
                return
            try:
                up = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                conn.close()
                continue
            up.settimeout(None)
            with self._lock:
                self._open.update((conn, up))
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pump, args=(a, b), name="gate-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Reset every connection and refuse new ones until :meth:`mend`."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._open = self._open, set()
        for conn in conns:  # SO_LINGER 0: close() sends RST
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    stop = cut

    def __enter__(self) -> Gate:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the cluster -----------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """What :func:`cluster` started: the network, the pods, and how to reach the object store."""

    net: Network
    store: Pod
    scheduler: Pod
    workers: list[Pod]
    s3_port: int
    scheduler_address: str
    env: dict[str, str]  # the pods' environment: what a client process (the area's flow runner) needs too

    @property
    def s3_endpoint(self) -> str:
        """The object store as the pods reach it."""
        return f"http://{self.net.host}:{self.s3_port}"

    @property
    def s3_local(self) -> str:
        """The object store as this (test) process reaches it: loopback."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def pods(self) -> list[Pod]:
        return [self.store, self.scheduler, *self.workers]

    def holder(self, lock: Mapping[str, object]) -> Pod | None:
        """The worker pod that wrote a lock record (its hostname, or its pid where pods share this machine's)."""
        for w in self.workers:
            if w.hostname is not None and lock.get("host") == w.hostname:
                return w
        pid = lock.get("pid")
        return next((w for w in self.workers if w.hostname is None and isinstance(pid, int) and w.owns(pid)), None)

    def who(self, address: str) -> str:
        """The pod at ``address`` (the node's own address: the scheduler, the store or the area's client)."""
        if not self.net.isolated:
            return address
        return next((w.name for w in self.workers if w.address == address), "node" if address == self.net.host
                    else address)

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.pods)


def _wait_http(url: str, pod: Pod, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if not pod.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{pod.name} did not answer at {url}:\n{pod.tail()}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def cluster(root: Path, *, workers: int = 3, nthreads: int = 2, isolated: bool = True, hostnames: bool = False,
            env: Mapping[str, str] | None = None, buckets: Sequence[str] = ("cubes",)) -> Iterator[Cluster]:
    """moto's S3 server (``buckets`` made), ``dask scheduler`` and ``workers`` ``dask worker`` pods (Nanny and
    worker process, ``nthreads`` threads; with ``hostnames`` each its own, ``w1``, ``w2``, ...) on a
    :class:`Network`, every one a process group with its log under ``root``; the pods' environment is this
    process's, ``env`` and the object store's endpoint and credentials (``AWS_ENDPOINT_URL``, as the Kubernetes
    ConfigMap and Secret give them). Torn down on the way out."""
    import boto3

    root.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(Network(isolated))
        pods: list[Pod] = []

        @stack.callback
        def _stop_all() -> None:
            for pod in reversed(pods):
                pod.stop()

        s3_port = free_port()
        base = {**os.environ, **(env or {}), **S3_CREDS, "AWS_ENDPOINT_URL": f"http://{net.host}:{s3_port}",
                "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "info", "PYTHONUNBUFFERED": "1"}
        # the object store listens on every address: the pods reach it on the bridge, this process on loopback
        store = Pod("s3", [sys.executable, "-m", "moto.server", "-H", "0.0.0.0", "-p", str(s3_port)], base,
                    root / "s3.log")
        pods.append(store.start())
        _wait_http(f"http://127.0.0.1:{s3_port}/moto-api/", store)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_port}", region_name=S3_CREDS["AWS_REGION"],
                          aws_access_key_id=S3_CREDS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=S3_CREDS["AWS_SECRET_ACCESS_KEY"])
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)

        port = free_port()
        address = f"tcp://{net.host}:{port}"
        scheduler = Pod("scheduler", [str(BIN / "dask"), "scheduler", "--host", net.host, "--port", str(port),
                                      "--no-dashboard"], base, root / "scheduler.log")
        pods.append(scheduler.start())
        scheduler.wait_for(r"Scheduler at:", 120)

        started = []
        for i in range(1, workers + 1):
            name = f"w{i}"
            ns, addr = net.add(name)
            worker = Pod(name, [str(BIN / "dask"), "worker", address, "--name", name, "--nthreads", str(nthreads),
                                "--host", addr, "--no-dashboard"], base, root / f"{name}.log", netns=ns, address=addr,
                         hostname=f"{name}-{os.getpid()}" if hostnames else None)
            pods.append(worker.start())
            started.append(worker)
        for worker in started:
            worker.wait_for(r"Registered to:", 180)
        yield Cluster(net, store, scheduler, started, s3_port, address, base)

"""The Dask client a run computes on: the caller's, or one started for the run.

Without a client, a run computes on threads in this process with dask's threaded scheduler
(:class:`LocalThreads`): nothing to start, no event loop, no task serialisation, and it works from a
plain script without an ``if __name__ == "__main__":`` guard, from stdin and from notebooks. (An
in-process ``distributed`` cluster made the demo-size run 3.5x slower: 8.5 s against 2.4 s,
``bench/run_region.py``.) A LocalCluster of worker processes is started only when asked for
(``processes=True``, or ``n_workers > 1``); its workers re-import the caller's main module, so a
script that calls srcube at import time gets a :class:`~pipeline.errors.ClusterStartError` saying so
instead of a Nanny traceback. Its dashboard link is logged and printed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask.array as da
from dask.core import flatten
from dask.highlevelgraph import HighLevelGraph

from srcube.pipeline.errors import ClusterStartError, InvalidOptionError

log = logging.getLogger(__name__)

#: glibc malloc settings of the LocalCluster's worker processes, set before they spawn. distributed's
#: default (MALLOC_TRIM_THRESHOLD_=65536) hands freed memory back to the OS at once; the model's
#: large transient activations are then page-faulted in again on every tile. Keeping up to 1 GiB
#: measured 10-15 % faster tiled inference (bench/inference.py, s2-sisr-x4, 2 workers) for about
#: 10 % more resident memory per worker.
WORKER_MALLOC_ENV = {"MALLOC_TRIM_THRESHOLD_": str(1 << 30), "MALLOC_MMAP_THRESHOLD_": str(1 << 30)}


def usable_cores() -> int:
    """CPU cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota (a
    Kubernetes CPU limit), at least one."""
    from pathlib import Path

    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def _main_script() -> str | None:
    """The file of the caller's ``__main__`` module when spawned processes would re-import it."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if not path or str(getattr(spec, "name", "")).startswith(("pytest", "ipykernel", "IPython")):
        return None
    return str(path) if os.path.exists(str(path)) else None


def _inside_spawned_bootstrap() -> bool:
    """True while a spawned child process is importing the parent's main module (``__mp_main__``)."""
    proc = multiprocessing.current_process()
    return bool(getattr(proc, "_inheriting", False)) or (
        multiprocessing.parent_process() is not None and "__mp_main__" in sys.modules
        and sys.modules.get("__mp_main__") is sys.modules.get("__main__"))


def _reimport_error(exc: BaseException | None) -> ClusterStartError:
    script = _main_script()
    what = f"your script {script}" if script else "the main module"
    return ClusterStartError(
        f"could not start Dask worker processes: each one re-imports {what}, which calls srcube again at "
        "import time. Put the call under `if __name__ == \"__main__\":`, or leave processes/n_workers unset "
        "to run on threads in this process (the default)" + (f" ({type(exc).__name__}: {exc})" if exc else ""))


class _Done:
    """A computed value where a distributed future would be (``.result()``)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


class LocalThreads:
    """The client of a run that was given none: dask's threaded scheduler in this process, one thread per
    usable core, behind the few ``distributed.Client`` methods a run uses (``compute``, ``gather``, ``run``,
    ``nthreads``, ``scheduler_info``, ``register_plugin``). ``compute`` works eagerly and returns done
    futures. There are no GPU resources to schedule by; a GPU this process sees is used by every SR task."""

    address = "threads://local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or usable_cores()

    def compute(self, collection: Any, optimize_graph: bool = True, **_: Any) -> Any:
        import dask

        opts = {"scheduler": "threads", "num_workers": self.threads, "optimize_graph": optimize_graph}
        if isinstance(collection, (list, tuple)):
            return [_Done(v) for v in dask.compute(*collection, **opts)]
        return _Done(dask.compute(collection, **opts)[0])

    def gather(self, futures: Any) -> Any:
        if isinstance(futures, (list, tuple)):
            return [f.result() for f in futures]
        return futures.result()

    def run(self, function: Any) -> dict[str, Any]:
        return {self.address: function()}

    def nthreads(self) -> dict[str, int]:
        return {self.address: self.threads}

    def scheduler_info(self) -> dict[str, Any]:
        return {"workers": {self.address: {"nthreads": self.threads, "resources": {}}}}

    def register_plugin(self, plugin: Any, name: str | None = None) -> None:
        plugin.setup()

    def __repr__(self) -> str:
        return f"<LocalThreads: dask's threaded scheduler, {self.threads} thread(s) in this process>"


#: what a scheduler address looks like: ``tcp://host:8786`` (any distributed protocol) or ``host:port``
_ADDRESS_RE = re.compile(r"(?:(?:tcp|tls|ws|wss|ucx|inproc)://[^\s/]+|[A-Za-z0-9_.\-\[\]:]+:\d{1,5})/?")


def check_client(client: object) -> None:
    """InvalidOptionError unless ``client`` is None, a Dask client, or the address of a Dask scheduler (a string
    such as ``"tcp://10.0.0.5:8786"``, which the run connects to and closes); checked before any work."""
    if client is None:
        return
    if isinstance(client, str):
        if not _ADDRESS_RE.fullmatch(client.strip()):
            raise InvalidOptionError(f"client {client!r} is not a Dask scheduler address; give one such as "
                                     "'tcp://10.0.0.5:8786' (CLI: --scheduler), a dask.distributed Client, or "
                                     "nothing to compute on threads in this process")
        return
    if not all(callable(getattr(client, m, None)) for m in ("compute", "gather", "scheduler_info")):
        raise InvalidOptionError(f"client must be a dask.distributed Client or a scheduler address, got a "
                                 f"{type(client).__name__}" + (" (a cluster: pass Client(cluster), or its "
                                 "scheduler_address)" if hasattr(client, "scheduler_address") else ""))


@contextmanager
def _connected(address: str) -> Iterator[Any]:
    """A client of the Dask scheduler at ``address``, closed on exit (ClusterStartError if it cannot connect
    within distributed's connect timeout, ``distributed.comm.timeouts.connect``)."""
    from distributed import Client

    try:
        client = Client(address.strip(), set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterStartError(f"could not connect to the Dask scheduler at {address}: {exc}; is it running and "
                                "reachable from here, and is the address right (tcp://host:8786)?") from exc
    with client:
        yield client


@contextmanager
def dask_client(client: Any | None = None, *, n_workers: int | None = None,
                processes: bool | None = None) -> Iterator[Any]:
    """Yield ``client`` unchanged (a scheduler address: a client connected to it, closed on exit), or a client
    of a local cluster that is closed on exit.

    Default: :class:`LocalThreads`, a thread per usable core in this process. ``processes=True`` (or
    ``n_workers > 1``): ``n_workers`` single-threaded worker processes (default one per core, at
    most 4): torch does its own threading, and processes keep GDAL and torch from contending for
    the GIL.
    """
    if isinstance(client, str):
        check_client(client)
        with _connected(client) as connected:
            yield connected
        return
    if client is not None:
        yield client
        return
    use_processes = bool(processes) if processes is not None else bool(n_workers and n_workers > 1)
    if not use_processes:
        yield LocalThreads()
        return
    import dask
    from distributed import Client, LocalCluster

    if _inside_spawned_bootstrap():
        raise _reimport_error(None)
    n = n_workers or max(1, min(usable_cores(), 4))
    environ = {f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in WORKER_MALLOC_ENV.items()}
    try:
        with dask.config.set(environ):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING)
    except Exception as exc:  # distributed raises RuntimeError/TimeoutError/OSError when nannies die
        if _main_script() is not None:
            raise _reimport_error(exc) from exc
        raise ClusterStartError(f"could not start {n} Dask worker processes: {exc}; leave processes and "
                                "n_workers unset to run on threads in this process") from exc
    with cluster, Client(cluster) as local:
        link = local.dashboard_link
        log.info("Dask dashboard: %s", link)
        print(f"srcube: Dask dashboard at {link}", file=sys.stderr, flush=True)
        yield local


# --- computing on the run's cluster ----------------------------------------------------------------


def gpu_resources(client: Any, wanted: bool | None) -> dict[str, float] | None:
    """``{"GPU": 1}`` when SR tasks should go to GPU workers: asked for, or (``None``) when any
    worker of the cluster declares a GPU resource."""
    declared = any("GPU" in w.get("resources", {}) for w in client.scheduler_info()["workers"].values())
    if wanted and not declared:
        raise InvalidOptionError("gpu=True but no Dask worker declares a GPU resource; start workers with "
                                 "--resources GPU=1 (the k8s worker group does)")
    return {"GPU": 1} if (declared if wanted is None else wanted) else None


def culled(collection: Any) -> Any:
    """``collection`` (a Dask array, or a list of them and other objects) with each array's graph cut to
    what its own keys need. ``HighLevelGraph.cull`` keeps the layers' annotations, which graph optimisation
    (fusion) drops; without it, a batch of a few chunks would ship the graph of the whole cube."""
    if isinstance(collection, (list, tuple)):
        return type(collection)(culled(c) for c in collection)
    if not isinstance(collection, da.Array):
        return collection
    graph = collection.__dask_graph__()
    if not isinstance(graph, HighLevelGraph):
        return collection
    keys = set(flatten(collection.__dask_keys__()))
    return da.Array(graph.cull(keys), collection.name, collection.chunks, meta=collection._meta)


def compute(client: Any, collection: Any, progress: bool, label: str) -> Any:
    # No graph optimisation: annotations (GPU resources) survive only without it (fusion drops
    # them), and fused keys depend on which chunks a graph culls, so two batches of the same cube
    # computed at once (flow tasks) would submit one key with two run_specs (dask/dask#9888).
    # Culled, though: only the tasks the wanted chunks need go to the scheduler.
    if isinstance(client, LocalThreads):  # computes eagerly: the progress bar wraps the computation
        from dask.diagnostics import ProgressBar

        if progress:
            print(label, flush=True)
        with ProgressBar() if progress else contextlib.nullcontext():
            return client.gather(client.compute(culled(collection), optimize_graph=False))
    futures = client.compute(culled(collection), optimize_graph=False)
    if progress:
        from distributed import progress as show_progress

        print(label, flush=True)
        show_progress(futures)
        print(flush=True)
    return client.gather(futures)

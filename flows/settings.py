"""Where a flow's tasks run: the Dask task runner chosen from the environment.

=======================  ===========================================================================
``SRCUBE_DASK_ADDRESS``  attach to a running scheduler (``tcp://host:8786``), e.g. the long-lived
                         ``srcube-dask`` DaskCluster of ``k8s/`` (``tcp://srcube-dask-scheduler:8786``)
``SRCUBE_DASK_K8S_SPEC`` path of a DaskCluster manifest (``kubernetes.dask.org/v1``): each flow run
                         creates its own cluster from it with the Dask Kubernetes operator
                         (``dask_kubernetes.operator.KubeCluster``), named after the flow run, and
                         deletes it at the end; ``SRCUBE_DASK_K8S_NAMESPACE`` and
                         ``SRCUBE_DASK_K8S_MAX_WORKERS`` (adaptive scaling) refine it
neither                  a LocalCluster per flow run: ``SRCUBE_DASK_WORKERS`` single-threaded worker
                         processes (default: one per core, at most 4); it and its dashboard listen on
                         127.0.0.1 only
``SRCUBE_RESULT_STORAGE`` where task results and cache records go: a URL such as
                         ``s3://srcube-results/prefect`` (credentials and endpoint from ``AWS_*`` as for
                         cubes) or a folder. Shared storage lets a retried flow run on another pod or
                         machine skip the write batches that finished before (default: Prefect's
                         local storage, ``~/.prefect/storage``, which only that machine sees)
=======================  ===========================================================================

The address wins over the spec. Read when :mod:`flows.region` is imported (a deployment's flow
run imports it in its own process, so the job's environment decides).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from srcube.pipeline.errors import InvalidOptionError

LOOPBACK = "127.0.0.1"
# where the kubelet mounts a pod's service-account token (absent when automountServiceAccountToken is false)
SERVICE_ACCOUNT_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True)
class DaskSettings:
    """The Dask cluster a flow run uses (see the module docstring for the variables)."""

    mode: str  # "local", "address" or "kubernetes"
    address: str | None = None
    k8s_spec: str | None = None
    k8s_namespace: str | None = None
    k8s_max_workers: int | None = None
    n_workers: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DaskSettings:
        env = os.environ if env is None else env
        address = env.get("SRCUBE_DASK_ADDRESS", "").strip()
        spec = env.get("SRCUBE_DASK_K8S_SPEC", "").strip()
        workers = env.get("SRCUBE_DASK_WORKERS", "").strip()
        try:
            n_workers = int(workers) if workers else max(1, min(os.cpu_count() or 1, 4))
            max_k8s = int(env["SRCUBE_DASK_K8S_MAX_WORKERS"]) if env.get("SRCUBE_DASK_K8S_MAX_WORKERS") else None
        except ValueError as exc:
            raise InvalidOptionError(f"SRCUBE_DASK_WORKERS / SRCUBE_DASK_K8S_MAX_WORKERS must be integers: {exc}") \
                from None
        if n_workers < 1:
            raise InvalidOptionError(f"SRCUBE_DASK_WORKERS must be >= 1, got {n_workers}")
        if address:
            if "://" not in address:
                raise InvalidOptionError(f"SRCUBE_DASK_ADDRESS must be a URL like tcp://host:8786, got {address!r}")
            return cls("address", address=address, n_workers=n_workers)
        if spec:
            return cls("kubernetes", k8s_spec=spec, k8s_namespace=env.get("SRCUBE_DASK_K8S_NAMESPACE") or None,
                       k8s_max_workers=max_k8s, n_workers=n_workers)
        return cls("local", n_workers=n_workers)

    def task_runner(self) -> Any:
        """The :class:`prefect_dask.DaskTaskRunner` for these settings."""
        from prefect_dask import DaskTaskRunner

        if self.mode == "address":
            return DaskTaskRunner(address=self.address)
        if self.mode == "kubernetes":
            kwargs: dict[str, Any] = {"custom_cluster_spec": self.k8s_spec}
            if self.k8s_namespace:
                kwargs["namespace"] = self.k8s_namespace
            adapt = {"minimum": 1, "maximum": self.k8s_max_workers} if self.k8s_max_workers else None
            return DaskTaskRunner(cluster_class=functools.partial(kube_cluster, **kwargs), adapt_kwargs=adapt)
        # loopback only: the scheduler, the workers and the dashboard (":0" alone would bind the dashboard to
        # every interface, open to the pod's or machine's network)
        return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                              cluster_kwargs={"n_workers": self.n_workers, "threads_per_worker": 1,
                                              "processes": True, "host": LOOPBACK,
                                              "dashboard_address": f"{LOOPBACK}:0"})


@dataclass(frozen=True)
class ResultSettings:
    """Where a flow's task results and cache records are persisted (``SRCUBE_RESULT_STORAGE``)."""

    url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ResultSettings:
        env = os.environ if env is None else env
        return cls(env.get("SRCUBE_RESULT_STORAGE", "").strip() or None)

    def storage(self) -> Any:
        """A Prefect file-system block for the URL (None: Prefect's default local storage)."""
        if not self.url:
            return None
        from prefect.filesystems import LocalFileSystem, RemoteFileSystem

        if "://" not in self.url or self.url.startswith("file://"):
            return LocalFileSystem(basepath=os.path.abspath(self.url.removeprefix("file://")))
        return RemoteFileSystem(basepath=self.url.rstrip("/"))


def cluster_spec_for_run(spec_path: str, run_name: str) -> dict[str, Any]:
    """The DaskCluster manifest at ``spec_path``, renamed for one flow run (names must be unique
    in a namespace and valid DNS labels)."""
    import re

    import yaml

    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    if not isinstance(spec, dict) or spec.get("kind") != "DaskCluster":
        raise InvalidOptionError(f"{spec_path} is not a DaskCluster manifest (kind: DaskCluster)")
    base = str(spec.get("metadata", {}).get("name", "srcube-dask"))
    label = re.sub(r"[^a-z0-9-]", "-", f"{base}-{run_name}".lower())[:50].strip("-")
    spec.setdefault("metadata", {})["name"] = label
    # the operator labels the scheduler pod with the cluster's name; its Service must select it
    selector = spec.get("spec", {}).get("scheduler", {}).get("service", {}).get("selector")
    if isinstance(selector, dict) and "dask.org/cluster-name" in selector:
        selector["dask.org/cluster-name"] = label
    return spec


def require_kubernetes_credentials(env: Mapping[str, str] | None = None,
                                   token_path: str = SERVICE_ACCOUNT_TOKEN) -> None:
    """Refuse, with what to set, an ephemeral cluster in a pod that cannot call the Kubernetes API.

    Flow-run pods get no service-account token unless their job variables ask for one (k8s/README.md);
    without it KubeCluster would fail deep inside its Kubernetes client. Outside a pod (no
    ``KUBERNETES_SERVICE_HOST``) or with a kubeconfig, the client finds its credentials as usual.
    """
    env = os.environ if env is None else env
    if not env.get("KUBERNETES_SERVICE_HOST") or os.path.exists(token_path):
        return
    kubeconfig = env.get("KUBECONFIG") or os.path.join(env.get("HOME", "~"), ".kube", "config")
    if any(os.path.exists(p) for p in kubeconfig.split(os.pathsep) if p):
        return
    raise InvalidOptionError(
        f"SRCUBE_DASK_K8S_SPEC asks for a Dask cluster per flow run, but this pod has no service-account token "
        f"({token_path}) and no kubeconfig to create it with: set the work-pool job variable "
        f"automount_service_account_token: true for this deployment, or attach to a running cluster with "
        f"SRCUBE_DASK_ADDRESS (k8s/README.md)")


def kube_cluster(custom_cluster_spec: str, **kwargs: Any) -> Any:
    """A per-flow-run cluster made by the Dask Kubernetes operator from a DaskCluster manifest."""
    require_kubernetes_credentials()
    from dask_kubernetes.operator import KubeCluster
    from prefect.runtime import flow_run

    spec = cluster_spec_for_run(custom_cluster_spec, str(flow_run.id or "adhoc")[:8])
    return KubeCluster(custom_cluster_spec=spec, shutdown_on_close=True, **kwargs)


# --- what the workers still hold for the Prefect API ----------------------------------------------------------


async def _drain_prefect_services(timeout: float) -> None:
    """On a Dask worker: send the task-run logs and events this process still holds, then stop their senders
    (they start again with the next task that logs)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        await service.drain_all(timeout=timeout)  # type: ignore[misc]  # a coroutine inside an event loop


def flush_worker_telemetry(timeout: float = 30.0) -> None:
    """Make every worker of the flow run's Dask cluster send the task-run logs and events it still holds.

    Prefect sends them from each worker process in batches (logs every 2 s), and a cluster made for the run closes
    when the flow returns: what its workers still held then would be lost (PrefectHQ/prefect#6872, "DaskTaskRunner
    on KubeCluster drops some logs"). Called as a flow ends, failed or not; a worker that cannot send is logged and
    left, never failing the run."""
    import logging

    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    client = getattr(ctx.task_runner, "_client", None) if ctx is not None else None  # None: no task was sent
    if client is None:
        return
    try:
        client.run(_drain_prefect_services, timeout)
    except Exception as exc:  # telemetry is a courtesy: the run's result stands either way
        logging.getLogger(__name__).warning("task logs and events of the Dask workers may be incomplete on the "
                                            "Prefect server: %s", exc)

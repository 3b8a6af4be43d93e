"""Who may reach srcube's pods on Kubernetes, checked offline: the NetworkPolicies that kustomize renders,
evaluated by ``tests.support.k8s.Network`` against the pods the manifests make, labelled as the dask-kubernetes
operator (its own functions), prefect-kubernetes (the job configuration the worker uses) and the Deployments
label them.

The evaluator is tested first on cases from the Kubernetes documentation, so the checks on the manifests
cannot pass for want of a policy being read at all.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.k8s import (
    AREA_SPEC_KEY,
    CRD_DIR,
    FLOW_SPEC_KEY,
    KUSTOMIZATIONS,
    NAMESPACE,
    External,
    Network,
    Pod,
    area_deployment,
    flow_spec,
    job_manifest,
    one,
    rendered,
    selector_matches,
    validate_object,
)

OPERATOR_NS = "dask-operator"
OPERATOR_CHART = CRD_DIR.parent / "Chart.yaml"
TENANT_NS = "tenant"  # somebody else's namespace in the same cluster
POLICIES = {"srcube-default-deny-ingress", "srcube-dask-ingress", "srcube-dask-scheduler-from-operator",
            "srcube-dask-egress", "srcube-dask-worker-egress-public"}
WORKER_PORT, NANNY_PORT = 40123, 40124  # `dask worker` listens on ephemeral ports


# --- the evaluator on textbook cases ----------------------------------------------------------


def policy(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    doc = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
           "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    validate_object(doc)  # the cases are legal NetworkPolicies
    return doc


DEFAULT_NS = {"default": {}, "other": {}, "myproject": {"project": "myproject"}, "alice": {"user": "alice"}}


def test_evaluator_without_policies_everything_is_open():
    net = Network(DEFAULT_NS, [])
    a = Pod("a", "default", {"app": "a"}, "10.244.0.1")
    b = Pod("b", "other", {}, "10.244.0.2")
    assert net.allows(a, b, 1234) and net.allows(b, a, 80, "UDP")
    assert net.allows(External("internet", "8.8.8.8"), a, 443) and net.allows(a, External("x", "8.8.8.8"), 53, "UDP")


def test_evaluator_default_deny_ingress():
    net = Network(DEFAULT_NS, [policy("deny", "default", {"podSelector": {}, "policyTypes": ["Ingress"]})])
    a = Pod("a", "default", {"app": "a"}, "10.244.0.1")
    b = Pod("b", "default", {"app": "b"}, "10.244.0.2")
    c = Pod("c", "other", {}, "10.244.0.3")
    assert not net.allows(b, a, 80) and not net.allows(c, a, 80) and not net.allows(External("i", "1.1.1.1"), a, 80)
    assert net.allows(a, c, 80)  # egress is not isolated, and c is not selected by any policy
    open_all = policy("allow-all", "default", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]})
    assert Network(DEFAULT_NS, [*net.policies, open_all]).allows(c, a, 80)  # policies add up


def test_evaluator_documentation_example():
    """The ``test-network-policy`` example of the Kubernetes NetworkPolicy documentation."""
    doc = policy("test-network-policy", "default", {
        "podSelector": {"matchLabels": {"role": "db"}},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [{"from": [{"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
                              {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
                              {"podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"protocol": "TCP", "port": 6379}]}],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}],
    })
    net = Network(DEFAULT_NS, [doc])
    db = Pod("db", "default", {"role": "db"}, "10.244.0.10")
    frontend = Pod("frontend", "default", {"role": "frontend"}, "10.244.0.11")
    assert net.allows(frontend, db, 6379)
    assert not net.allows(frontend, db, 6380) and not net.allows(frontend, db, 6379, "UDP")
    assert not net.allows(Pod("frontend-elsewhere", "other", {"role": "frontend"}, "10.244.1.1"), db, 6379)
    assert net.allows(Pod("anything", "myproject", {}, "10.244.2.1"), db, 6379)
    assert not net.allows(Pod("backend", "default", {"role": "backend"}, "10.244.0.12"), db, 6379)
    assert net.allows(External("in-block", "172.17.0.5"), db, 6379)
    assert not net.allows(External("excepted", "172.17.1.5"), db, 6379)
    assert net.allows(db, External("allowed", "10.0.0.7"), 5978)
    assert not net.allows(db, External("outside", "10.0.1.7"), 5978) and not net.allows(db, frontend, 80)
    assert net.allows(frontend, External("anywhere", "8.8.8.8"), 443)  # frontend is not isolated


def test_evaluator_namespace_and_pod_selector_and_versus_or():
    """One peer with both selectors is an AND; two peers are an OR (the documentation's warning)."""
    both = {"namespaceSelector": {"matchLabels": {"user": "alice"}}, "podSelector": {"matchLabels": {"role": "client"}}}
    either = [{"namespaceSelector": {"matchLabels": {"user": "alice"}}},
              {"podSelector": {"matchLabels": {"role": "client"}}}]
    server = Pod("server", "default", {"app": "server"}, "10.244.0.1")
    alice_client = Pod("alice-client", "alice", {"role": "client"}, "10.244.1.1")
    alice_other = Pod("alice-other", "alice", {"role": "db"}, "10.244.1.2")
    local_client = Pod("local-client", "default", {"role": "client"}, "10.244.0.2")
    far_client = Pod("far-client", "other", {"role": "client"}, "10.244.2.1")
    spec = {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]}
    and_net = Network(DEFAULT_NS, [policy("and", "default", {**spec, "ingress": [{"from": [both]}]})])
    or_net = Network(DEFAULT_NS, [policy("or", "default", {**spec, "ingress": [{"from": either}]})])
    assert [and_net.allows(p, server, 80) for p in (alice_client, alice_other, local_client, far_client)] == [
        True, False, False, False]
    assert [or_net.allows(p, server, 80) for p in (alice_client, alice_other, local_client, far_client)] == [
        True, True, True, False]


def test_evaluator_policy_types_default_and_egress_isolation():
    """Without policyTypes a policy with an egress section isolates both directions (ingress then allows
    nothing, having no rules); with policyTypes [Egress] only egress."""
    implicit = policy("implicit", "default", {"podSelector": {}, "egress": [{}]})
    explicit = policy("explicit", "default", {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]})
    a = Pod("a", "default", {}, "10.244.0.1")
    b = Pod("b", "other", {}, "10.244.0.2")
    assert Network.policy_types(implicit) == {"Ingress", "Egress"}
    assert not Network(DEFAULT_NS, [implicit]).allows(b, a, 80) and Network(DEFAULT_NS, [implicit]).allows(a, b, 80)
    assert Network(DEFAULT_NS, [explicit]).allows(b, a, 80)
    deny_egress = policy("deny-egress", "default", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert not Network(DEFAULT_NS, [deny_egress]).allows(a, b, 80)
    assert not Network(DEFAULT_NS, [deny_egress]).allows(a, External("dns", "8.8.8.8"), 53, "UDP")


def test_evaluator_ports_named_ranges_and_protocols():
    web = Pod("web", "default", {"app": "web"}, "10.244.0.1", ports={"http": 8080, "metrics": 9090})
    client = Pod("client", "default", {}, "10.244.0.2")
    net = Network(DEFAULT_NS, [policy("ports", "default", {
        "podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
        "ingress": [{"ports": [{"port": "http"}, {"protocol": "TCP", "port": 32000, "endPort": 32768},
                               {"protocol": "UDP", "port": 53}, {"protocol": "SCTP"}]}],
    })])
    assert net.allows(client, web, 8080) and not net.allows(client, web, 9090)
    assert net.allows(client, web, 32000) and net.allows(client, web, 32768) and not net.allows(client, web, 32769)
    assert net.allows(client, web, 53, "UDP") and not net.allows(client, web, 53)
    assert net.allows(client, web, 7, "SCTP")  # a protocol without a port: every port


def test_evaluator_label_selector_operators():
    labels = {"tier": "a", "env": "prod"}
    assert selector_matches({}, labels) and selector_matches(None, {})
    assert selector_matches({"matchLabels": {"tier": "a"}}, labels)
    assert not selector_matches({"matchLabels": {"tier": "a", "x": "y"}}, labels)
    cases = [("In", ["a", "b"], True), ("In", ["b"], False), ("NotIn", ["b"], True), ("NotIn", ["a"], False)]
    for op, values, want in cases:
        selector = {"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}
        assert selector_matches(selector, labels) is want
    assert selector_matches({"matchExpressions": [{"key": "absent", "operator": "NotIn", "values": ["a"]}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "absent", "operator": "In", "values": ["a"]}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "env", "operator": "Exists"}]}, labels)
    assert not selector_matches({"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)


def test_evaluator_selectors_never_match_addresses():
    """An external address is matched by ipBlocks only, never by a selector, even an empty one."""
    a = Pod("a", "default", {}, "10.244.0.1")
    net = Network(DEFAULT_NS, [policy("ns-all", "default", {
        "podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{"from": [{"namespaceSelector": {}}]}]})])
    assert net.allows(Pod("b", "other", {}, "10.244.1.1"), a, 80)
    assert not net.allows(External("internet", "1.2.3.4"), a, 80)


# --- the world srcube's manifests make ----------------------------------------------------------


def pod_ports(spec: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}


def dask_pods(cr: dict[str, Any], namespace: str, subnet: int) -> tuple[Pod, list[Pod]]:
    """The scheduler pod and two worker pods the operator makes for DaskCluster ``cr``, labelled by the
    operator's own functions."""
    from dask_kubernetes.operator.controller.controller import (
        build_scheduler_deployment_spec,
        build_worker_deployment_spec,
    )

    name = cr["metadata"]["name"]
    labels = dict(cr["metadata"].get("labels", {}))
    sched_spec = cr["spec"]["scheduler"]["spec"]
    sched = build_scheduler_deployment_spec(name, sched_spec, {}, labels)["spec"]["template"]["metadata"]
    scheduler = Pod(sched["name"], namespace, sched["labels"], f"10.244.{subnet}.2", pod_ports(sched_spec))
    workers = []
    for i, uid in enumerate(("a1b2c3d4e5", "f6a7b8c9d0")):
        worker_spec = cr["spec"]["worker"]["spec"]
        meta = build_worker_deployment_spec(f"{name}-default", namespace, name, uid, worker_spec, {},
                                            labels)["spec"]["template"]["metadata"]
        workers.append(Pod(meta["name"], namespace, meta["labels"], f"10.244.{subnet}.{10 + i}",
                           {**pod_ports(worker_spec), "worker": WORKER_PORT, "nanny": NANNY_PORT}))
    return scheduler, workers


@functools.cache
def operator_labels() -> dict[str, str]:
    """The operator pod's labels as its Helm chart sets them (selectorLabels: the chart's name, the release)."""
    chart = yaml.safe_load(OPERATOR_CHART.read_text())
    return {"app.kubernetes.io/name": chart["name"], "app.kubernetes.io/instance": f"{chart['name']}-1762815110"}


class World:
    """srcube's pods from one rendered kustomization, the cluster's other pods and a few outside addresses."""

    def __init__(self, name: str, cluster: str = "srcube-dask"):
        from srcube.flows.settings import cluster_spec_for_run

        docs = rendered(name)
        ns_doc = one(docs, "Namespace", NAMESPACE)
        self.network = Network({NAMESPACE: ns_doc["metadata"].get("labels", {}), OPERATOR_NS: {},
                                "kube-system": {}, "prefect": {}, "minio": {}, TENANT_NS: {}},
                               [d for d in docs if d["kind"] == "NetworkPolicy"])
        cr = one(docs, "DaskCluster", "srcube-dask")
        if cluster != "srcube-dask":  # a flow run's own cluster, from the spec its pod mounts, renamed as the flow does
            key = AREA_SPEC_KEY if cluster == "area" else FLOW_SPEC_KEY
            with tempfile.TemporaryDirectory() as tmp:
                spec_file = Path(tmp) / key
                spec_file.write_text(yaml.safe_dump(flow_spec(docs, key)))
                cr = cluster_spec_for_run(str(spec_file), "1f2e3d4c")
        self.config = one(docs, "ConfigMap", "srcube-config")["data"]
        self.scheduler, self.workers = dask_pods(cr, NAMESPACE, 1)
        job_variables = {"srcube-dask": {}, "area": area_deployment()["work_pool"]["job_variables"],
                         "ephemeral": {"automount_service_account_token": True,
                                       "env": {"SRCUBE_DASK_ADDRESS": "",
                                               "SRCUBE_DASK_K8S_SPEC": "/etc/srcube/daskcluster.yaml"}}}[cluster]
        flow_pod = job_manifest(**job_variables)["spec"]["template"]
        self.flow_run = Pod("flow-run", NAMESPACE, flow_pod["metadata"]["labels"], "10.244.2.5",
                            pod_ports(flow_pod["spec"]))
        deployment = one(docs, "Deployment", "srcube-prefect-worker")["spec"]["template"]
        self.prefect_worker = Pod("prefect-worker", NAMESPACE, deployment["metadata"]["labels"], "10.244.2.6",
                                  pod_ports(deployment["spec"]))
        self.operator = Pod("dask-operator", OPERATOR_NS, operator_labels(), "10.244.3.2")
        self.dns = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"}, "10.244.4.2", {"dns": 53})
        self.prefect_server = Pod("prefect-server", "prefect", {"app.kubernetes.io/name": "prefect-server"},
                                  "10.244.5.2")
        self.minio = Pod("minio", "minio", {"app": "minio"}, "10.244.6.2")
        # who must not get in: a pod of the namespace, and look-alikes elsewhere
        self.stranger = Pod("debug-pod", NAMESPACE, {"app": "debug"}, "10.244.2.9")
        self.intruders = [
            self.stranger,
            Pod("tenant-app", TENANT_NS, {"app": "web"}, "10.244.7.2"),
            Pod("tenant-fake-flow-run", TENANT_NS, dict(self.flow_run.labels), "10.244.7.3"),
            Pod("tenant-fake-worker", TENANT_NS, dict(self.workers[0].labels), "10.244.7.4"),
            Pod("tenant-fake-operator", TENANT_NS, operator_labels(), "10.244.7.5"),
            Pod("operator-namespace-other-pod", OPERATOR_NS, {"app": "webhook"}, "10.244.3.3"),
            Pod("kube-system-pod", "kube-system", {"k8s-app": "kube-proxy"}, "10.244.4.3"),
        ]
        self.outside = [External("internet", "203.0.113.7"), External("node-network", "192.168.1.20")]
        self.tenant_db = Pod("tenant-db", TENANT_NS, {"app": "postgres"}, "10.244.7.10")

    def pods(self) -> list[Pod]:
        return [self.scheduler, *self.workers, self.flow_run, self.prefect_worker, self.operator, self.dns,
                self.prefect_server, self.minio, self.tenant_db, *self.intruders]

    def reachers(self, dst: Pod, port: int) -> set[str]:
        """Names of every pod and outside address that may connect to ``dst`` on ``port``."""
        return {p.name for p in [*self.pods(), *self.outside] if p != dst and self.network.allows(p, dst, port)}


@functools.cache
def world(name: str, cluster: str = "srcube-dask") -> World:
    return World(name, cluster)


#: the Dask cluster of the flow run: the long-lived srcube-dask, a per-run one (daskcluster.yaml), or the area
#: flow's per-run one (daskcluster-area.yaml, with the job variables of prefect.yaml's area deployment)
WORLDS = [pytest.param(name, cluster, id=f"{name}-{cluster}")
          for name in KUSTOMIZATIONS for cluster in ("srcube-dask", "ephemeral", "area")]


# --- the policies of the manifests --------------------------------------------------------------


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_kustomization_renders_the_policies(name: str):
    docs = rendered(name)
    policies = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == POLICIES, f"{name}: {sorted(policies)}"
    for doc in policies.values():
        assert doc["metadata"]["namespace"] == NAMESPACE
        validate_object(doc)
    deny = policies["srcube-default-deny-ingress"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}, "every pod of the namespace is isolated"


@pytest.mark.parametrize(("name", "cluster"), WORLDS)
def test_only_the_flow_runner_the_workers_and_the_operator_reach_the_scheduler(name: str, cluster: str):
    w = world(name, cluster)
    allowed = {"flow-run", *(p.name for p in w.workers), "dask-operator"}
    for port in (8786, 8787):  # comm, dashboard (the operator's HTTP API)
        assert w.reachers(w.scheduler, port) == allowed, f"{name}: scheduler port {port}"
    assert w.scheduler.ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    assert w.config["SRCUBE_DASK_ADDRESS"].endswith(":8786")


@pytest.mark.parametrize(("name", "cluster"), WORLDS)
def test_only_the_scheduler_the_other_workers_and_the_flow_runner_reach_a_worker(name: str, cluster: str):
    w = world(name, cluster)
    worker, other = w.workers
    assert worker.ports["http-dashboard"] == 8788
    for port in (WORKER_PORT, NANNY_PORT, 8788):
        assert w.reachers(worker, port) == {w.scheduler.name, other.name, "flow-run"}, f"{name}: worker port {port}"


@pytest.mark.parametrize(("name", "cluster"), WORLDS)
def test_dashboards_are_not_exposed_beyond_the_namespace(name: str, cluster: str):
    w = world(name, cluster)
    by_name = {p.name: p for p in [*w.pods(), *w.outside]}
    for dst, port in [(w.scheduler, 8787), *((worker, 8788) for worker in w.workers)]:
        outside = {n for n in w.reachers(dst, port)
                   if not (isinstance(by_name[n], Pod) and by_name[n].namespace == NAMESPACE)}
        assert outside <= {"dask-operator"}, f"{name}: {dst.name}:{port} reachable from {outside}"
        assert "debug-pod" not in w.reachers(dst, port), "nor from any pod of the namespace"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_nothing_reaches_the_prefect_worker_or_a_flow_run(name: str):
    """Default deny: the Prefect worker's health port and the flow-run pod accept nobody (the kubelet's
    probes come from the node, which NetworkPolicy always allows)."""
    w = world(name)
    assert w.prefect_worker.ports == {"http-health": 8080}
    assert w.reachers(w.prefect_worker, 8080) == set()
    assert w.reachers(w.flow_run, 8786) == set() and w.reachers(w.flow_run, 12345) == set()


@pytest.mark.parametrize(("name", "cluster"), WORLDS)
def test_dask_pods_send_only_where_they_need_to(name: str, cluster: str):
    w = world(name, cluster)
    net = w.network
    for pod in (w.scheduler, *w.workers):
        assert net.allows(pod, w.dns, 53, "UDP") and net.allows(pod, w.dns, 53), pod.name
        assert net.allows(pod, w.prefect_server, 4200) and net.allows(pod, w.minio, 9000), pod.name
        assert not net.allows(pod, w.tenant_db, 5432) and not net.allows(pod, w.prefect_server, 5432), pod.name
        assert not net.allows(pod, w.dns, 8080), pod.name
        assert not net.allows(pod, External("kubernetes-api", "10.0.0.1"), 443), "no Kubernetes API"
        assert not net.allows(pod, External("cloud-metadata", "169.254.169.254"), 80), "no instance metadata"
        assert not net.allows(pod, External("node", "192.168.1.20"), 10250)
    worker, other = w.workers
    assert net.allows(worker, w.scheduler, 8786) and net.allows(w.scheduler, worker, WORKER_PORT)
    assert net.allows(worker, other, WORKER_PORT) and net.allows(worker, other, NANNY_PORT)
    for address in ("52.218.0.10", "203.0.113.7"):  # S3, a catalog's asset host
        assert net.allows(worker, External("public", address), 443) and net.allows(worker, External("p", address), 80)
        assert not net.allows(worker, External("public", address), 22)
        assert not net.allows(w.scheduler, External("public", address), 443), "the scheduler reads nothing"
    for address in ("10.12.0.5", "172.20.0.5", "192.168.3.3", "100.64.1.1", "127.0.0.1"):  # private ranges
        assert not net.allows(worker, External("private", address), 443), address
    assert not net.allows(worker, w.tenant_db, 443), "pods of other namespaces are private addresses"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_the_egress_policy_reaches_the_endpoints_srcube_config_names(name: str):
    """PREFECT_API_URL and AWS_ENDPOINT_URL in srcube-config name in-cluster Services: a worker may reach
    pods of those namespaces on those ports (an edit of one without the other fails here)."""
    w = world(name)
    checked = 0
    for key in ("PREFECT_API_URL", "AWS_ENDPOINT_URL"):
        url = urllib.parse.urlsplit(w.config[key])
        host = url.hostname or ""
        if ".svc" not in host:
            continue  # outside the cluster: the public rule (443/80) applies
        service_ns = host.split(".")[1]
        target = Pod(f"{key}-backend", service_ns, {}, "10.244.9.9")
        for pod in (w.scheduler, *w.workers):
            assert w.network.allows(pod, target, url.port or 80), f"{pod.name} cannot reach {w.config[key]}"
        checked += 1
    assert checked == 2


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_flow_runs_and_the_prefect_worker_may_call_the_kubernetes_api(name: str):
    """Their egress stays open: the API server's address is the cluster's own, not nameable portably."""
    w = world(name)
    api = External("kubernetes-api", "10.0.0.1")
    assert w.network.allows(w.flow_run, api, 443) and w.network.allows(w.prefect_worker, api, 443)
    assert w.network.allows(w.flow_run, w.scheduler, 8786)


def test_operator_assumption_matches_its_chart():
    """The policy admits the operator by the labels its Helm chart gives its pod; they come from the chart
    shipped with the installed dask-kubernetes."""
    docs = rendered("base")
    spec = one(docs, "NetworkPolicy", "srcube-dask-scheduler-from-operator")["spec"]
    (rule,) = spec["ingress"]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": OPERATOR_NS}}
    assert selector_matches(peer["podSelector"], operator_labels())
    assert "selectorLabels" in (CRD_DIR.parent / "templates" / "deployment.yaml").read_text()


def test_a_policy_change_is_noticed():
    """The checks above bite: dropping the default deny opens the Prefect worker, widening the Dask ingress
    to the namespace lets a stranger reach the scheduler."""
    w = world("base")
    without_deny = [p for p in w.network.policies if p["metadata"]["name"] != "srcube-default-deny-ingress"]
    net = Network(w.network.namespaces, without_deny)
    assert net.allows(w.stranger, w.prefect_worker, 8080)
    widened = copy.deepcopy(w.network.policies)
    (dask_in,) = [p for p in widened if p["metadata"]["name"] == "srcube-dask-ingress"]
    dask_in["spec"]["ingress"][0]["from"].append({"podSelector": {}})
    assert Network(w.network.namespaces, widened).allows(w.stranger, w.scheduler, 8786)
    assert not w.network.allows(w.stranger, w.scheduler, 8786)
    assert all(not w.network.allows(p, w.scheduler, 8786) for p in w.intruders)
    assert w.outside and all(not w.network.allows(p, w.scheduler, 8786) for p in w.outside)


# --- the training Job (k8s/training, applied beside the stack) -----------------------------------


def test_training_pods_reach_each_other_and_nothing_else():
    """The policies of the base and of k8s/training together: the training pods (labelled by the Job's pod template,
    plus what the Job controller adds) reach each other on the rendezvous port and on the ephemeral ports NCCL and
    gloo listen on, and DNS; nobody else reaches them, and they reach nothing else. The stack's reachability stays
    what it was."""
    w = world("base")
    docs = rendered("training")
    net = Network(w.network.namespaces, [*w.network.policies, *(d for d in docs if d["kind"] == "NetworkPolicy")])
    template = one(docs, "Job", "srcube-train")["spec"]["template"]
    trainers = [Pod(f"srcube-train-{i}", NAMESPACE,
                    {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": "srcube-train",
                     "batch.kubernetes.io/job-completion-index": str(i)},
                    f"10.244.8.{2 + i}", pod_ports(template["spec"])) for i in range(2)]
    a, b = trainers
    assert a.ports == {"rendezvous": 29500}
    for port in (29500, 41234):
        assert net.allows(b, a, port) and net.allows(a, b, port), port
    assert net.allows(a, w.dns, 53, "UDP") and net.allows(a, w.dns, 53)
    for other in [*w.pods(), *w.outside]:
        assert not net.allows(other, a, 29500) and not net.allows(other, a, 41234), other.name
    for dst, port in [(w.scheduler, 8786), (w.workers[0], WORKER_PORT), (w.prefect_server, 4200), (w.minio, 9000),
                      (w.tenant_db, 5432), (External("public", "203.0.113.7"), 443),
                      (External("kubernetes-api", "10.0.0.1"), 443),
                      (External("cloud-metadata", "169.254.169.254"), 80)]:
        assert not net.allows(a, dst, port), dst.name
    for dst, port in [(w.scheduler, 8786), (w.workers[1], WORKER_PORT), (w.prefect_worker, 8080)]:
        assert {p.name for p in [*w.pods(), *w.outside] if p != dst and net.allows(p, dst, port)} == \
            w.reachers(dst, port), dst.name

"""Offline validators of Kubernetes objects: Dask custom resources against the operator's CRD (made strict),
everything else with kubernetes-validate; the repository's kustomizations rendered and the Prefect worker's Job;
and an evaluator of NetworkPolicies (who may connect to whom)."""

from __future__ import annotations

import copy
import functools
import glob
import ipaddress
import json
import shutil
import subprocess
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask_kubernetes
import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.support.helpers import REPO

K8S_VERSION = "1.32.0"
DASK_GROUP = "kubernetes.dask.org"
CRD_DIR = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds"


# --- validators -------------------------------------------------------------------------------


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> openAPIV3Schema`` of the operator's CRDs."""
    out = {}
    for path in glob.glob(str(CRD_DIR / "*.yaml")):
        crd = yaml.safe_load(Path(path).read_text())
        for version in crd["spec"]["versions"]:
            key = (f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])
            out[key] = version["schema"]["openAPIV3Schema"]
    assert ("kubernetes.dask.org/v1", "DaskCluster") in out, f"no DaskCluster CRD under {CRD_DIR}"
    return out


def strictify(schema: Any) -> Any:
    """Reject unknown fields (the apiserver would silently prune them; we want to hear about typos)."""
    if isinstance(schema, dict):
        if (
            schema.get("type") == "object"
            and "properties" in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            strictify(value)
    elif isinstance(schema, list):
        for value in schema:
            strictify(value)
    return schema


@functools.cache
def _strict_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    schema = strictify(copy.deepcopy(crd_schemas()[(api_version, kind)]))
    # implicit in every CRD
    schema["properties"] = {
        **schema["properties"],
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    return jsonschema.Draft7Validator(schema)


def cr_errors(doc: dict[str, Any]) -> list[str]:
    """CRD schema errors of a Dask custom resource (empty: valid)."""
    validator = _strict_validator(doc["apiVersion"], doc["kind"])
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def validate_pod_spec(spec: dict[str, Any], where: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": where.replace("/", "-").lower()}, "spec": spec}
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def dask_pod_specs(cr: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"scheduler": cr["spec"]["scheduler"]["spec"], "worker": cr["spec"]["worker"]["spec"]}


def validate_daskcluster(cr: dict[str, Any]) -> None:
    errors = cr_errors(cr)
    assert not errors, f"DaskCluster {cr['metadata']['name']} fails the operator CRD:\n" + "\n".join(errors)
    for role, spec in dask_pod_specs(cr).items():
        validate_pod_spec(spec, f"{cr['metadata']['name']}-{role}")


def validate_object(doc: dict[str, Any]) -> None:
    """A Kubernetes object: Dask CRs against the CRD (+ pods), everything else with kubernetes-validate."""
    group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
    if group == DASK_GROUP:
        if doc["kind"] == "DaskCluster":
            validate_daskcluster(doc)
        else:
            errors = cr_errors(doc)
            assert not errors, "\n".join(errors)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


# --- the repository's manifests, rendered -------------------------------------------------------
#
# shared by tests/k8s/test_k8s.py (validation, content) and test_network_policies.py (who reaches whom)

K8S = REPO / "k8s"
NAMESPACE = "srcube"
KUSTOMIZATIONS = {
    "base": K8S / "base",
    "cpu-only": K8S / "overlays" / "cpu-only",
    "gpu": K8S / "overlays" / "gpu",
}
#: the training Job's kustomization: applied on its own, beside the stack above (k8s/README.md, "Training")
TRAINING = K8S / "training"
JOB_TEMPLATE = K8S / "prefect" / "srcube-k8s-base-job-template.json"


def load_docs(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


@functools.cache
def _render(name: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        ["kubectl", "kustomize", str(_renderable(name))], capture_output=True, text=True, timeout=60
    )
    return proc.returncode, proc.stdout, proc.stderr


def _renderable(name: str) -> Path:
    return TRAINING if name == "training" else KUSTOMIZATIONS[name]


def rendered(name: str) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize`` makes of a kustomization (a name of KUSTOMIZATIONS, or "training")."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders cannot be checked")
    rc, out, err = _render(name)
    assert rc == 0, f"kubectl kustomize {_renderable(name)} failed (rc {rc}):\n{err}"
    return load_docs(out)


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


#: the keys of ConfigMap srcube-daskcluster-spec (files under /etc/srcube in flow-run pods): the per-run cluster of
#: any flow, and the area flow's (one cell per worker, autoscaled)
FLOW_SPEC_KEY, AREA_SPEC_KEY = "daskcluster.yaml", "daskcluster-area.yaml"


def flow_spec(docs: list[dict[str, Any]], key: str = FLOW_SPEC_KEY) -> dict[str, Any]:
    """An ephemeral DaskCluster flow-run pods mount (ConfigMap srcube-daskcluster-spec, key ``key``)."""
    cm = one(docs, "ConfigMap", "srcube-daskcluster-spec")
    assert set(cm["data"]) == {FLOW_SPEC_KEY, AREA_SPEC_KEY}
    return yaml.safe_load(cm["data"][key])


def area_deployment() -> dict[str, Any]:
    """prefect.yaml's deployment of the area flow on Kubernetes."""
    (dep,) = [d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]
              if d["entrypoint"] == "srcube.flows.area:area_flow" and d["work_pool"]["name"] == "srcube-k8s"]
    return dep


@functools.cache
def job_template() -> dict[str, Any]:
    return json.loads(JOB_TEMPLATE.read_text())


def job_defaults(template: dict[str, Any]) -> dict[str, Any]:
    """The job variables' defaults, as the Prefect worker fills them in."""
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    return KubernetesWorkerJobConfiguration._get_base_config_defaults(template["variables"]["properties"])


def job_manifest(**job_variables: Any) -> dict[str, Any]:
    """The Job the Prefect worker would submit: defaults + ``job_variables`` through Prefect's templating
    (`apply_values`) and the worker's job configuration (its manifest checks and flow-run preparation)."""
    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.templating import apply_values
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    template = job_template()
    values = {**job_defaults(template), **job_variables}
    config = KubernetesWorkerJobConfiguration(**apply_values(copy.deepcopy(template["job_configuration"]), values))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="k8s-test-run"))
    return config.job_manifest


# --- NetworkPolicy evaluation -----------------------------------------------------------------
#
# Who may open a connection to whom under a set of networking.k8s.io/v1 NetworkPolicies, by the rules of
# https://kubernetes.io/docs/concepts/services-networking/network-policies/ : a pod is isolated for a
# direction when a policy in its namespace selects it with that direction in policyTypes (absent
# policyTypes: Ingress, plus Egress when the policy has an egress section); an isolated pod allows what at
# least one of those policies' rules allows (policies add up, none denies); a connection needs both the
# source's egress and the destination's ingress. A rule with no peers (from/to missing or empty) matches
# every peer, with no ports every port. A peer with a podSelector alone means pods of the policy's
# namespace, with a namespaceSelector alone every pod of the matching namespaces, with both (one list
# element) pods matching both; an ipBlock matches addresses in its CIDR outside its excepts (pods' addresses
# too, as Calico and Cilium do; the spec leaves that to the plugin). Named ports
# are the destination pod's container port names. Not modelled, as the spec leaves them to the network
# plugin or allows them always: traffic from the pod's own node (kubelet probes), hostNetwork pods,
# Services (policies see the pod behind a Service) and reply packets of an allowed connection.


@dataclass(frozen=True)
class Pod:
    """A pod as NetworkPolicy sees it: namespace, labels, address and named container ports."""

    name: str
    namespace: str
    labels: Mapping[str, str]
    ip: str
    ports: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class External:
    """An address that is no pod: the internet, cloud metadata, the Kubernetes API server."""

    name: str
    ip: str


Peer = Pod | External


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against labels ({} or None: everything)."""
    selector = selector or {}
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    assert not unknown, f"unknown label selector fields {unknown}"
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise AssertionError(f"unknown selector operator {op!r}")
        if not ok:
            return False
    return True


class Network:
    """Namespaces (name -> labels) and the NetworkPolicies in force; :meth:`allows` answers one connection."""

    def __init__(self, namespaces: Mapping[str, Mapping[str, str]], policies: list[dict[str, Any]]):
        # every namespace carries its name as a label (Kubernetes >= 1.21 sets it, immutable)
        self.namespaces = {n: {**labels, "kubernetes.io/metadata.name": n} for n, labels in namespaces.items()}
        self.policies = [p for p in policies if p.get("kind") == "NetworkPolicy"]
        for policy in self.policies:
            assert policy["apiVersion"] == "networking.k8s.io/v1", policy["apiVersion"]
            assert policy["metadata"].get("namespace"), f"NetworkPolicy {policy['metadata']['name']} has no namespace"

    @staticmethod
    def policy_types(policy: Mapping[str, Any]) -> set[str]:
        spec = policy["spec"]
        if spec.get("policyTypes"):
            return set(spec["policyTypes"])
        return {"Ingress", "Egress"} if "egress" in spec else {"Ingress"}

    def _selecting(self, pod: Pod, direction: str) -> list[dict[str, Any]]:
        return [p for p in self.policies if p["metadata"]["namespace"] == pod.namespace
                and direction in self.policy_types(p) and selector_matches(p["spec"].get("podSelector"), pod.labels)]

    def _peer_matches(self, peer: Mapping[str, Any], policy_ns: str, other: Peer) -> bool:
        if "ipBlock" in peer:
            assert not {"podSelector", "namespaceSelector"} & set(peer), "ipBlock cannot be combined with selectors"
            block = peer["ipBlock"]
            address = ipaddress.ip_address(other.ip)
            net = ipaddress.ip_network(block["cidr"])
            return address in net and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
        assert {"podSelector", "namespaceSelector"} & set(peer), f"empty peer {peer}"
        if not isinstance(other, Pod):
            return False  # selectors name pods only
        if "namespaceSelector" in peer:
            if other.namespace not in self.namespaces:
                raise AssertionError(f"namespace {other.namespace} of {other.name} is not declared")
            if not selector_matches(peer["namespaceSelector"], self.namespaces[other.namespace]):
                return False
        elif other.namespace != policy_ns:
            return False
        return selector_matches(peer.get("podSelector"), other.labels)

    @staticmethod
    def _port_matches(rule_ports: list[dict[str, Any]] | None, dst: Peer, port: int, protocol: str) -> bool:
        if not rule_ports:
            return True
        for p in rule_ports:
            if p.get("protocol", "TCP") != protocol:
                continue
            want = p.get("port")
            if want is None:
                return True
            if isinstance(want, str):  # a named port of the destination pod
                if isinstance(dst, Pod) and dst.ports.get(want) == port:
                    return True
                continue
            if want == port or (p.get("endPort") is not None and want <= port <= p["endPort"]):
                return True
        return False

    def _rules_allow(self, policies: list[dict[str, Any]], direction: str, other: Peer, dst: Peer, port: int,
                     protocol: str) -> bool:
        section, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        for policy in policies:
            for rule in policy["spec"].get(section) or []:
                peers = rule.get(peers_key)
                if peers and not any(self._peer_matches(p, policy["metadata"]["namespace"], other) for p in peers):
                    continue
                if self._port_matches(rule.get("ports"), dst, port, protocol):
                    return True
        return False

    def egress_allows(self, src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
        if not isinstance(src, Pod):
            return True
        policies = self._selecting(src, "Egress")
        return not policies or self._rules_allow(policies, "Egress", dst, dst, port, protocol)

    def ingress_allows(self, src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
        if not isinstance(dst, Pod):
            return True
        policies = self._selecting(dst, "Ingress")
        return not policies or self._rules_allow(policies, "Ingress", src, dst, port, protocol)

    def allows(self, src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
        """May ``src`` open a connection to ``dst`` on ``port``/``protocol``?"""
        assert src != dst, "a pod can always reach itself"
        return self.egress_allows(src, dst, port, protocol) and self.ingress_allows(src, dst, port, protocol)

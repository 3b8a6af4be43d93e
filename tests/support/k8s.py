"""Offline validators of Kubernetes objects: Dask custom resources against the operator's CRD (made strict),
everything else with kubernetes-validate."""

from __future__ import annotations

import copy
import functools
import glob
from pathlib import Path
from typing import Any

import dask_kubernetes
import jsonschema
import kubernetes_validate
import yaml

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



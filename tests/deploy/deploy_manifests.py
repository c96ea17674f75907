"""Render the Helm chart and build the kustomizations, then validate each object.

The chart is rendered in-process by the real Helm engine (helm-python-sdk);
the kustomizations are built by ``kubectl kustomize``. Nothing here talks to
a cluster: no cluster exists on these machines. Every object is validated
strictly (unknown fields fail) against the official Kubernetes schemas from
kubernetes-validate, or, for the ServiceMonitor custom resource, against the
prometheus-operator CRD's schema vendored under ``schemas/``. A kind with no
schema is an error, never a pass.
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from helpers import ROOT

CHART = ROOT / "helm" / "genesis"
GPU_VALUES = CHART / "ci" / "gpu-values.yaml"
KUSTOMIZE_BASE = ROOT / "k8s" / "base"
KUSTOMIZE_GPU = ROOT / "k8s" / "overlays" / "gpu"
SCHEMAS = Path(__file__).parent / "schemas"

RELEASE = "genesis"
NAMESPACE = "genesis"
SANDBOX_NAMESPACE = "genesis-sandboxes"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the
# newest kubernetes-validate knows: an API removed or added in between fails one.
KUBE_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json"}

Manifest = dict[str, Any]

# The chart refuses to render the API without tokens (api.tokens), so the tests
# hand it this tokens file. Its entry's sha256 (64 zeros) is no token's hash.
TOKENS_YAML = 'tokens:\n  - name: ci\n    role: viewer\n    sha256: "' + "0" * 64 + '"\n'
WITH_TOKENS = {"api": {"tokens": {"tokensYaml": TOKENS_YAML}}}


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """The layers deep-merged, later ones winning, as Helm merges ``-f`` files."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


@functools.cache
def _chart():
    import helm_python

    return helm_python.Chart.load(CHART)


def load_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def render_chart(values: dict[str, Any] | None = None, *, release: str = RELEASE) -> list[Manifest]:
    """Every object the chart renders with ``values`` (hooks included, NOTES.txt not)."""
    rendered = _chart().render(values, name=release, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def render_notes(values: dict[str, Any] | None = None) -> str:
    rendered = _chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in rendered.items() if path.endswith("NOTES.txt"))


def lint_chart(values: dict[str, Any] | None = None, *, kube_version: str = KUBE_VERSIONS[0]) -> dict[str, Any]:
    import helm_python

    return helm_python.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}")


def kustomize(directory: Path) -> list[Manifest]:
    proc = subprocess.run(["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {directory} failed: {proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def kinds(objects: list[Manifest]) -> Counter:
    return Counter(obj["kind"] for obj in objects)


def find(objects: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of ``kind`` (named ``name``, or a prefix of a hashed name)."""
    matches = [obj for obj in objects if obj["kind"] == kind
               and (name is None or obj["metadata"]["name"] == name
                    or obj["metadata"]["name"].startswith(f"{name}-") and kind == "ConfigMap")]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {[m['metadata']['name'] for m in matches]}"
    return matches[0]


def _strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` wherever ``properties`` are listed.

    This is how the apiserver's strict field validation treats a structural
    CRD schema: a field the schema does not name is an error.
    """
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


@functools.cache
def _crd_validator(filename: str) -> jsonschema.Validator:
    schema = _strict(json.loads((SCHEMAS / filename).read_text()))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def validate_object(obj: Manifest, kube_version: str) -> str:
    """Validate strictly; returns which schema did it. Raises on any error or a missing schema."""
    crd = CRD_SCHEMAS.get((obj.get("apiVersion"), obj.get("kind")))
    if crd is None:
        kubernetes_validate.validate(obj, kube_version, strict=True)
        return "kubernetes"
    _crd_validator(crd).validate(obj)
    # The CRD leaves metadata to the apiserver: check it as the official ObjectMeta.
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]},
                                 kube_version, strict=True)
    return f"crd:{crd}"


def validate_all(objects: list[Manifest]) -> Counter:
    """Validate every object against every version in KUBE_VERSIONS; count schemas used."""
    used: Counter = Counter()
    for obj in objects:
        for version in KUBE_VERSIONS:
            try:
                used[validate_object(copy.deepcopy(obj), version)] += 1
            except Exception as exc:  # noqa: BLE001 - re-raised with the object named
                name = f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"
                raise AssertionError(f"{name} is invalid for Kubernetes {version}: {exc}") from exc
    return used


def pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def genesis_yaml(objects: list[Manifest]) -> str:
    """genesis.yaml as the orchestrator pod sees it: from the ConfigMap its volume names."""
    deployment = find(objects, "Deployment")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "config")
    configmap = find(objects, "ConfigMap", volume["configMap"]["name"])
    assert configmap["metadata"]["name"] == volume["configMap"]["name"]
    return configmap["data"]["genesis.yaml"]

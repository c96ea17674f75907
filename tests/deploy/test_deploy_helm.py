"""The Helm chart: rendered by the real Helm engine, linted, and every object
validated strictly. What only a real cluster shows (scheduling, admission,
RBAC and NetworkPolicy enforcement) is listed in docs/deploy.md."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import yaml

from deploy.deploy_manifests import (CHART, GPU_VALUES, NAMESPACE, SANDBOX_NAMESPACE, TOKENS_YAML, WITH_TOKENS, find,
                                     genesis_yaml, kinds, lint_chart, load_values, merged, pod_spec, render_chart,
                                     render_notes, validate_all)
from orchestrator.settings import Settings

# With the API's tokens from a Secret of the user's (ci/gpu-values.yaml); the
# tests' default values (WITH_TOKENS) have the chart make that Secret.
GPU_KINDS = Counter({"Namespace": 1, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "ConfigMap": 2,
                     "Deployment": 1, "Job": 1, "Service": 2, "ServiceMonitor": 1, "NetworkPolicy": 2,
                     "ResourceQuota": 1, "LimitRange": 1})
DEFAULT_KINDS = GPU_KINDS + Counter({"Secret": 1})
WITH_URLS = {"postgresql": {"url": "postgresql+psycopg://genesis:pw@db.example:5432/genesis"},
             "nats": {"url": "nats://nats.example:4222", "user": "genesis", "password": "pw"}}


@pytest.fixture(scope="module")
def default_objects():
    return render_chart(WITH_TOKENS)


@pytest.fixture(scope="module")
def gpu_objects():
    return render_chart(load_values(GPU_VALUES))


def test_default_render_has_every_object_and_each_validates(default_objects):
    assert kinds(default_objects) == DEFAULT_KINDS
    used = validate_all(default_objects)
    assert used["crd:servicemonitor-monitoring.coreos.com-v1.json"] == 2  # one per Kubernetes version
    assert sum(used.values()) == 2 * len(default_objects)


def test_gpu_render_has_every_object_and_each_validates(gpu_objects):
    assert kinds(gpu_objects) == GPU_KINDS
    validate_all(gpu_objects)


def test_render_with_urls_adds_the_secrets_and_they_validate():
    objects = render_chart(merged(WITH_TOKENS, WITH_URLS))
    assert kinds(objects) == DEFAULT_KINDS + Counter({"Secret": 2})
    validate_all(objects)
    postgres, nats = find(objects, "Secret", "genesis-postgres"), find(objects, "Secret", "genesis-nats")
    assert postgres["stringData"] == {"url": WITH_URLS["postgresql"]["url"]}
    assert nats["stringData"] == {"url": "nats://nats.example:4222", "user": "genesis", "password": "pw"}
    # The migration hook reads the PostgreSQL Secret, so it is a hook too, created before the Job.
    annotations = postgres["metadata"]["annotations"]
    job = find(objects, "Job", "genesis-migrate")["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == job["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(annotations["helm.sh/hook-weight"]) < int(job["helm.sh/hook-weight"])


VARIATIONS = {
    "replicas-3": {"replicaCount": 3},
    "nats-off": {"nats": {"enabled": False}},
    "no-socket-with-registry": {"snapshotBuilder": {"dockerSocket": False},
                                "kubernetes": {"registry": "registry.example:5000", "imagePullSecrets": ["regcred"]},
                                "extraEnv": [{"name": "DOCKER_HOST", "value": "tcp://builder.example:2376"}]},
    "existing-secrets": {"postgresql": {"existingSecret": "pg-app"}, "nats": {"existingSecret": "nats-app"},
                         "api": {"tokens": {"existingSecret": "api-app", "tokensYaml": ""}}},
    "namespace-made-elsewhere": {"sandboxes": {"createNamespace": False, "namespace": "sandboxes-a"}},
    "decorated": {"podAnnotations": {"example.com/team": "ml"}, "podLabels": {"tier": "control"},
                  "imagePullSecrets": [{"name": "regcred"}], "serviceAccount": {"annotations": {"a": "b"}},
                  "serviceMonitor": {"labels": {"release": "prometheus"}, "interval": "15s"},
                  "nodeSelector": {"kubernetes.io/os": "linux"},
                  "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "genesis",
                                   "effect": "NoSchedule"}],
                  "migrations": {"enabled": False}},
}


@pytest.mark.parametrize("name", sorted(VARIATIONS))
def test_variations_render_and_validate(name):
    objects = render_chart(merged(WITH_TOKENS, VARIATIONS[name]), release="prod")
    validate_all(objects)
    assert find(objects, "Deployment", "prod-genesis")
    settings = _settings(objects)
    assert settings.kubernetes.namespace == find(objects, "Role")["metadata"]["namespace"]


@pytest.mark.parametrize("values", [None, "gpu"], ids=["default", "gpu"])
def test_lint_passes_strictly(values):
    report = lint_chart(load_values(GPU_VALUES) if values else WITH_TOKENS)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    assert report["total_charts_linted"] == 1


@pytest.mark.parametrize("values, key", [
    ({"replicaCount": "two"}, "replicaCount"),
    ({"replicaCount": 1.5}, "replicaCount"),
    ({"gpu": {"count": -1}}, "count"),
    ({"gpu": {"enabled": True, "count": 0}}, "count"),
    ({"gpu": {"enabled": "yes"}}, "enabled"),
    ({"sandboxes": {"namespace": "Not_A_Namespace"}}, "namespace"),
    ({"sandboxes": {"quota": {"memory": "lots"}}}, "memory"),
    ({"snapshotBuilder": {"socketGroup": "docker"}}, "socketGroup"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"replicas": 2}, "replicas"),
    ({"api": {"port": 70000}}, "port"),
    ({"api": {"tokens": {"secret": "x"}}}, "secret"),
    ({"api": {"service": {"type": "ExternalName"}}}, "type"),
    ({"api": {"ingress": {"enabled": True}}}, "host"),
    ({"api": {"ingress": {"paths": [{"path": "api", "pathType": "Prefix"}]}}}, "path"),
    ({"api": {"allowedFrom": []}}, "allowedFrom"),
    ({"api": {"allowedFrom": [{"podSelector": {"matchLabel": {"a": "b"}}}]}}, "matchLabel"),
    ({"metrics": {"allowedFrom": [{}]}}, "allowedFrom"),
], ids=["replicas-string", "replicas-float", "gpu-negative", "gpu-on-without-count", "gpu-enabled-string",
        "bad-namespace", "bad-memory", "socket-group-name", "bad-pull-policy", "unknown-key", "api-port-range",
        "api-tokens-unknown-key", "api-service-type", "ingress-without-host", "ingress-relative-path",
        "api-open-to-no-peer", "peer-typo", "metrics-empty-peer"])
def test_values_schema_rejects_bad_values(values, key):
    import helm_python

    values = merged(WITH_TOKENS, values)
    with pytest.raises(helm_python.HelmError) as caught:
        render_chart(values)
    assert key in str(caught.value)
    report = lint_chart(values)
    assert any(m["severity"] == 3 and key in m["error"] for m in report["messages"]), report


@pytest.mark.parametrize("values", [
    {"postgresql": {"url": "postgresql://x", "existingSecret": "pg"}},
    {"nats": {"url": "nats://x:4222", "existingSecret": "nats"}},
    {"api": {"tokens": {"tokensYaml": TOKENS_YAML, "existingSecret": "api"}}},
], ids=["postgresql", "nats", "api-tokens"])
def test_url_and_existing_secret_together_fail(values):
    import helm_python

    with pytest.raises(helm_python.HelmError, match="not both"):
        render_chart(merged(WITH_TOKENS, values))


def test_existing_secrets_are_referenced_not_created():
    objects = render_chart({"postgresql": {"existingSecret": "pg-app"}, "nats": {"existingSecret": "nats-app"},
                            "api": {"tokens": {"existingSecret": "api-app"}}})
    assert "Secret" not in kinds(objects)
    tokens = next(v for v in pod_spec(find(objects, "Deployment"))["volumes"] if v["name"] == "api-tokens")
    assert tokens["secret"]["secretName"] == "api-app"
    for workload in (find(objects, "Deployment"), find(objects, "Job")):
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"]
                for e in pod_spec(workload)["containers"][0]["env"] if "valueFrom" in e}
        assert refs["GENESIS_DATABASE_URL"] == "pg-app"
        if workload["kind"] == "Deployment":
            assert {refs[n] for n in ("GENESIS_NATS_URL", "GENESIS_NATS_USER", "GENESIS_NATS_PASSWORD",
                                      "GENESIS_NATS_TOKEN")} == {"nats-app"}


def _settings(objects) -> Settings:
    settings = Settings.model_validate(yaml.safe_load(genesis_yaml(objects)))
    settings.capacity()  # the memory budget parses
    return settings


def test_default_config_is_valid_genesis_settings(default_objects):
    settings = _settings(default_objects)
    assert settings.runtime == "kubernetes"
    assert settings.kubernetes.namespace == SANDBOX_NAMESPACE
    assert str(settings.home) == "/var/lib/genesis" and str(settings.images_dir) == "/opt/genesis/images"
    assert (settings.metrics_address, settings.metrics_port) == ("0.0.0.0", 9464)
    assert settings.gpus == [] and settings.kubernetes.runtime_class is None
    quota = find(default_objects, "ResourceQuota", "sandboxes")["spec"]["hard"]
    assert "requests.nvidia.com/gpu" not in quota
    # The controller's budget is the namespace's quota.
    assert settings.cpu_budget == float(quota["requests.cpu"]) and settings.memory_budget == quota["requests.memory"]


def test_gpu_config_hands_out_gpus_on_gpu_nodes(gpu_objects):
    values = load_values(GPU_VALUES)
    settings = _settings(gpu_objects)
    assert settings.gpus == [str(i) for i in range(values["gpu"]["count"])]
    assert settings.kubernetes.namespace == SANDBOX_NAMESPACE
    assert settings.kubernetes.gpu_node_selector == values["gpu"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert settings.kubernetes.gpu_tolerations == values["gpu"]["tolerations"]
    assert settings.kubernetes.runtime_class == "nvidia"
    assert settings.repos["monorepo"].validation.command[0] == "python3"
    quota = find(gpu_objects, "ResourceQuota", "sandboxes")["spec"]["hard"]
    assert quota["requests.nvidia.com/gpu"] == str(values["gpu"]["count"])
    assert settings.capacity().gpus == ("0", "1")


def test_registry_and_pull_policy_reach_the_config():
    objects = render_chart(merged(WITH_TOKENS, {"kubernetes": {
        "registry": "registry.example:5000", "imagePullPolicy": "IfNotPresent", "imagePullSecrets": ["regcred"]}}))
    settings = _settings(objects)
    assert settings.kubernetes.registry == "registry.example:5000"
    assert settings.kubernetes.image_pull_policy == "IfNotPresent"
    assert settings.kubernetes.image_pull_secrets == ["regcred"]


def test_egress_and_the_nodes_pids_limit_reach_the_config(default_objects):
    settings = _settings(default_objects)
    assert settings.sandbox_egress is False and settings.kubernetes.pod_pids_limit is None
    objects = render_chart(merged(WITH_TOKENS, {"sandboxes": {
        "egress": True, "egressExcept": ["203.0.113.10/32"], "podPidsLimit": 4096}}))
    settings = _settings(objects)
    assert settings.sandbox_egress is True and settings.kubernetes.egress_except == ["203.0.113.10/32"]
    assert settings.kubernetes.pod_pids_limit == 4096


def test_nats_off_switches_nats_off_in_config_and_env():
    objects = render_chart(merged(WITH_TOKENS, {"nats": {"enabled": False}}))
    assert _settings(objects).nats.url is None
    names = {e["name"] for e in pod_spec(find(objects, "Deployment"))["containers"][0]["env"]}
    assert not any(name.startswith("GENESIS_NATS") for name in names)


def test_docker_socket_can_be_turned_off():
    objects = render_chart(merged(WITH_TOKENS, {"snapshotBuilder": {"dockerSocket": False}}))
    spec = pod_spec(find(objects, "Deployment"))
    assert not any("hostPath" in v for v in spec["volumes"])
    assert "supplementalGroups" not in spec["securityContext"]
    assert "DOCKER_HOST" not in {e["name"] for e in spec["containers"][0]["env"]}
    validate_all(objects)


def test_dashboard_configmap_carries_the_dashboard(default_objects):
    dashboard = find(default_objects, "ConfigMap", "genesis-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["genesis.json"]) == json.loads((CHART / "dashboards/genesis.json").read_text())
    relabelled = render_chart(merged(WITH_TOKENS, {"dashboard": {"labels": {"grafana_dashboard": "genesis"}}}))
    assert find(relabelled, "ConfigMap", "genesis-dashboard")["metadata"]["labels"]["grafana_dashboard"] == "genesis"
    without = render_chart(merged(WITH_TOKENS, {"dashboard": {"enabled": False}}))
    assert kinds(without)["ConfigMap"] == 1  # genesis-config only


def test_service_monitor_can_be_turned_off():
    assert "ServiceMonitor" not in kinds(render_chart(merged(WITH_TOKENS, {"serviceMonitor": {"enabled": False}})))


def test_replicas_and_notes():
    objects = render_chart(merged(WITH_TOKENS, {"replicaCount": 3}))
    assert find(objects, "Deployment")["spec"]["replicas"] == 3
    assert "standbys" in render_notes(merged(WITH_TOKENS, {"replicaCount": 3}))
    assert "standbys" not in render_notes(WITH_TOKENS)


def test_objects_land_in_the_right_namespaces(default_objects):
    for obj in default_objects:
        in_sandboxes = obj["kind"] in {"Role", "RoleBinding", "ResourceQuota", "LimitRange"} \
            or obj["metadata"]["name"] == "default-deny"
        expected = None if obj["kind"] == "Namespace" else SANDBOX_NAMESPACE if in_sandboxes else NAMESPACE
        assert obj["metadata"].get("namespace") == expected, obj["metadata"]
    namespace = find(default_objects, "Namespace", SANDBOX_NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_object_carries_the_standard_labels(default_objects):
    for obj in default_objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "genesis", obj["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == "genesis"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"

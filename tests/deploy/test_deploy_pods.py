"""The orchestrator's and the migration Job's pods, from the chart and from
k8s/: locked down (non-root, read-only root, no capabilities, RuntimeDefault
seccomp), probed, and wired to the Secrets, ConfigMap and Service as the
orchestrator reads them. Admission (Pod Security) and the probes answering
are what only a real cluster shows."""

from __future__ import annotations

import pytest

from deploy.deploy_manifests import (GPU_VALUES, KUSTOMIZE_BASE, KUSTOMIZE_GPU, WITH_TOKENS, find, genesis_yaml,
                                     kustomize, load_values, pod_spec, render_chart)
from orchestrator.settings import load_settings

SOURCES = {
    "k8s-base": lambda: kustomize(KUSTOMIZE_BASE),
    "k8s-gpu": lambda: kustomize(KUSTOMIZE_GPU),
    "chart": lambda: render_chart(WITH_TOKENS),
    "chart-gpu": lambda: render_chart(load_values(GPU_VALUES)),
}
NATS_OPTIONAL = {"GENESIS_NATS_USER": "user", "GENESIS_NATS_PASSWORD": "password", "GENESIS_NATS_TOKEN": "token"}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def objects(request):
    return SOURCES[request.param]()


def _workloads(objects):
    return [find(objects, "Deployment", "genesis"), find(objects, "Job", "genesis-migrate")]


def _env(container) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_pods_run_locked_down(objects):
    for workload in _workloads(objects):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 1000
            assert context["allowPrivilegeEscalation"] is False
            assert context.get("privileged", False) is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert set(container["resources"]) == {"requests", "limits"}


def test_writable_paths_are_emptydirs(objects):
    for workload in _workloads(objects):
        spec = pod_spec(workload)
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
        for path in ("/var/lib/genesis", "/tmp"):
            assert "emptyDir" in volumes[mounts[path]["name"]], (workload["kind"], path)


def test_job_runs_migrations_once(objects):
    job = find(objects, "Job", "genesis-migrate")
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    assert 0 < job["spec"]["backoffLimit"] <= 6
    assert spec["containers"][0]["args"] == ["db", "upgrade"]
    assert "hostPath" not in str(spec["volumes"])  # migrations need no Docker socket
    deployment = find(objects, "Deployment", "genesis")
    assert spec["containers"][0]["image"] == pod_spec(deployment)["containers"][0]["image"]
    assert _env(spec["containers"][0])["GENESIS_DATABASE_URL"] == \
        _env(pod_spec(deployment)["containers"][0])["GENESIS_DATABASE_URL"]


def test_orchestrator_is_probed_on_its_metrics_port(objects):
    container = pod_spec(find(objects, "Deployment", "genesis"))["containers"][0]
    assert container["image"] == "genesis/orchestrator:0.1.0"
    assert container["args"] == ["serve"]
    assert container["ports"][0] == {"name": "metrics", "containerPort": 9464, "protocol": "TCP"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


def test_docker_socket_is_the_only_host_path(objects):
    spec = pod_spec(find(objects, "Deployment", "genesis"))
    host_paths = [v for v in spec["volumes"] if "hostPath" in v and v["name"] != "repos"]
    assert host_paths == [{"name": "docker-socket", "hostPath": {"path": "/var/run/docker.sock", "type": "Socket"}}]
    assert spec["securityContext"]["supplementalGroups"] == [999]
    assert _env(spec["containers"][0])["DOCKER_HOST"] == "unix:///var/run/docker.sock"


def test_secrets_reach_the_environment(objects):
    env = _env(pod_spec(find(objects, "Deployment", "genesis"))["containers"][0])
    assert env["GENESIS_CONFIG"] == "/etc/genesis/genesis.yaml"
    assert env["GENESIS_DATABASE_URL"] == {"secretKeyRef": {"name": "genesis-postgres", "key": "url"}}
    assert env["GENESIS_NATS_URL"] == {"secretKeyRef": {"name": "genesis-nats", "key": "url"}}
    for name, key in NATS_OPTIONAL.items():
        assert env[name] == {"secretKeyRef": {"name": "genesis-nats", "key": key, "optional": True}}


def test_config_is_mounted_where_genesis_config_points(objects):
    spec = pod_spec(find(objects, "Deployment", "genesis"))
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "config")
    env = _env(spec["containers"][0])
    assert env["GENESIS_CONFIG"] == f"{mount['mountPath']}/genesis.yaml" and mount["readOnly"] is True
    assert genesis_yaml(objects)  # the ConfigMap the volume names exists


def test_orchestrator_reads_the_pods_environment(objects, tmp_path, monkeypatch):
    """The env names the manifests set are the ones load_settings reads, with genesis.yaml."""
    config = tmp_path / "genesis.yaml"
    config.write_text(genesis_yaml(objects))
    env = _env(pod_spec(find(objects, "Deployment", "genesis"))["containers"][0])
    secrets = {"GENESIS_DATABASE_URL": "postgresql+psycopg://u:p@db:5432/genesis", "GENESIS_NATS_URL": "nats://n:4222",
               "GENESIS_NATS_USER": "agent", "GENESIS_NATS_PASSWORD": "s3cret", "GENESIS_NATS_TOKEN": "tok"}
    assert {name for name, value in env.items() if isinstance(value, dict)} == set(secrets)
    for name, value in env.items():
        if name != "GENESIS_CONFIG":
            monkeypatch.setenv(name, secrets.get(name, value))
    settings = load_settings(config)
    assert settings.db_url == secrets["GENESIS_DATABASE_URL"]
    assert settings.nats.servers() == ["nats://n:4222"] and settings.nats.user == "agent"
    assert settings.nats.password.get_secret_value() == "s3cret" and settings.nats.token.get_secret_value() == "tok"
    assert settings.docker_url == "unix:///var/run/docker.sock"
    assert str(settings.home) == "/var/lib/genesis" and settings.runtime == "kubernetes"


def test_metrics_service_and_monitor_select_the_orchestrator(objects):
    deployment = find(objects, "Deployment", "genesis")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = find(objects, "Service", "genesis-metrics")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9464, "targetPort": "metrics", "protocol": "TCP"}]
    monitor = find(objects, "ServiceMonitor", "genesis")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_sandbox_namespace_guards(objects):
    policy = find(objects, "NetworkPolicy", "default-deny")
    assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    quota = find(objects, "ResourceQuota", "sandboxes")["spec"]["hard"]
    assert {"pods", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"} <= set(quota)
    limits = find(objects, "LimitRange", "sandboxes")["spec"]["limits"]
    assert [item["type"] for item in limits] == ["Container"]
    assert {"default", "defaultRequest", "max"} <= set(limits[0])

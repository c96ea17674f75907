"""Each runtime declares what it can honour (``runtime.capabilities``), and
intake refuses the rest: wiring checked without an engine or a cluster.

Neither runtime connects when it is made (the Docker engine is connected
on first use, a kubeconfig is only read), so these tests need neither.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import yaml

from orchestrator.app import App
from orchestrator.domain.capabilities import Capabilities
from orchestrator.errors import GenesisError, RuntimeFailure
from orchestrator.runtimes.docker import DockerRuntime
from orchestrator.runtimes.kubernetes import from_settings
from orchestrator.settings import Settings

NOWHERE = "unix:///nonexistent/docker.sock"  # any connection attempt would fail


def kubeconfig(tmp_path) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    return str(path)


def kube_settings(tmp_path, **kubernetes) -> Settings:
    return Settings(home=tmp_path / "home", runtime="kubernetes", docker_url=NOWHERE,
                    kubernetes={"kubeconfig": kubeconfig(tmp_path), **kubernetes})


def test_docker_declares_network_host_gpus_and_disk_use_without_connecting():
    runtime = DockerRuntime(base_url=NOWHERE)
    assert runtime.capabilities == Capabilities(network=True, gpus="devices", disk_usage=True)
    runtime.close()  # nothing was connected, nothing to close


def test_kubernetes_declares_no_network_counted_gpus_events_its_registry_and_disk_quotas(tmp_path):
    runtime = from_settings(kube_settings(tmp_path, registry="registry.example:5000"))
    try:
        assert runtime.capabilities == Capabilities(gpus="count", events=True,
                                                    image_registry="registry.example:5000", disk_quota=True,
                                                    disk_storage="ephemeral-storage limits")
        with pytest.raises(RuntimeFailure) as info:  # the protocol's default for what it does not declare
            asyncio.run(runtime.disk_usage())
        assert info.value.code == "unsupported_by_runtime"
    finally:
        runtime.close()


def request(**overrides) -> dict:
    return {"experiment_id": str(uuid.uuid4()), "instance_id": "i-1", "repo": "monorepo", "base_ref": "HEAD",
            "changes": {"files": [{"path": "a.py", "content": "x = 1\n"}]},
            "resources": {"cpu": 1, "memory": "256Mi"}, **overrides}


def test_intake_refuses_what_the_kubernetes_runtime_cannot_honour(tmp_path):
    app = App(kube_settings(tmp_path))
    try:
        result = app.intake.submit(json.dumps(request(network=True)))
        assert result.error is not None and result.error.code == "unsupported_by_runtime"
        assert result.view.phase.value == "Failed" and "network" in result.view.message
    finally:
        app.close()


def test_intake_on_docker_needs_no_engine_and_lets_network_through(tmp_path):
    app = App(Settings(home=tmp_path / "home", docker_url=NOWHERE))
    try:
        result = app.intake.submit(json.dumps(request(network=True)))
        assert result.error is not None and result.error.code == "unknown_repo"  # past the capability check
    finally:
        app.close()


def test_gpus_a_runtime_cannot_give_are_refused_at_start(tmp_path):
    app = App(kube_settings(tmp_path, namespace="sandboxes").model_copy(update={"gpus": "auto"}))
    try:
        with pytest.raises(GenesisError) as info:
            app.resolve_gpus()
        assert info.value.code == "bad_config" and "auto" in str(info.value)
    finally:
        app.close()

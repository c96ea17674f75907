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
from orchestrator.runtimes.docker import EGRESS_OFF, DockerRuntime, registered_capabilities
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


def test_docker_declares_host_gpus_disk_use_exact_pids_and_seccomp_without_connecting():
    runtime = DockerRuntime(base_url=NOWHERE)
    assert runtime.capabilities == Capabilities(network=False, network_note=EGRESS_OFF, gpus="devices",
                                                disk_usage=True, seccomp=True, pids="exact", pools="hot", exit_events=True)
    assert runtime.prepare_egress() == EGRESS_OFF  # egress not allowed: nothing to prepare, nothing connected
    runtime.close()  # nothing was connected, nothing to close


def test_docker_with_egress_allowed_declares_no_network_until_it_is_filtered():
    runtime = DockerRuntime(base_url="tcp://elsewhere.example:2375", egress_installation="default")
    assert not runtime.capabilities.network and "not set up" in runtime.capabilities.network_note
    why = runtime.prepare_egress()  # an engine on another host: its traffic cannot be filtered here
    assert why is not None and "another host" in why
    assert runtime.capabilities.refusals(network=True, gpus=0) == [f"network: true ({why})"]
    runtime.close()


def test_kubernetes_declares_no_network_counted_gpus_events_its_registry_and_disk_quotas(tmp_path):
    runtime = from_settings(kube_settings(tmp_path, registry="registry.example:5000"))
    try:
        assert runtime.capabilities == Capabilities(
            gpus="count", events=True, image_registry="registry.example:5000", disk_quota=True,
            disk_storage="ephemeral-storage limits", pids="none", pools="warm",
            network_note="sandbox_egress is off: the namespace's default-deny policy holds")
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


def test_kubernetes_with_egress_and_a_node_pids_limit_declares_both(tmp_path):
    settings = kube_settings(tmp_path, pod_pids_limit=1024).model_copy(update={"sandbox_egress": True})
    runtime = from_settings(settings)
    try:
        declared = runtime.capabilities
        assert (declared.network, declared.pids, declared.max_pids) == (True, "node", 1024)
        assert declared.refusals(network=True, gpus=0) == [] and declared.pids_refusal(1024) is None
        assert declared.pids_refusal(2048) == "pids 2048 > 1024 (the node's podPidsLimit, which every sandbox gets)"
    finally:
        runtime.close()


def test_intake_on_kubernetes_refuses_pids_past_the_nodes_limit(tmp_path):
    app = App(kube_settings(tmp_path, pod_pids_limit=1024))
    try:
        result = app.intake.submit(json.dumps(request(resources={"cpu": 1, "memory": "256Mi", "pids": 2048})))
        assert result.error is not None and result.error.code == "resources_exceeded"
        assert "podPidsLimit" in result.view.message
    finally:
        app.close()


def test_intake_on_docker_needs_no_engine_and_refuses_network_by_default(tmp_path):
    app = App(Settings(home=tmp_path / "home", docker_url=NOWHERE))
    try:
        result = app.intake.submit(json.dumps(request(network=True)))
        assert result.error is not None and result.error.code == "unsupported_by_runtime"
        assert "sandbox_egress is off" in result.view.message
        result = app.intake.submit(json.dumps(request()))
        assert result.error is not None and result.error.code == "unknown_repo"  # past the capability check
    finally:
        app.close()


def test_intake_on_docker_refuses_network_where_egress_cannot_be_filtered(tmp_path):
    app = App(Settings(home=tmp_path / "home", docker_url="tcp://elsewhere.example:2375", sandbox_egress=True))
    try:
        result = app.intake.submit(json.dumps(request(network=True)))
        assert result.error is not None and result.error.code == "unsupported_by_runtime"
        assert "egress filtering unavailable" in result.view.message and "another host" in result.view.message
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


RUNSC = {"path": "/usr/bin/runsc", "runtimeArgs": ["--platform=ptrace", "--network=none"]}


class EngineInfo:
    """A Docker client that answers only ``info()``, with the runtimes given."""

    def __init__(self, runtimes: dict) -> None:
        self.runtimes, self.asked = runtimes, 0

    def info(self) -> dict:
        self.asked += 1
        return {"Runtimes": self.runtimes, "DefaultRuntime": "runc"}

    def close(self) -> None:
        pass


@pytest.mark.parametrize("args, network, seccomp", [
    (["--platform=ptrace", "--network=none"], False, False),
    (["--network", "none", "--oci-seccomp"], False, True),
    (["-network=host", "--oci-seccomp=true"], True, True),
    (["--oci-seccomp=false"], True, False),  # runsc's default network ("sandbox"): Docker's bridge
])
def test_runsc_capabilities_are_read_from_its_registration(args, network, seccomp):
    declared = registered_capabilities("runsc", {"path": "/usr/bin/runsc", "runtimeArgs": args})
    assert (declared.network, declared.seccomp, declared.kernel, declared.gpus) == (network, seccomp, "gvisor", "none")
    assert declared.sandbox_runtime == "runsc" and declared.disk_usage


def test_any_other_registered_runtime_is_taken_as_runc():
    assert registered_capabilities("crun", {"path": "/usr/bin/crun"}) == Capabilities(
        network=True, gpus="devices", disk_usage=True, seccomp=True, pids="exact", pools="hot", exit_events=True, sandbox_runtime="crun")
    # gVisor under another name is still gVisor.
    assert registered_capabilities("gvisor", RUNSC).kernel == "gvisor"


def test_docker_under_runsc_asks_the_engine_once_and_refuses_network():
    engine = EngineInfo({"runc": {"path": "runc"}, "runsc": RUNSC})
    runtime = DockerRuntime(engine, sandbox_runtime="runsc")
    assert runtime.capabilities.refusals(network=True, gpus=0) == [
        "network: true (sandboxes on runsc get no network)"]
    assert runtime.capabilities.kernel == "gvisor" and not runtime.capabilities.seccomp
    assert engine.asked == 1


def test_runc_named_needs_no_engine():
    runtime = DockerRuntime(base_url=NOWHERE, sandbox_runtime="runc")
    assert runtime.capabilities.sandbox_runtime == "runc" and not runtime.capabilities.network  # egress off


def test_start_refuses_a_runtime_the_engine_has_not_registered(tmp_path):
    app = App(Settings(home=tmp_path / "home", docker_url=NOWHERE, sandbox_runtime="runsc"))
    app.__dict__["docker"] = DockerRuntime(EngineInfo({"runc": {"path": "runc"}}), sandbox_runtime="runsc")
    try:
        with pytest.raises(GenesisError) as info:
            app.intake
        assert info.value.code == "bad_config"
        assert "knows no runtime 'runsc' (it knows runc)" in str(info.value) and "daemon.json" in str(info.value)
    finally:
        app.close()


def test_sandbox_runtime_is_a_docker_setting(tmp_path):
    app = App(kube_settings(tmp_path).model_copy(update={"sandbox_runtime": "runsc"}))
    try:
        with pytest.raises(GenesisError) as info:
            app.executor
        assert info.value.code == "bad_config" and "kubernetes.runtime_class" in str(info.value)
    finally:
        app.close()


def test_a_host_without_iptables_gives_no_network_and_says_why(monkeypatch):
    from orchestrator.runtimes import docker_egress
    monkeypatch.setattr(docker_egress.shutil, "which", lambda name: None)
    runtime = DockerRuntime(base_url="unix:///var/run/docker.sock", egress_installation="default")
    assert runtime.prepare_egress() == "egress filtering unavailable: no iptables command on this host"
    assert not runtime.capabilities.network
    runtime.close()


class Networks:
    """A Docker client's ``networks`` holding one network with the attributes given."""

    def __init__(self, attrs: dict) -> None:
        self.network = type("Network", (), {"attrs": attrs})()

    def get(self, name):
        return self.network


def test_a_network_of_that_name_that_is_not_genesiss_bridge_is_refused():
    from orchestrator.runtimes import docker_egress
    client = type("Client", (), {})()
    client.networks = Networks({"Driver": "bridge", "Options": {docker_egress.ICC_OPTION: "true"}})
    with pytest.raises(docker_egress.EgressUnavailable, match="not Genesis's filtered bridge"):
        docker_egress.ensure_network(client, installation="default", labels={})


def test_a_sandbox_with_network_is_not_created_without_the_filtered_network():
    from orchestrator.errors import RequestRejected
    from orchestrator.runtimes.base import SandboxSpec
    runtime = DockerRuntime(base_url=NOWHERE)
    spec = SandboxSpec(name="genesis-x-a1", image="img", labels={}, bundle=b"{}", cpu=1, memory_bytes=2**28,
                       pids=64, network=True)
    with pytest.raises(RequestRejected) as info:
        asyncio.run(runtime.create(spec))
    assert info.value.code == "unsupported_by_runtime" and "sandbox_egress is off" in str(info.value)

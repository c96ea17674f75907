"""Fixtures for the kubernetes runtime: the API emulator, a Docker-backed
test kubelet, and runtimes of both kinds built the way Genesis builds them.

No Kubernetes cluster can run here (see tests/k8s/kubeapi.py for what the
emulator adds to kmock, and tests/k8s/kubelet.py for what the kubelet
stand-in honours and what it cannot).
"""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client as k8s

from kubeapi import RunningApiServer
from helpers import RUN_ID, TEST_LABEL
from kubelet import DockerKubelet
from orchestrator.settings import RepoConfig

NAMESPACE = "genesis-sandboxes"


@pytest.fixture
def apiserver():
    with RunningApiServer() as server:
        yield server


def kube_runtime_for(server: RunningApiServer, settings, *, egress: bool = False,
                     pod_pids_limit: int | None = None, **options):
    from orchestrator.runtimes.kubernetes import KubernetesRuntime
    from orchestrator.runtimes.kubernetes_pods import PodOptions

    configuration = k8s.Configuration()
    configuration.host = server.url
    return KubernetesRuntime(k8s.ApiClient(configuration), PodOptions(namespace=NAMESPACE, **options),
                             selector=settings.sandbox_selector(), watch_timeout_s=5, request_timeout_s=10,
                             egress=egress, pod_pids_limit=pod_pids_limit)


@pytest.fixture
def kube_runtime(apiserver, settings):
    runtime = kube_runtime_for(apiserver, settings)
    yield runtime
    runtime.close()


@pytest.fixture
def egress_runtime(apiserver, settings):
    """A runtime that may give pods a network (sandbox_egress), each by a NetworkPolicy of its own."""
    runtime = kube_runtime_for(apiserver, settings, egress=True, egress_except=("203.0.113.10/32",))
    yield runtime
    runtime.close()


@pytest.fixture
def kubelet(apiserver, docker_client):
    with DockerKubelet(apiserver.url, NAMESPACE, docker_client, {TEST_LABEL: RUN_ID}) as node:
        apiserver.call(lambda s: setattr(s, "log_provider", node.logs))
        yield node
    assert not node.errors, node.errors


@pytest.fixture(scope="session")
def snapshot_image(app, sample_repo) -> str:
    """A real snapshot image of the sample monorepo (built once per session)."""
    from orchestrator.snapshots import git

    commit = git.resolve_commit(sample_repo, "HEAD")
    snap = asyncio.run(app.snapshots.ensure(repo_name="monorepo", repo=RepoConfig(path=sample_repo), commit=commit))
    return snap.tag

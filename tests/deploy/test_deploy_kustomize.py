"""The kustomizations: ``kubectl kustomize`` builds them (no cluster is
contacted) and every object validates strictly."""

from __future__ import annotations

from collections import Counter

import pytest
import yaml

from deploy.deploy_manifests import (KUSTOMIZE_BASE, KUSTOMIZE_GPU, SANDBOX_NAMESPACE, find, genesis_yaml, kinds,
                                     kustomize, validate_all)
from orchestrator.settings import Settings

BASE_KINDS = Counter({"Namespace": 2, "ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "ConfigMap": 1,
                      "Secret": 1, "Deployment": 1, "Job": 1, "Service": 2, "ServiceMonitor": 1,
                      "NetworkPolicy": 2, "ResourceQuota": 1, "LimitRange": 1})


@pytest.fixture(scope="module")
def base():
    return kustomize(KUSTOMIZE_BASE)


@pytest.fixture(scope="module")
def gpu():
    return kustomize(KUSTOMIZE_GPU)


@pytest.mark.parametrize("which", ["base", "gpu"])
def test_builds_every_object_and_each_validates(which, request):
    objects = request.getfixturevalue(which)
    assert kinds(objects) == BASE_KINDS
    used = validate_all(objects)
    assert used["crd:servicemonitor-monitoring.coreos.com-v1.json"] == 2
    assert sum(used.values()) == 2 * len(objects)


def test_base_config_is_valid_genesis_settings(base):
    settings = Settings.model_validate(yaml.safe_load(genesis_yaml(base)))
    assert settings.runtime == "kubernetes"
    assert settings.kubernetes.namespace == SANDBOX_NAMESPACE
    assert settings.gpus == []
    quota = find(base, "ResourceQuota", "sandboxes")["spec"]["hard"]
    assert "requests.nvidia.com/gpu" not in quota
    assert settings.cpu_budget == float(quota["requests.cpu"]) and settings.memory_budget == quota["requests.memory"]
    assert settings.capacity().memory_bytes == 64 * 2**30


def test_gpu_overlay_adds_gpus_quota_and_node_selection(gpu):
    settings = Settings.model_validate(yaml.safe_load(genesis_yaml(gpu)))
    assert settings.runtime == "kubernetes"
    assert settings.kubernetes.namespace == SANDBOX_NAMESPACE
    quota = find(gpu, "ResourceQuota", "sandboxes")["spec"]["hard"]
    assert quota["requests.nvidia.com/gpu"] == str(len(settings.gpus)) == "2"
    assert settings.gpus == ["0", "1"]
    assert settings.kubernetes.gpu_node_selector == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in settings.kubernetes.gpu_tolerations


def test_config_map_name_is_hashed_and_wired(base, gpu):
    # A changed genesis.yaml gets a new name, so the Deployment rolls.
    names = {find(objects, "ConfigMap", "genesis-config")["metadata"]["name"] for objects in (base, gpu)}
    assert len(names) == 2 and all(name.startswith("genesis-config-") for name in names)


def test_sandbox_namespace_is_restricted_and_orchestrator_namespace_documents_its_exception(base):
    sandboxes = find(base, "Namespace", SANDBOX_NAMESPACE)["metadata"]["labels"]
    assert sandboxes["pod-security.kubernetes.io/enforce"] == "restricted"
    # The Docker socket is a hostPath, which only the privileged level admits.
    assert find(base, "Namespace", "genesis")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"

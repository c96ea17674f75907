"""The orchestrator's RBAC: one Role in the sandbox namespace granting exactly
``rbac.EXPECTED_RULES``, bound to its ServiceAccount; nothing cluster-wide.
The apiserver enforces RBAC; this checks what the manifests grant."""

from __future__ import annotations

import pytest

from deploy.deploy_manifests import (GPU_VALUES, KUSTOMIZE_BASE, KUSTOMIZE_GPU, NAMESPACE, SANDBOX_NAMESPACE,
                                     WITH_TOKENS, find, kustomize, load_values, pod_spec, render_chart)
from deploy.rbac import EXPECTED_RULES, role_rules

SOURCES = {
    "k8s-base": lambda: kustomize(KUSTOMIZE_BASE),
    "k8s-gpu": lambda: kustomize(KUSTOMIZE_GPU),
    "chart": lambda: render_chart(WITH_TOKENS),
    "chart-gpu": lambda: render_chart(load_values(GPU_VALUES)),
}
CLUSTER_WIDE = {"ClusterRole", "ClusterRoleBinding"}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def objects(request):
    return SOURCES[request.param]()


def test_role_grants_exactly_the_expected_rules(objects):
    role = find(objects, "Role", "genesis-sandboxes")
    assert role["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert role_rules(role) == EXPECTED_RULES


def test_role_is_bound_to_the_orchestrators_service_account_only(objects):
    binding = find(objects, "RoleBinding", "genesis-sandboxes")
    assert binding["metadata"]["namespace"] == SANDBOX_NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "genesis-sandboxes"}
    account = find(objects, "ServiceAccount", "genesis")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "genesis", "namespace": NAMESPACE}]
    assert account["metadata"]["namespace"] == NAMESPACE
    assert pod_spec(find(objects, "Deployment", "genesis"))["serviceAccountName"] == "genesis"


def test_nothing_cluster_wide_and_one_role(objects):
    assert not CLUSTER_WIDE & {obj["kind"] for obj in objects}
    assert [obj["kind"] for obj in objects].count("Role") == 1
    assert [obj["kind"] for obj in objects].count("RoleBinding") == 1


def test_migration_job_gets_no_api_token(objects):
    assert pod_spec(find(objects, "Job", "genesis-migrate"))["automountServiceAccountToken"] is False


def test_role_rules_sees_extra_or_missing_verbs_and_refuses_wildcards():
    role = {"rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]},
                      {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "exec"]}]}
    assert role_rules(role) == {("", "pods"): {"get", "list", "exec"}, ("", "pods/log"): {"get"}}
    assert role_rules(role) != EXPECTED_RULES
    with pytest.raises(ValueError):
        role_rules({"rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]})
    with pytest.raises(ValueError):
        role_rules({"rules": [{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"], "verbs": ["get"]}]})

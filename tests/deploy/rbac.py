"""The one statement of what the orchestrator may do in the sandbox namespace.

``EXPECTED_RULES`` maps (apiGroup, resource) to the verbs the kubernetes
runtime needs; the Role in ``k8s/`` and the one the chart renders must grant
exactly this, and a test of the runtime can compare the calls it makes
against it. ``role_rules`` flattens a Role (as a dict) into the same shape.
Only the apiserver enforces RBAC; this checks what the manifests grant.
"""

from __future__ import annotations

from typing import Any

EXPECTED_RULES: dict[tuple[str, str], frozenset[str]] = {
    ("", "pods"): frozenset({"create", "delete", "get", "list", "patch", "watch"}),
    ("", "pods/log"): frozenset({"get"}),
    ("", "events"): frozenset({"list"}),
    ("networking.k8s.io", "networkpolicies"): frozenset({"create", "delete"}),
}


def role_rules(role: dict[str, Any]) -> dict[tuple[str, str], frozenset[str]]:
    """(apiGroup, resource) -> verbs granted by ``role``'s rules, merged across rules.

    A rule that names resourceNames or nonResourceURLs, or a "*" anywhere,
    cannot be compared with a plain verb set and is refused.
    """
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role.get("rules") or []:
        if rule.get("resourceNames") or rule.get("nonResourceURLs"):
            raise ValueError(f"rule narrowed or widened beyond resources and verbs: {rule}")
        verbs = set(rule.get("verbs") or [])
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                if "*" in (group, resource) or "*" in verbs:
                    raise ValueError(f"wildcard in rule {rule}")
                granted.setdefault((group, resource), set()).update(verbs)
    return {key: frozenset(verbs) for key, verbs in granted.items()}

"""The validators the other deploy tests rely on are strict: a typo, a wrong
type or a kind with no schema fails, so a pass means something."""

from __future__ import annotations

import copy

import pytest

from deploy.deploy_manifests import WITH_TOKENS, find, render_chart, validate_all


@pytest.fixture(scope="module")
def objects():
    return render_chart(WITH_TOKENS)


def _broken(objects, kind, mutate):
    obj = copy.deepcopy(find(objects, kind))
    mutate(obj)
    return obj


@pytest.mark.parametrize("kind, mutate, message", [
    ("Deployment", lambda o: o["spec"]["template"]["spec"]["containers"][0]["securityContext"]
     .update(readOnlyRootFS=True), "readOnlyRootFS"),
    ("Deployment", lambda o: o["spec"].update(replicas="1"), "'1' is not of type"),
    ("Role", lambda o: o["rules"][0].update(verb=["get"]), "verb"),
    ("ResourceQuota", lambda o: o["spec"].update(limits={}), "limits"),
    ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(port=9464), "9464 is not of type 'string'"),
    ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(scheme="tcp"), "'tcp' is not one of"),
    ("ServiceMonitor", lambda o: o["spec"].update(endpoint=[]), "endpoint"),
    ("ServiceMonitor", lambda o: o["spec"].pop("selector"), "'selector' is a required property"),
    ("ServiceMonitor", lambda o: o["metadata"].update(label={}), "label"),
], ids=["unknown-field", "wrong-type", "role-typo", "quota-unknown", "monitor-port-type", "monitor-enum",
        "monitor-unknown-field", "monitor-required", "monitor-metadata"])
def test_invalid_objects_fail(objects, kind, mutate, message):
    with pytest.raises(AssertionError, match="is invalid for Kubernetes") as caught:
        validate_all([_broken(objects, kind, mutate)])
    assert message in str(caught.value)


def test_a_kind_without_a_schema_fails():
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {}}
    with pytest.raises(AssertionError, match="Widget"):
        validate_all([unknown])

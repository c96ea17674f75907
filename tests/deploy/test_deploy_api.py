"""The API's way in, from the chart and from k8s/: the container port, the
Service, the optional Ingress, the tokens Secret mounted as a directory, the
orchestrator's NetworkPolicy and the ``api`` section of genesis.yaml.

What only a real cluster shows: that the kubelet updates the mounted Secret
and the server picks the new file up, that the CNI enforces the policy, and
that an ingress controller routes to the Service.
"""

from __future__ import annotations

import base64
import re
from pathlib import PurePosixPath

import pytest
import yaml

from deploy.deploy_manifests import (GPU_VALUES, KUSTOMIZE_BASE, KUSTOMIZE_GPU, NAMESPACE, TOKENS_YAML, WITH_TOKENS,
                                     find, genesis_yaml, kinds, kustomize, load_values, merged, pod_spec,
                                     render_chart, render_notes, validate_all)
from orchestrator.settings import Settings

INGRESS = {"api": {"ingress": {"enabled": True, "className": "nginx", "host": "genesis.example.com",
                               "tlsSecretName": "genesis-tls", "annotations": {"example.com/owner": "ml"}}}}
SOURCES = {
    "k8s-base": lambda: kustomize(KUSTOMIZE_BASE),
    "k8s-gpu": lambda: kustomize(KUSTOMIZE_GPU),
    "chart": lambda: render_chart(WITH_TOKENS),
    "chart-gpu": lambda: render_chart(load_values(GPU_VALUES)),  # the tokens from an existing Secret
    "chart-ingress": lambda: render_chart(merged(WITH_TOKENS, INGRESS)),
}
API_PORT, METRICS_PORT = 8080, 9464
TOKEN_ROLES = {"viewer", "agent", "operator"}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def objects(request):
    return SOURCES[request.param]()


def _container(objects):
    return pod_spec(find(objects, "Deployment", "genesis"))["containers"][0]


def _settings(objects) -> Settings:
    return Settings.model_validate(yaml.safe_load(genesis_yaml(objects)))


def _tokens_volume(objects):
    spec = pod_spec(find(objects, "Deployment", "genesis"))
    volume = next(v for v in spec["volumes"] if v["name"] == "api-tokens")
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "api-tokens")
    return volume, mount


def _orchestrator_policy(objects):
    return find(objects, "NetworkPolicy", "genesis")


def _secret_file(secret, key: str) -> str:
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def test_every_source_validates(objects):
    validate_all(objects)


def test_api_service_reaches_the_containers_api_port(objects):
    deployment = find(objects, "Deployment", "genesis")
    container = _container(objects)
    assert container["ports"] == [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
                                  {"name": "api", "containerPort": API_PORT, "protocol": "TCP"}]
    service = find(objects, "Service", "genesis-api")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [{"name": "api", "port": API_PORT, "targetPort": "api", "protocol": "TCP"}]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # The ServiceMonitor keeps to the metrics Service: the API Service has no port it scrapes.
    monitor = find(objects, "ServiceMonitor", "genesis")["spec"]["selector"]["matchLabels"]
    assert not monitor.items() <= service["metadata"]["labels"].items()
    assert monitor.items() <= find(objects, "Service", "genesis-metrics")["metadata"]["labels"].items()


def test_genesis_serves_the_api_on_that_port_with_the_mounted_tokens(objects):
    api = _settings(objects).api
    assert (api.address, api.port) == ("0.0.0.0", API_PORT)
    assert (api.rate_limit_per_s, api.rate_limit_burst) == (20, 60)
    volume, mount = _tokens_volume(objects)
    # A directory mount (subPath mounts never see an updated Secret) that holds tokens_file.
    assert "subPath" not in mount and "subPathExpr" not in mount and mount["readOnly"] is True
    assert api.tokens_file is not None
    assert PurePosixPath(api.tokens_file).parent == PurePosixPath(mount["mountPath"])
    assert volume["secret"]["items"] == [{"key": "tokens.yaml", "path": PurePosixPath(api.tokens_file).name}]
    # Not inside another volume's mount (a nested mount point in a read-only volume is fragile).
    others = [m["mountPath"] for m in _container(objects)["volumeMounts"] if m["name"] != "api-tokens"]
    assert not any(PurePosixPath(mount["mountPath"]).is_relative_to(other) for other in others)


def test_tokens_secret_holds_a_tokens_file(objects):
    volume, _ = _tokens_volume(objects)
    name = volume["secret"]["secretName"]
    assert name == "genesis-api-tokens"  # not hashed by kustomize: an edit updates it in place
    if "Secret" not in kinds(objects):  # chart-gpu names a Secret made beforehand
        return
    secret = find(objects, "Secret", name)
    assert secret["metadata"]["namespace"] == NAMESPACE
    entries = yaml.safe_load(_secret_file(secret, "tokens.yaml"))["tokens"]
    assert entries
    for entry in entries:
        assert entry["role"] in TOKEN_ROLES and entry["name"]
        # A string of 64 hex digits; unquoted digits would load as a number.
        assert isinstance(entry["sha256"], str) and re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), entry


def test_network_policy_admits_the_metrics_and_api_ports_only(objects):
    policy = _orchestrator_policy(objects)
    pod_labels = find(objects, "Deployment", "genesis")["spec"]["template"]["metadata"]["labels"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    rules = {rule["ports"][0]["port"]: rule for rule in policy["spec"]["ingress"]}
    assert set(rules) == {METRICS_PORT, API_PORT} and len(policy["spec"]["ingress"]) == 2
    for port, rule in rules.items():
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
        # A rule without `from` would admit any source, in the cluster or not.
        assert rule["from"] == [{"namespaceSelector": {}}]


def test_api_can_be_turned_off():
    objects = render_chart({"api": {"enabled": False}})  # no tokens needed then
    validate_all(objects)
    assert _settings(objects).api.port == 0
    assert not any(obj["kind"] in {"Service", "Ingress", "Secret"} and "api" in obj["metadata"]["name"]
                   for obj in objects)
    container = _container(objects)
    assert [port["name"] for port in container["ports"]] == ["metrics"]
    assert "api-tokens" not in {m["name"] for m in container["volumeMounts"]}
    assert [rule["ports"][0]["port"] for rule in _orchestrator_policy(objects)["spec"]["ingress"]] == [METRICS_PORT]
    assert "The API is off" in render_notes({"api": {"enabled": False}})


@pytest.mark.parametrize("values, message", [
    ({}, "the API needs bearer tokens: set api.tokens.existingSecret"),
    ({"api": {"tokens": {"tokensYaml": "- alice"}}}, "api.tokens.tokensYaml is not a tokens file"),
    ({"api": {"tokens": {"tokensYaml": "tokens: alice"}}}, "api.tokens.tokensYaml is not a tokens file"),
    (merged(WITH_TOKENS, {"api": {"port": METRICS_PORT}}), "api.port and metrics.port must differ"),
], ids=["no-tokens", "not-a-mapping", "tokens-not-a-list", "port-clash"])
def test_chart_refuses_an_api_it_cannot_serve(values, message):
    import helm_python

    with pytest.raises(helm_python.HelmError, match=re.escape(message)):
        render_chart(values)


def test_chart_makes_the_tokens_secret_from_tokens_yaml():
    objects = render_chart(WITH_TOKENS)
    secret = find(objects, "Secret", "genesis-api-tokens")
    assert secret["stringData"] == {"tokens.yaml": TOKENS_YAML}
    assert "helm.sh/hook" not in secret["metadata"].get("annotations", {})  # upgraded in place, never recreated
    assert "--set-file api.tokens.tokensYaml" in render_notes(WITH_TOKENS)


def test_new_tokens_do_not_roll_the_pods():
    rotated = TOKENS_YAML.replace("name: ci", "name: ci-2")
    before = find(render_chart(WITH_TOKENS), "Deployment")["spec"]["template"]
    after_objects = render_chart({"api": {"tokens": {"tokensYaml": rotated}}})
    assert find(after_objects, "Deployment")["spec"]["template"] == before
    assert find(after_objects, "Secret", "genesis-api-tokens")["stringData"]["tokens.yaml"] == rotated


def test_existing_tokens_secret_is_mounted_not_made():
    objects = render_chart({"api": {"tokens": {"existingSecret": "team-tokens"}}})
    validate_all(objects)
    assert "Secret" not in kinds(objects)
    volume, _ = _tokens_volume(objects)
    assert volume["secret"]["secretName"] == "team-tokens"
    assert "create secret generic team-tokens --from-file=tokens.yaml" in \
        render_notes({"api": {"tokens": {"existingSecret": "team-tokens"}}})


def test_ingress_routes_the_host_to_the_api_service():
    objects = render_chart(merged(WITH_TOKENS, INGRESS))
    ingress = find(objects, "Ingress", "genesis-api")
    assert ingress["metadata"]["annotations"] == {"example.com/owner": "ml"}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"hosts": ["genesis.example.com"], "secretName": "genesis-tls"}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "genesis.example.com"
    service = find(objects, "Service", "genesis-api")
    assert rule["http"]["paths"] == [{"path": "/", "pathType": "Prefix", "backend": {
        "service": {"name": service["metadata"]["name"], "port": {"name": service["spec"]["ports"][0]["name"]}}}}]
    assert "https://genesis.example.com/" in render_notes(merged(WITH_TOKENS, INGRESS))
    assert "Ingress" not in kinds(render_chart(WITH_TOKENS))


def test_ingress_without_tls_and_with_more_paths():
    values = merged(WITH_TOKENS, INGRESS, {"api": {"ingress": {
        "tlsSecretName": "", "className": "", "paths": [{"path": "/api", "pathType": "Prefix"},
                                                        {"path": "/mcp", "pathType": "Exact"}]}}})
    objects = render_chart(values)
    validate_all(objects)
    spec = find(objects, "Ingress", "genesis-api")["spec"]
    assert "tls" not in spec and "ingressClassName" not in spec
    assert [(p["path"], p["pathType"]) for p in spec["rules"][0]["http"]["paths"]] == [("/api", "Prefix"),
                                                                                       ("/mcp", "Exact")]
    assert "tokens cross the network in clear" in render_notes(values)


def test_who_may_connect_and_how_the_service_is_exposed_are_values():
    monitoring = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    clients = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "agents"}},
                "podSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["agent"]}]}},
               {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]
    objects = render_chart(merged(WITH_TOKENS, {
        "metrics": {"allowedFrom": monitoring},
        "api": {"allowedFrom": clients, "port": 8443,
                "service": {"type": "LoadBalancer", "annotations": {"example.com/lb": "internal"}}}}))
    validate_all(objects)
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in _orchestrator_policy(objects)["spec"]["ingress"]}
    assert rules == {METRICS_PORT: monitoring, 8443: clients}
    service = find(objects, "Service", "genesis-api")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["metadata"]["annotations"] == {"example.com/lb": "internal"}
    assert service["spec"]["ports"][0]["port"] == 8443
    assert {"name": "api", "containerPort": 8443, "protocol": "TCP"} in _container(objects)["ports"]
    assert _settings(objects).api.port == 8443

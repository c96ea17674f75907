"""Pure decisions about a sandbox's network and pids limit: the ranges egress never
reaches, the host rules that say so, and what describe and start-up say about pids."""

from __future__ import annotations

import pytest

from orchestrator.domain import egress
from orchestrator.domain.capabilities import Capabilities, pids_note, pids_startup_warning
from orchestrator.domain.intake import IntakeLimits, parse_request
from orchestrator.errors import RequestRejected
from orchestrator.settings import KubernetesSettings

from test_intake import request


def test_the_blocked_ranges_cover_the_hosts_the_clusters_and_the_metadata_address():
    import ipaddress
    blocked = [ipaddress.ip_network(cidr) for cidr in egress.BLOCKED_RANGES]
    for address in ("10.96.0.1", "172.17.0.1", "192.168.1.10", "169.254.169.254", "100.64.0.1", "127.0.0.1",
                    "224.0.0.251", "255.255.255.255", "0.0.0.0"):
        assert any(ipaddress.ip_address(address) in net for net in blocked), address
    for address in ("1.1.1.1", "8.8.8.8", "151.101.0.223"):
        assert not any(ipaddress.ip_address(address) in net for net in blocked), address


def test_names_are_deterministic_and_the_bridge_fits_an_interface_name():
    assert egress.network_name("prod") == "genesis-egress-prod"
    bridge = egress.bridge_name("a" * 63)
    assert bridge == egress.bridge_name("a" * 63) and len(bridge) <= 15 and bridge.startswith("gx-")
    assert egress.bridge_name("prod") != egress.bridge_name("test")


def test_rules_reject_blocked_ranges_in_docker_user_and_the_host_in_input():
    rules = egress.iptables_rules(bridge="gx-1", tag="genesis-egress:prod", extra_blocked=("198.51.100.0/24",))
    forward = [rule for chain, rule in rules if chain == "DOCKER-USER"]
    assert [rule[rule.index("-d") + 1] for rule in forward] == [*egress.BLOCKED_RANGES, "198.51.100.0/24"]
    assert all(rule[:2] == ["-i", "gx-1"] and rule[-2:] == ["-j", "REJECT"] for rule in forward)
    host = [rule for chain, rule in rules if chain == "INPUT"]
    assert host[0][-2:] == ["-j", "ACCEPT"] and "ESTABLISHED,RELATED" in host[0]  # replies first
    assert host[1] == ["-i", "gx-1", "-m", "comment", "--comment", "genesis-egress:prod", "-j", "REJECT"]
    assert all("genesis-egress:prod" in rule for _, rule in rules)


def test_cleanup_finds_exactly_its_own_tagged_rules():
    listing = "\n".join([
        "-N DOCKER-USER",
        '-A DOCKER-USER -d 10.0.0.0/8 -i gx-1 -m comment --comment "genesis-egress:prod" -j REJECT '
        "--reject-with icmp-port-unreachable",
        "-A DOCKER-USER -d 10.0.0.0/8 -i gx-2 -m comment --comment genesis-egress:prod-2 -j REJECT",
        "-A DOCKER-USER -j RETURN",
    ])
    assert egress.tagged(listing, "genesis-egress:prod") == [
        ("DOCKER-USER", ["-d", "10.0.0.0/8", "-i", "gx-1", "-m", "comment", "--comment", "genesis-egress:prod",
                         "-j", "REJECT", "--reject-with", "icmp-port-unreachable"])]


def test_egress_except_takes_ipv4_cidrs_only():
    assert KubernetesSettings(egress_except=["203.0.113.7", "198.51.100.9/24"]).egress_except == [
        "203.0.113.7/32", "198.51.100.0/24"]
    with pytest.raises(ValueError, match="IPv4"):
        KubernetesSettings(egress_except=["fd00::/8"])
    with pytest.raises(ValueError):
        KubernetesSettings(egress_except=["not-a-cidr"])


def test_network_refusal_says_why():
    off = Capabilities(network_note="sandbox_egress is off: no sandbox is given a network")
    assert off.refusals(network=True, gpus=0) == [
        "network: true (sandbox_egress is off: no sandbox is given a network)"]
    assert Capabilities(sandbox_runtime="runsc").refusals(network=True, gpus=0) == [
        "network: true (sandboxes on runsc get no network)"]
    assert Capabilities(network=True).refusals(network=True, gpus=0) == []


@pytest.mark.parametrize("declared, pids, refused", [
    (Capabilities(pids="exact"), 4096, None),
    (Capabilities(pids="none"), 4096, None),  # not known: warned at start-up and in describe, not refused
    (Capabilities(pids="node", max_pids=1024), 1024, None),
    (Capabilities(pids="node", max_pids=1024), 1025, "pids 1025 > 1024 (the node's podPidsLimit, which every "
                                                     "sandbox gets)"),
])
def test_pids_past_the_nodes_limit_are_refused(declared, pids, refused):
    assert declared.pids_refusal(pids) == refused


def test_intake_refuses_pids_past_the_node_as_resources_exceeded():
    limits = IntakeLimits(capabilities=Capabilities(pids="node", max_pids=256))
    body = request(resources={"cpu": 1, "memory": "512Mi", "pids": 512})
    with pytest.raises(RequestRejected) as error:
        parse_request(body, limits)
    assert error.value.code == "resources_exceeded" and "podPidsLimit" in str(error.value)
    assert parse_request(request(resources={"cpu": 1, "memory": "512Mi", "pids": 128}), limits).resources.pids == 128


@pytest.mark.parametrize("model, limit, requested, note", [
    ("exact", None, 512, ""),
    (None, None, 512, ""),  # a record from before pids were recorded
    ("node", 1024, 512, " (enforced as the node's podPidsLimit: 1024)"),
    ("node", 512, 512, ""),
    ("none", None, 512, " (not enforced: podPidsLimit unknown)"),
])
def test_describe_says_how_pids_were_enforced(model, limit, requested, note):
    assert pids_note(model=model, node_limit=limit, requested=requested) == note


def test_start_up_warns_only_where_no_pids_limit_is_known():
    assert pids_startup_warning(Capabilities(pids="exact"), runtime="docker") is None
    assert pids_startup_warning(Capabilities(pids="node", max_pids=4096), runtime="kubernetes") is None
    warning = pids_startup_warning(Capabilities(pids="none"), runtime="kubernetes")
    assert warning is not None and "kubernetes.pod_pids_limit" in warning

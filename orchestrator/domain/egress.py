"""Where a sandbox given a network (``network: true``) may not go, on any runtime.

Egress, where the settings allow it at all (``sandbox_egress``), is to the
public internet only: never to the host's or the cluster's own services
(PostgreSQL, NATS, the Docker API, the Kubernetes API server), the cloud
metadata address, or other sandboxes, pods and containers. Those all live
on private, link-local, CGNAT or loopback addresses, or on the host itself,
so the rule is one list of address ranges plus "not the host":

- Docker: iptables rules on the Genesis-made bridge (:func:`iptables_rules`),
  installed by :mod:`orchestrator.runtimes.docker_egress`;
- Kubernetes: a NetworkPolicy per pod whose ``ipBlock`` excepts the same
  ranges (:mod:`orchestrator.runtimes.kubernetes_pods`).

Pure data and string building; no I/O. IPv4 only: neither runtime gives a
sandbox an IPv6 address or route (the Docker network is made without IPv6;
a NetworkPolicy's ``0.0.0.0/0`` allows no IPv6 destination).
"""

from __future__ import annotations

import hashlib
import ipaddress

# Never reachable from a sandbox, whatever else is allowed.
BLOCKED_RANGES: tuple[str, ...] = (
    "0.0.0.0/8",  # "this network"
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918: hosts, pods, services, LANs
    "100.64.0.0/10",  # RFC 6598 CGNAT (some clouds' and CNIs' internal ranges)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local: 169.254.169.254, the cloud metadata service
    "224.0.0.0/4", "240.0.0.0/4",  # multicast, reserved and broadcast
)
COMMENT_PREFIX = "genesis-egress"


def network_name(installation: str) -> str:
    """The Docker network ``network: true`` sandboxes of one installation join."""
    return f"genesis-egress-{installation}"


def bridge_name(installation: str) -> str:
    """Its Linux bridge interface: named by Genesis, so the host's rules can match it
    (interface names hold at most 15 characters, so a digest of the installation)."""
    return "gx-" + hashlib.sha256(installation.encode()).hexdigest()[:12]


def comment(installation: str) -> str:
    """The tag every rule of one installation carries: how cleanup finds exactly its own."""
    return f"{COMMENT_PREFIX}:{installation}"


def iptables_rules(*, bridge: str, tag: str, extra_blocked: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    """(chain, rule) pairs of the ``filter`` table, in the order they must end up in.

    DOCKER-USER (Docker jumps there first from FORWARD, after any DNAT of a published
    port): packets from the bridge to a blocked range are rejected, so another container
    reached through the host's published port is caught too. INPUT: nothing from the
    bridge reaches the host itself, on any of its addresses (public ones included),
    except replies to connections the host opened. REJECT rather than DROP: a sandbox's
    attempt fails at once instead of hanging until its own timeout.
    """
    mark = ["-m", "comment", "--comment", tag]
    rules: list[tuple[str, list[str]]] = [
        ("DOCKER-USER", ["-i", bridge, "-d", cidr, *mark, "-j", "REJECT"])
        for cidr in (*BLOCKED_RANGES, *extra_blocked)
    ]
    rules.append(("INPUT", ["-i", bridge, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", *mark,
                            "-j", "ACCEPT"]))
    rules.append(("INPUT", ["-i", bridge, *mark, "-j", "REJECT"]))
    return rules


def tagged(listing: str, tag: str) -> list[tuple[str, list[str]]]:
    """The rules in ``iptables -S`` output that carry ``tag``, as (chain, rule) pairs to delete."""
    found = []
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[0] == "-A" and _comment_of(parts) == tag:
            found.append((parts[1], [p.strip('"') for p in parts[2:]]))
    return found


def _comment_of(parts: list[str]) -> str | None:
    for index, part in enumerate(parts[:-1]):
        if part == "--comment":
            return parts[index + 1].strip('"')
    return None


def check_cidrs(values: list[str]) -> list[str]:
    """IPv4 CIDRs (``kubernetes.egress_except``), normalised; ValueError for anything else."""
    checked = []
    for value in values:
        network = ipaddress.ip_network(value, strict=False)
        if network.version != 4:
            raise ValueError(f"{value}: an IPv4 CIDR (sandboxes get no IPv6 route at all)")
        checked.append(str(network))
    return checked

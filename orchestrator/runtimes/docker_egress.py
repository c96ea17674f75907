"""Egress for Docker sandboxes with ``network: true``: a network of Genesis's own, filtered.

:func:`prepare` (start-up, idempotent) makes sure of two things, or says why not:

- the Docker network ``genesis-egress-<installation>`` exists: a bridge with
  inter-container communication off (``enable_icc=false``: its sandboxes cannot
  reach each other) and a Linux bridge named by Genesis (:func:`egress.bridge_name`);
- the iptables rules of :func:`orchestrator.domain.egress.iptables_rules` are in
  place, each tagged with the installation's comment, so nothing from that bridge
  reaches a private, link-local, CGNAT or loopback address, nor the host itself.

Where any of it cannot be done (no iptables, not root, an engine on another
host or in another network namespace, a network of that name that is not
Genesis's), :class:`EgressUnavailable` says why; the runtime then declares no
network and intake refuses ``network: true`` — never a sandbox silently open.

:func:`cleanup` removes exactly the tagged rules and the network (tests, and an
operator switching ``sandbox_egress`` off). Not here: deciding which ranges are
blocked (the domain's), or anything about sandboxes without a network.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import docker.errors

from orchestrator.domain import egress

log = logging.getLogger(__name__)
IPTABLES_TIMEOUT_S = 30  # -w waits for the xtables lock; a stuck one must not hang start-up
ICC_OPTION = "com.docker.network.bridge.enable_icc"
BRIDGE_OPTION = "com.docker.network.bridge.name"


class EgressUnavailable(Exception):
    """Egress filtering cannot be set up here; the message says why, for people."""


def is_local_engine(base_url: str | None) -> bool:
    """The host rules only filter an engine on this host: a unix socket (or the default)."""
    url = base_url or os.environ.get("DOCKER_HOST") or "unix://"
    return url.startswith(("unix://", "npipe://")) or url.startswith("/")


def iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    binary = shutil.which("iptables")
    if binary is None:
        raise EgressUnavailable("no iptables command on this host")
    try:
        done = subprocess.run([binary, "-w", "-t", "filter", *args], capture_output=True, text=True,
                              timeout=IPTABLES_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EgressUnavailable(f"iptables {' '.join(args[:2])}: {exc}") from exc
    if check and done.returncode != 0:
        raise EgressUnavailable(f"iptables {' '.join(args)}: {(done.stderr or done.stdout).strip()[:300]}")
    return done


def ensure_network(client, *, installation: str, labels: dict[str, str]) -> str:
    """The installation's egress network, made if missing; refused if one of that name is not ours."""
    name, bridge = egress.network_name(installation), egress.bridge_name(installation)
    try:
        network = client.networks.get(name)
    except docker.errors.NotFound:
        try:
            network = client.networks.create(
                name, driver="bridge", labels=labels, enable_ipv6=False, internal=False,
                options={ICC_OPTION: "false", BRIDGE_OPTION: bridge})
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # another process made it meanwhile: read it below
                raise EgressUnavailable(f"cannot create the Docker network {name}: {exc.explanation or exc}") \
                    from exc
            network = client.networks.get(name)
    options = network.attrs.get("Options") or {}
    if network.attrs.get("Driver") != "bridge" or options.get(ICC_OPTION) != "false" \
            or options.get(BRIDGE_OPTION) != bridge:
        raise EgressUnavailable(f"the Docker network {name} exists but is not Genesis's filtered bridge "
                                f"(driver {network.attrs.get('Driver')}, options {options}); remove it")
    if not os.path.exists(f"/sys/class/net/{bridge}"):
        raise EgressUnavailable(f"the bridge {bridge} of {name} is not in this process's network namespace: "
                                "the host's rules can only be set where the engine runs")
    return name


def install_rules(*, installation: str) -> int:
    """The tagged rules, each added unless present (``-C``); returns how many were added.
    Added in reverse at the head of their chain, so they end up in the listed order,
    ahead of anything that would accept the packet first."""
    tag, bridge = egress.comment(installation), egress.bridge_name(installation)
    added = 0
    for chain, rule in reversed(egress.iptables_rules(bridge=bridge, tag=tag)):
        if iptables("-C", chain, *rule, check=False).returncode == 0:
            continue
        iptables("-I", chain, "1", *rule)
        added += 1
    return added


def prepare(connect, *, base_url: str | None, installation: str, labels: dict[str, str]) -> str:
    """The filtered egress network's name, ready for sandboxes; EgressUnavailable says why not.
    ``connect()`` gives the engine's client, asked for only once the host can filter at all."""
    if not is_local_engine(base_url):
        raise EgressUnavailable(f"the Docker engine at {base_url} is on another host: its sandboxes' "
                                "traffic cannot be filtered from here")
    iptables("-S", "DOCKER-USER")  # Docker's own chain: missing when the engine runs without iptables
    name = ensure_network(connect(), installation=installation, labels=labels)
    added = install_rules(installation=installation)
    log.info("sandbox egress filtered", extra={"network": name, "rules_added": added})
    return name


def cleanup(client, *, installation: str) -> int:
    """Remove the installation's tagged rules and its egress network; returns the rules removed."""
    tag = egress.comment(installation)
    removed = 0
    for chain in ("DOCKER-USER", "INPUT"):
        listing = iptables("-S", chain, check=False).stdout
        for found_chain, rule in egress.tagged(listing, tag):
            if iptables("-D", found_chain, *rule, check=False).returncode == 0:
                removed += 1
    try:
        client.networks.get(egress.network_name(installation)).remove()
    except docker.errors.NotFound:
        pass
    return removed

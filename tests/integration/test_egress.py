"""``network: true`` on Docker with ``sandbox_egress``: what a sandbox can and cannot reach,
against the real engine and the host's real iptables.

No internet is reachable from these machines. The public internet is stood in
for by a network namespace on the host holding 198.51.100.2 (TEST-NET-2: not in
any blocked range), routed like any outside address: through the host's
forwarding and Docker's NAT, as a public server would be. That it answers is
the positive control; what must NOT answer is shown next to a control that
shows it would answer without the filter:

- a TCP server the test starts on the host (bound to 0.0.0.0): reachable from the
  host and from a container on Docker's default bridge, not from the sandbox,
  on any of the host's addresses (its egress gateway, docker0, eth0);
- another container on the same egress network: reachable from the host, not
  from the sandbox (``enable_icc=false`` and the private-range rule);
- 169.254.169.254, the metadata address;
- and the way out exists: the sandbox has an interface besides loopback and a
  default route, and reaches the stand-in public server.

The installation's rules and network are removed by the fixture's finalizer
(:func:`docker_egress.cleanup`), which checks that nothing tagged is left.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading

import docker.errors
import pytest

from helpers import RUN_ID, TEST_LABEL, hostile, run_experiment
from orchestrator.domain import egress
from orchestrator.runtimes import docker_egress

pytestmark = pytest.mark.docker

INSTALLATION = f"egress-{RUN_ID}"


def tagged_rules() -> list:
    tag = egress.comment(INSTALLATION)
    return [rule for chain in ("DOCKER-USER", "INPUT")
            for rule in egress.tagged(docker_egress.iptables("-S", chain).stdout, tag)]


def _remove_installations_containers(docker_client) -> None:
    for container in docker_client.containers.list(all=True, filters={"label": f"genesis.installation={INSTALLATION}"}):
        container.remove(force=True)


@pytest.fixture(scope="module")
def egress_app(settings, docker_client):
    from orchestrator.app import App

    application = App(settings.model_copy(update={"sandbox_egress": True, "installation": INSTALLATION}))
    try:
        yield application
    finally:
        application.close()
        _remove_installations_containers(docker_client)
        removed = docker_egress.cleanup(docker_client, installation=INSTALLATION)
        assert removed == len(egress.iptables_rules(bridge="x", tag="x")), removed
        assert tagged_rules() == []
        assert docker_client.networks.list(names=[egress.network_name(INSTALLATION)]) == []


class HostServer:
    """A TCP server on the host, on every address, counting the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def host_server():
    server = HostServer()
    yield server
    server.close()


# The snapshot image carries the sandbox labels (managed-by, installation), and a container
# inherits its image's: without this, the controller would rightly reap these as orphans.
NOT_A_SANDBOX = {TEST_LABEL: RUN_ID, "genesis.managed-by": "genesis-tests"}
PUBLIC_ADDRESS, PUBLIC_PEER = "198.51.100.2", "198.51.100.1"


@pytest.fixture
def public_server():
    """A server on a 'public' address: a network namespace behind a veth pair, both named for
    Genesis's tests and removed here (the namespace takes its end of the pair with it)."""
    namespace, host_end, far_end = f"genesis-test-{RUN_ID[:8]}", f"gxt{RUN_ID[:8]}", f"gxp{RUN_ID[:8]}"
    steps = [["ip", "netns", "add", namespace],
             ["ip", "link", "add", host_end, "type", "veth", "peer", "name", far_end],
             ["ip", "link", "set", far_end, "netns", namespace],
             ["ip", "addr", "add", f"{PUBLIC_PEER}/30", "dev", host_end], ["ip", "link", "set", host_end, "up"],
             ["ip", "-n", namespace, "addr", "add", f"{PUBLIC_ADDRESS}/30", "dev", far_end],
             ["ip", "-n", namespace, "link", "set", far_end, "up"], ["ip", "-n", namespace, "link", "set", "lo", "up"],
             ["ip", "-n", namespace, "route", "add", "default", "via", PUBLIC_PEER]]
    server = None
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        server = subprocess.Popen(["ip", "netns", "exec", namespace, sys.executable, "-c",
                                   "import socket\ns = socket.socket(); s.bind(('0.0.0.0', 8443)); s.listen(8)\n"
                                   "while True:\n    s.accept()[0].close()"])
        yield PUBLIC_ADDRESS, 8443
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", host_end], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3].split("/")[0] for line in out.splitlines() if " lo " not in line]


PROBE = """
import json, os, socket
def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=3).close()
        return 1
    except OSError:
        return 0
gateway = None
with open("/proc/net/route") as f:
    for line in list(f)[1:]:
        fields = line.split()
        if fields[1] == "00000000":
            gateway = socket.inet_ntoa(bytes.fromhex(fields[2])[::-1])
targets = %(targets)s
figures = {name: float(reach(host, port)) for name, (host, port) in targets.items()}
figures["gateway_reached"] = float(reach(gateway, %(port)d)) if gateway else -1.0
figures["default_route"] = float(gateway is not None)
figures["interfaces"] = float(len(os.listdir("/sys/class/net")))
with open(os.path.join(os.environ.get("GENESIS_OUT", "/genesis/out"), "metrics.json"), "w") as f:
    json.dump(figures, f)
"""


def test_start_up_readies_the_filtered_network_once(egress_app, docker_client):
    app = egress_app
    app.check_network()
    assert app.runtime.capabilities.network, app.runtime.capabilities.network_note
    network = docker_client.networks.get(egress.network_name(INSTALLATION))
    assert network.attrs["Options"][docker_egress.ICC_OPTION] == "false"
    assert network.attrs["EnableIPv6"] is False
    before = tagged_rules()
    assert len(before) == len(egress.iptables_rules(bridge="x", tag="x"))
    assert docker_egress.install_rules(installation=INSTALLATION) == 0  # idempotent: nothing added twice
    assert tagged_rules() == before


@pytest.fixture(scope="module")
def snapshot_image(egress_app, sample_repo) -> str:
    """The sample monorepo's snapshot (python3 inside), for the controls' containers."""
    import asyncio

    from orchestrator.settings import RepoConfig
    from orchestrator.snapshots import git

    commit = git.resolve_commit(sample_repo, "HEAD")
    return asyncio.run(egress_app.snapshots.ensure(repo_name="monorepo", repo=RepoConfig(path=sample_repo),
                                                   commit=commit)).tag


def test_a_network_sandbox_reaches_neither_the_host_nor_other_containers_nor_metadata(
        egress_app, docker_client, host_server, snapshot_image, public_server):
    egress_app.check_network()
    image = snapshot_image
    network = egress.network_name(INSTALLATION)
    # Controls: the host's server answers the host, and a container on Docker's default bridge.
    socket.create_connection(("127.0.0.1", host_server.port), timeout=3).close()
    docker_client.containers.run(
        image, ["-c", f"import socket; socket.create_connection(('172.17.0.1', {host_server.port}), 3)"],
        entrypoint=["python3"], network="bridge", remove=True, labels=NOT_A_SANDBOX)
    controls = host_server.accepted
    assert controls == 2
    # A neighbour on the egress network, listening; the host reaches it.
    neighbour = docker_client.containers.run(
        image, ["-m", "http.server", "8000", "--directory", "/tmp"], entrypoint=["python3"], network=network,
        detach=True, labels=NOT_A_SANDBOX, user="1000:1000")
    try:
        neighbour.reload()
        neighbour_ip = neighbour.attrs["NetworkSettings"]["Networks"][network]["IPAddress"]
        from helpers import wait_until

        def answers() -> bool:
            try:
                socket.create_connection((neighbour_ip, 8000), timeout=1).close()
                return True
            except OSError:
                return False

        wait_until(answers, timeout_s=30, what="the neighbour to listen")
        probe = f"import socket; socket.create_connection(('{PUBLIC_ADDRESS}', 8443), 1)"
        namespace = f"genesis-test-{RUN_ID[:8]}"
        wait_until(lambda: subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe],
                                          capture_output=True).returncode == 0,
                   timeout_s=30, what="the public stand-in to listen")
        targets = {"public": public_server, "metadata_reached": ("169.254.169.254", 80),
                   "neighbour_reached": (neighbour_ip, 8000), "docker0_reached": ("172.17.0.1", host_server.port)}
        targets.update({f"host_{i}_reached": (address, host_server.port)
                        for i, address in enumerate(host_addresses())})
        script = PROBE % {"targets": json.dumps(targets), "port": host_server.port}
        view = run_experiment(egress_app, hostile(script, network=True))
        assert answers(), "the neighbour stopped listening: its silence would prove nothing"
    finally:
        try:
            neighbour.remove(force=True)
        except docker.errors.NotFound:
            pass
    assert view.outcome is not None and view.outcome.metrics is not None, view.message
    figures = view.outcome.metrics.custom
    reached = {name: value for name, value in figures.items() if name.endswith("_reached") and value}
    assert reached == {}, figures
    assert figures["public"] == 1.0, figures  # the way out works: it is only the private ranges that are shut
    assert figures["default_route"] == 1.0 and figures["interfaces"] >= 2.0, figures  # lo and the egress link
    assert host_server.accepted == controls  # not one connection from the sandbox

"""A database that stalls (every byte held for 10 s by a TCP proxy the test
controls: no error, no answer) for less than the lease: the controller keeps
leading, /healthz keeps answering, its event loop keeps turning (no store
call runs on it), its NATS connection answers the server's heartbeats (a
server that pings every 2 s and drops a client after two unanswered pings,
far inside the stall, keeps the same connection), and the experiments
running meanwhile finish normally."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest
from sqlalchemy import make_url

from helpers import wait_until
from natsserver import NatsServer
from netproxy import Proxy
from test_chaos import assert_finalized_once, experiment, make_app, start_serve, stop, wait_finished, write_config

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
STALL_S = 10.0
LEASE_TTL_S = 30.0  # longer than the stall: leadership must hold through it
LAG = "genesis_event_loop_lag_seconds"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except urllib.error.URLError:
        return 0, ""  # not listening (yet)


def _lag_buckets(port: int) -> dict[str, float]:
    _, text = _get(port, "/metrics")
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf'^{LAG}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE)}


def _controller_connections(monitor_port: int) -> list[int]:
    """The server's ids of the controller's NATS connections (a reconnect gets a new one)."""
    _, text = _get(monitor_port, "/connz")
    return [c["cid"] for c in json.loads(text).get("connections") or []
            if (c.get("name") or "").startswith("genesis-controller:")]


@pytest.fixture
def strict_nats():
    """A NATS server that pings every 2 s and drops a client after two unanswered pings."""
    monitor = _free_port()
    server = NatsServer(f'ping_interval: "2s"\nping_max: 2\nhttp: 127.0.0.1:{monitor}\n')
    server.monitor = monitor
    server.start()
    yield server
    server.stop()
    server.remove()


def test_a_database_stall_shorter_than_the_lease_stops_nothing(tmp_path, sample_repo, docker_client,
                                                               postgres_url, strict_nats):
    url = make_url(postgres_url)
    proxy = Proxy((url.host, url.port))
    behind = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    port = _free_port()
    app, direct = make_app(tmp_path / "home", sample_repo, database_url=postgres_url, lease_ttl_s=LEASE_TTL_S)
    stalled = write_config(tmp_path / "stalled", tmp_path / "unused")
    stalled.write_text(json.dumps({**json.loads(direct.read_text()), "database_url": behind, "metrics_port": port,
                                   "nats": {"url": strict_nats.url}}))
    proc = start_serve(stalled)
    try:
        wait_until(lambda: _get(port, "/readyz")[0] == 200, timeout_s=60, what="the controller to be ready")
        wait_until(lambda: len(_controller_connections(strict_nats.monitor)) == 1, timeout_s=60,
                   what="the controller's NATS connection")
        connections = _controller_connections(strict_nats.monitor)
        ids = [app.intake.submit(json.dumps(experiment(passes=True, seconds=8)).encode()).view.id
               for _ in range(2)]
        wait_until(lambda: all(app.store.get(i).phase.value == "Running" for i in ids), timeout_s=180,
                   what="both sandboxes to run")
        before = _lag_buckets(port)
        proxy.partition()
        answered = []
        ends = time.monotonic() + STALL_S
        while time.monotonic() < ends:  # the stall lasts STALL_S; /healthz is probed throughout
            answered.append(_get(port, "/healthz")[0])
            time.sleep(0.5)
        proxy.heal()
        after = _lag_buckets(port)
        assert _controller_connections(strict_nats.monitor) == connections, [  # never dropped as stale
            line for line in (tmp_path / "stalled" / "serve.log").read_text().splitlines() if "nats" in line]
        wait_finished(app, ids)
        assert proc.poll() is None
    finally:
        stop(proc)
        proxy.close()
    assert answered and set(answered) == {200}, answered
    probes = after["+Inf"] - before["+Inf"]
    assert probes >= STALL_S / 0.1 * 0.5, (before, after)  # the lag probe kept running through the stall
    assert after["0.5"] - before["0.5"] == probes, (before, after)  # never held half a second by the stall
    log = (tmp_path / "stalled" / "serve.log").read_text()
    assert "leadership lost" not in log
    from orchestrator.store.leases import Leader
    assert Leader(app.engine).current()[1] == 1  # the same tenure throughout
    assert all(app.store.get(i).phase.value == "Succeeded" for i in ids)
    assert_finalized_once(app, ids)
    app.close()

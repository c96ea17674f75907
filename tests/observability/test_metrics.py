"""Observability against real servers: /metrics passes promtool, a real
Prometheus scraping a real `genesis serve` sees the figures the store
recorded, per-sandbox series live exactly as long as their sandbox, `genesis
top` shows live use, and the log events of the old design are emitted."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, RUN_ID, TEST_LABEL, drain, hostile, request_body, run_experiment, wait_until

pytestmark = pytest.mark.docker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def promtool_check(text: str) -> subprocess.CompletedProcess:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/setup.sh installs Debian's prometheus package"
    return subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)


def finished_total(text: str, *, only: str = "") -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("genesis_experiments_finished_total{") and only in line)


def test_metrics_pass_promtool_and_count_what_the_store_recorded(app):
    from prometheus_client import generate_latest

    from orchestrator.telemetry.metrics import REGISTRY

    mine = 'experiment_type="promtool-check"'  # other tests' experiments may finish in the same drain
    before = finished_total(generate_latest(REGISTRY).decode(), only=mine)
    views = [run_experiment(app, request_body(experiment_type="promtool-check")),
             run_experiment(app, hostile("x = bytearray(512 * 2**20)\n", experiment_type="promtool-check",
                                         resources={"cpu": 1, "memory": "64Mi", "pids": 64}))]
    text = generate_latest(REGISTRY).decode()
    assert finished_total(text, only=mine) - before == 2
    assert views[1].outcome.error.code == "oom_killed"
    assert 'reason="oom_killed"' in text and 'recommendation="merge"' in text
    for name in ("genesis_phase_duration_seconds_bucket", "genesis_reconcile_duration_seconds_count",
                 "genesis_experiment_duration_seconds_sum", "genesis_image_cache_hits_total"):
        assert name in text, name
    check = promtool_check(text)
    assert check.returncode == 0 and check.stdout.strip() == "" and check.stderr.strip() == "", check


class Prometheus:
    """A real Prometheus on loopback, scraping one target every 0.5 s."""

    def __init__(self, target: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="genesis-prom-"))
        self.port = free_port()
        (self.root / "prometheus.yml").write_text(
            "global: {scrape_interval: 500ms, evaluation_interval: 500ms}\n"
            f"scrape_configs: [{{job_name: genesis, static_configs: [{{targets: ['{target}']}}]}}]\n")
        log = open(self.root / "prometheus.log", "ab")
        self.proc = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={self.root}/prometheus.yml",
             f"--storage.tsdb.path={self.root}/data", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=log)
        wait_until(lambda: self._ready(), timeout_s=30, what="Prometheus to start")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def query(self, promql: str) -> list:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())["data"]["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def serve_with_metrics(tmp_path, sample_repo, docker_client):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    port = free_port()
    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(tmp_path), "repos": {"monorepo": {"path": str(sample_repo), "allow_validation_override": True}}, "extra_labels": {TEST_LABEL: RUN_ID},
        "pass_interval_s": 0.2, "max_concurrent": 2, "metrics_port": port, "sandbox_sample_interval_s": 0.3}))
    app = App(load_settings(config))
    log = open(tmp_path / "serve.log", "ab")
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "serve", "--no-nats"], cwd=ROOT,
                            env=dict(os.environ, GENESIS_CONFIG=str(config)), stdout=log, stderr=log)
    wait_until(lambda: _get(f"http://127.0.0.1:{port}/metrics") is not None, timeout_s=30, what="/metrics")
    yield app, port
    proc.terminate()
    proc.wait(timeout=60)
    app.close()


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def test_prometheus_scrapes_serve_and_its_figures_match_the_store(serve_with_metrics):
    app, port = serve_with_metrics
    prometheus = Prometheus(f"127.0.0.1:{port}")
    try:
        # Scraping before anything runs: per-sandbox series live only while the sandbox does.
        wait_until(lambda: [r for r in prometheus.query("up") if r["value"][1] == "1"], timeout_s=60,
                   what="Prometheus's first successful scrape")
        sleeper = hostile("import time\nblock = bytearray(64 * 2**20)\ntime.sleep(8)\n",
                          resources={"cpu": 0.5, "memory": "256Mi", "pids": 64})
        bodies = [sleeper, request_body(), request_body(validation={"command": ["false"], "report": "exit_code"})]
        for body in bodies:
            assert app.intake.submit(json.dumps(body).encode()).error is None
        name = f"genesis-{sleeper['experiment_id']}-a1"
        try:
            wait_until(lambda: prometheus.query(f'genesis_sandbox_memory_working_set_bytes{{sandbox="{name}"}}'),
                       timeout_s=60, what="per-sandbox series while it runs")
        except AssertionError:
            exposed = [line for line in (_get(f"http://127.0.0.1:{port}/metrics") or "").splitlines()
                       if "sandbox" in line]
            raise AssertionError(f"{name}: scraped {prometheus.query('genesis_sandbox_pids')}, exposed {exposed}, "
                                 f"phase {app.store.get(sleeper['experiment_id']).phase}")
        [limit] = prometheus.query(f'genesis_sandbox_memory_limit_bytes{{sandbox="{name}"}}')
        assert float(limit["value"][1]) == 256 * 2**20
        # The first samples may precede the 64 MiB allocation: wait for the peak to be scraped.
        peak = f'max_over_time(genesis_sandbox_memory_working_set_bytes{{sandbox="{name}"}}[1m])'
        wait_until(lambda: any(float(r["value"][1]) >= 64 * 2**20 for r in prometheus.query(peak)),
                   timeout_s=30, what="the sandbox's 64 MiB to show in its working set")
        ids = [b["experiment_id"] for b in bodies]
        wait_until(lambda: all(app.store.get(i).phase.finished for i in ids), timeout_s=120, what="all three")
        recorded = {}
        for view in (app.store.get(i) for i in ids):
            recorded[view.recommendation.value] = recorded.get(view.recommendation.value, 0) + 1

        def scraped():
            rows = prometheus.query("sum by (recommendation) (genesis_experiments_finished_total)")
            return {r["metric"]["recommendation"]: int(float(r["value"][1])) for r in rows}
        wait_until(lambda: scraped() == recorded, timeout_s=20, what=f"Prometheus to show {recorded}")
        assert prometheus.query("genesis_experiments_queued")[0]["value"][1] == "0"
        # Warm pools are on by default: each experiment's sandbox came from a pool or was made
        # cold, counted once; the pools then hold a ready sandbox for the profiles just used.
        wait_until(lambda: [float(r["value"][1]) for r in prometheus.query("sum(genesis_pool_claims_total)")]
                   == [3.0], timeout_s=20, what="three sandboxes counted by where they came from")
        wait_until(lambda: any(float(r["value"][1]) >= 1 for r in prometheus.query(
            'sum by (pool) (genesis_pool_sandboxes{tier="hot"})')), timeout_s=30, what="a hot pooled sandbox")
        wait_until(lambda: f'sandbox="{name}"' not in (_get(f"http://127.0.0.1:{port}/metrics") or ""),
                   timeout_s=20, what="the sandbox's series to go with it")
    finally:
        prometheus.stop()


def test_genesis_top_shows_live_use_against_limits(app, config_file, monkeypatch, capsys):
    import threading

    from orchestrator.cli.main import main

    body = hostile("import time\nblock = bytearray(48 * 2**20)\ntime.sleep(6)\n",
                   resources={"cpu": 0.5, "memory": "200Mi", "pids": 64})
    assert app.intake.submit(json.dumps(body).encode()).error is None
    runner = threading.Thread(target=drain, args=(app,))
    runner.start()
    try:
        wait_until(lambda: app.store.get(body["experiment_id"]).phase.value == "Running", timeout_s=60,
                   what="the sandbox to run")
        time.sleep(1.0)
        monkeypatch.setenv("GENESIS_CONFIG", str(config_file))
        monkeypatch.setenv("COLUMNS", "200")
        assert main(["top", "--once", "--interval", "0.5"]) == 0
        out = capsys.readouterr().out
    finally:
        runner.join()
    line = next(line for line in out.splitlines() if body["experiment_id"] in line)
    assert "/ 200Mi" in line and "/ 64" in line and "s / 120s" in line


def test_log_events_of_the_old_design_are_emitted(app, caplog):
    caplog.set_level(logging.INFO)
    ok = run_experiment(app, request_body())
    bad = run_experiment(app, request_body(validation={"command": ["false"], "report": "exit_code"}))
    slow = run_experiment(app, hostile("while True:\n    pass\n", timeout_ms=2000))
    events = {}
    for record in caplog.records:
        if getattr(record, "experiment_id", None) in (ok.id, bad.id, slow.id):
            events.setdefault(record.getMessage(), set()).add(record.experiment_id)
            assert getattr(record, "instance_id", None) and getattr(record, "trace_id", None)
    for name in ("experiment_start", "sandbox_created", "changes_applied", "tests_completed", "metrics_measured",
                 "experiment_complete"):
        assert ok.id in events.get(name, set()), name
    assert bad.id in events["rollback_initiated"]
    assert slow.id in events["experiment_timeout"] and slow.id in events["experiment_failed"]


def test_serve_answers_liveness_and_readiness_probes(serve_with_metrics):
    """What the Deployment's probes call: /healthz and /readyz on the metrics port."""
    _, port = serve_with_metrics
    wait_until(lambda: _get(f"http://127.0.0.1:{port}/readyz") is not None, timeout_s=30, what="/readyz")
    ready = json.loads(_get(f"http://127.0.0.1:{port}/readyz"))
    live = json.loads(_get(f"http://127.0.0.1:{port}/healthz"))
    assert ready["ok"] is True and ready["last_turn_ok"] is True and ready["leading"] is True
    assert live["ok"] is True and live["last_turn_age_s"] < 30
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nope", timeout=2)
        raise AssertionError("an unknown path must not answer 200")
    except urllib.error.HTTPError as exc:
        assert exc.code == 404


def test_probes_fail_when_the_loop_stalls_or_its_last_turn_failed():
    import time as clock

    from orchestrator.telemetry.health import Health
    from orchestrator.telemetry.metrics import REGISTRY
    from orchestrator.telemetry.health import serve_http

    health = Health(stale_after_s=0.5, startup_grace_s=0.5)
    server = serve_http(health, REGISTRY, address="127.0.0.1", port=0)
    base = f"http://127.0.0.1:{server.server_port}"

    def status(path: str) -> int:
        try:
            with urllib.request.urlopen(base + path, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        assert (status("/healthz"), status("/readyz")) == (200, 503)  # starting: alive, not ready
        health.beat(ok=False, leading=True, error="database unreachable")
        assert (status("/healthz"), status("/readyz")) == (200, 503)
        health.beat(ok=True, leading=False)  # a healthy standby is ready
        assert (status("/healthz"), status("/readyz")) == (200, 200)
        clock.sleep(0.7)  # the loop stopped turning
        assert (status("/healthz"), status("/readyz")) == (503, 503)
        assert "genesis_" in urllib.request.urlopen(base + "/metrics", timeout=2).read().decode()
    finally:
        server.shutdown()

"""The Grafana dashboard: valid JSON whose panels only name metrics that exist.

Genesis's own metrics are checked against what /metrics really exposes;
cAdvisor, kube-state-metrics and DCGM series are checked against the names
those exporters document (no Kubernetes cluster or GPU runs here, so their
values are not)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from helpers import ROOT

DASHBOARD = ROOT / "helm" / "genesis" / "dashboards" / "genesis.json"
EXTERNAL = {  # names documented by cAdvisor, kube-state-metrics and NVIDIA's dcgm-exporter
    "container_cpu_usage_seconds_total", "container_memory_working_set_bytes",
    "kube_pod_container_resource_limits", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED",
}
METRIC = re.compile(r"\b(genesis_[a-z0-9_]+|container_[a-z0-9_]+|kube_[a-z0-9_]+|DCGM_[A-Z0-9_]+)\b")


def exposed_names() -> set[str]:
    from prometheus_client import generate_latest

    from orchestrator.runtimes.base import SandboxUsage
    from orchestrator.telemetry import metrics

    metrics.SANDBOXES.replace({"genesis-x-a1": SandboxUsage(1.0, 1, 2, 3)})  # so per-sandbox series show
    metrics.observe_finished(status="success", recommendation="merge", reason=None, experiment_type="t",
                             risk_level="low", duration_s=1.0)
    metrics.observe_phase("validation", 0.1)
    for collector in (metrics.RECONCILE_ERRORS.labels(kind="pass"), metrics.IMAGE_BUILDS.labels("snapshot", "built"),
                      metrics.NATS_MESSAGES.labels("in", "request", "accepted"), metrics.POOL_CLAIMS.labels("hot"),
                      metrics.POOL_EVICTIONS.labels("idle")):
        collector.inc(0)
    metrics.set_pool_sizes({("p", "hot"): 1})
    metrics.POOL_CLAIM_SECONDS.labels("hot").observe(0.01)
    text = generate_latest(metrics.REGISTRY).decode()
    metrics.SANDBOXES.replace({})
    metrics.set_pool_sizes({})
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_dashboard_is_what_the_generator_writes():
    before = DASHBOARD.read_text()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make-dashboard.py")], check=True, capture_output=True)
    assert DASHBOARD.read_text() == before, "run scripts/make-dashboard.py and commit the result"


def test_every_panel_names_metrics_that_exist():
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = exposed_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(METRIC.findall(target["expr"]))
            assert names, (panel["title"], target["expr"])
            for name in names:
                assert name in exposed or name in EXTERNAL, (panel["title"], name)
            used |= names
    # The panels the issue asks for are there.
    for must in ("genesis_experiments_queued", "genesis_experiments_running", "genesis_experiments_finished_total",
                 "genesis_phase_duration_seconds_bucket", "genesis_sandbox_memory_working_set_bytes",
                 "genesis_sandbox_memory_limit_bytes", "genesis_reconcile_duration_seconds_bucket",
                 "container_memory_working_set_bytes", "DCGM_FI_DEV_GPU_UTIL"):
        assert must in used, must


def test_panels_do_not_overlap():
    cells = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, panel["title"]
                cells.add((x, y))

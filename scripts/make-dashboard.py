#!/usr/bin/env python3
"""Write the Grafana dashboard for Genesis (helm/genesis/dashboards/genesis.json).

Panels over the metrics of orchestrator/telemetry/metrics.py; on Kubernetes,
per-pod panels over cAdvisor and kube-state-metrics series and GPU panels
over the DCGM exporter's. tests/observability/test_dashboard.py checks that
every metric a panel names exists. Re-run after changing panels:
    .venv/bin/python scripts/make-dashboard.py
"""

import json
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "helm" / "genesis" / "dashboards" / "genesis.json"
SANDBOX_NS = 'namespace="$sandbox_namespace"'


def panel(pid, title, exprs, *, unit="short", kind="timeseries", x=0, y=0, w=12, h=8, legends=None):
    targets = [{"refId": chr(65 + i), "expr": e, "legendFormat": (legends or [""] * len(exprs))[i],
                "datasource": {"type": "prometheus", "uid": "${datasource}"}} for i, e in enumerate(exprs)]
    return {"id": pid, "type": kind, "title": title, "gridPos": {"x": x, "y": y, "w": w, "h": h},
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "targets": targets}


def row(pid, title, y):
    return {"id": pid, "type": "row", "title": title, "collapsed": False, "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
            "panels": []}


def quantiles(metric, by):
    return [f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket[5m])))" for q in ("0.5", "0.95")]


def build() -> dict:
    p = [
        row(1, "Experiments", 0),
        panel(2, "Queued and running", ["genesis_experiments_queued", "genesis_experiments_running"],
              legends=["queued", "running"], x=0, y=1, w=8),
        panel(3, "Outcomes per minute", ["sum by (status) (rate(genesis_experiments_finished_total[5m])) * 60"],
              legends=["{{status}}"], x=8, y=1, w=8),
        panel(4, "Verdicts (last hour)",
              ["sum by (recommendation) (increase(genesis_experiments_finished_total{status=\"success\"}[1h]))"],
              legends=["{{recommendation}}"], kind="bargauge", x=16, y=1, w=8),
        panel(5, "Experiment duration p50 / p95", [
            "histogram_quantile(0.5, sum by (le) (rate(genesis_experiment_duration_seconds_bucket[5m])))",
            "histogram_quantile(0.95, sum by (le) (rate(genesis_experiment_duration_seconds_bucket[5m])))"],
              unit="s", legends=["p50", "p95"], x=0, y=9, w=8),
        panel(6, "Phase durations p50 / p95", quantiles("genesis_phase_duration_seconds", "phase"), unit="s",
              legends=["{{phase}} p50", "{{phase}} p95"], x=8, y=9, w=8),
        panel(7, "OOM kills and timeouts (last hour)",
              ["sum by (reason) (increase(genesis_experiments_finished_total{reason=~\"oom_killed|timeout\"}[1h]))"],
              legends=["{{reason}}"], x=16, y=9, w=8),
        row(8, "Sandboxes (Genesis's own cgroup sampling)", 17),
        panel(9, "CPU per sandbox (cores)", ["rate(genesis_sandbox_cpu_seconds_total[1m])"],
              legends=["{{sandbox}}"], x=0, y=18, w=8),
        panel(10, "Memory against limit", [
            "genesis_sandbox_memory_working_set_bytes / genesis_sandbox_memory_limit_bytes"],
              unit="percentunit", legends=["{{sandbox}}"], x=8, y=18, w=8),
        panel(11, "Processes per sandbox", ["genesis_sandbox_pids"], legends=["{{sandbox}}"], x=16, y=18, w=8),
        row(12, "Controller, NATS, images", 26),
        panel(13, "Reconcile pass p99 and errors", [
            "histogram_quantile(0.99, sum by (le) (rate(genesis_reconcile_duration_seconds_bucket[5m])))",
            "sum by (kind) (rate(genesis_reconcile_errors_total[5m]))", "max(genesis_controller_leader)"],
              legends=["pass p99 (s)", "errors/s {{kind}}", "leader"], x=0, y=27, w=8),
        panel(14, "NATS messages per second",
              ["sum by (direction, result) (rate(genesis_nats_messages_total[5m]))"],
              legends=["{{direction}} {{result}}"], x=8, y=27, w=8),
        panel(15, "Image builds and cache hits", [
            "sum by (kind, result) (increase(genesis_image_builds_total[1h]))",
            "increase(genesis_image_cache_hits_total[1h])", "genesis_snapshot_images_bytes"],
              legends=["{{kind}} {{result}}", "cache hits", "snapshot bytes"], x=16, y=27, w=8),
        row(20, "Warm pools", 35),
        panel(21, "Ready pooled sandboxes by tier", ["sum by (tier) (genesis_pool_sandboxes)"],
              legends=["{{tier}}"], x=0, y=36, w=8),
        panel(22, "Sandboxes by where they came from (per minute)", [
            "sum by (tier) (rate(genesis_pool_claims_total[5m])) * 60",
            "sum by (reason) (rate(genesis_pool_evictions_total[5m])) * 60"],
              legends=["{{tier}}", "evicted: {{reason}}"], x=8, y=36, w=8),
        panel(23, "Claim to bundle delivered, p50 / p95", quantiles("genesis_pool_claim_seconds", "tier"),
              unit="s", legends=["p50 {{tier}}", "p95 {{tier}}"], x=16, y=36, w=8),
        row(16, "Kubernetes sandbox pods (cAdvisor, kube-state-metrics) and GPUs (DCGM exporter)", 44),
        panel(17, "Pod CPU (cores)", [
            f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{SANDBOX_NS}, container!=\"\"}}[1m]))"],
              legends=["{{pod}}"], x=0, y=45, w=8),
        panel(18, "Pod memory against limit", [
            f"sum by (pod) (container_memory_working_set_bytes{{{SANDBOX_NS}, container!=\"\"}}) / "
            f"sum by (pod) (kube_pod_container_resource_limits{{{SANDBOX_NS}, resource=\"memory\"}})"],
              unit="percentunit", legends=["{{pod}}"], x=8, y=45, w=8),
        panel(19, "GPU utilisation and memory", [
            "avg by (gpu, Hostname) (DCGM_FI_DEV_GPU_UTIL)", "sum by (gpu, Hostname) (DCGM_FI_DEV_FB_USED)"],
              legends=["util % gpu {{gpu}}", "MiB used gpu {{gpu}}"], x=16, y=45, w=8),
    ]
    return {
        "uid": "genesis-overview", "title": "Genesis", "tags": ["genesis"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "sandbox_namespace", "type": "constant", "query": "genesis-sandboxes", "hide": 2},
        ]},
        "panels": p,
    }


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {OUT}")

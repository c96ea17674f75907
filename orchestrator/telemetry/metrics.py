"""Every Prometheus metric Genesis exports, in one module (SPEC §9).

Names and units follow Prometheus conventions (seconds, bytes, ``_total``
for counters) and pass ``promtool check metrics``. Labels are bounded:
statuses, recommendations, reasons and risk levels are closed sets;
``experiment_type`` (chosen by clients) keeps its first
``MAX_EXPERIMENT_TYPES`` values and folds the rest into ``other``; the
per-sandbox series exist only while the sandbox runs, so their number is
bounded by ``max_concurrent``. Histogram buckets are set around the figures
measured in ``benchmarks/`` (sandbox start ~0.3 s, teardown ~10 ms, a
controller pass 2–250 ms).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from orchestrator.runtimes.base import SandboxUsage

REGISTRY = CollectorRegistry(auto_describe=True)
MAX_EXPERIMENT_TYPES = 32
STATUSES = {"success", "failed"}
RECOMMENDATIONS = {"merge", "merge_with_adaptations", "rollback"}
REASONS = {"none", "invalid_request", "invalid_json", "body_too_large", "too_many_files", "invalid_path",
           "empty_change", "resources_exceeded", "unknown_repo", "unknown_commit", "conflict", "build_failed",
           "patch_failed", "timeout", "oom_killed", "disk_exceeded", "sandbox_lost", "cancelled", "runtime_error"}
RISKS = {"low", "medium", "high"}
PHASES = ("queue_wait", "environment_build", "image_build", "sandbox_start", "validation", "teardown")

EXPERIMENTS_FINISHED = Counter(
    "genesis_experiments_finished", "Experiments finished, by outcome.",
    ["status", "recommendation", "reason", "experiment_type", "risk_level"], registry=REGISTRY)
EXPERIMENTS_QUEUED = Gauge("genesis_experiments_queued", "Experiments waiting for admission.", registry=REGISTRY)
EXPERIMENTS_RUNNING = Gauge("genesis_experiments_running", "Experiments admitted and not finished.",
                            registry=REGISTRY)
EXPERIMENT_DURATION = Histogram(
    "genesis_experiment_duration_seconds", "From request to outcome.", registry=REGISTRY,
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200))
PHASE_DURATION = Histogram(
    "genesis_phase_duration_seconds", "Time spent in one step of an experiment.", ["phase"], registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800))
RECONCILE_DURATION = Histogram(
    "genesis_reconcile_duration_seconds", "One controller pass.", registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
EVENT_LOOP_LAG = Histogram(
    "genesis_event_loop_lag_seconds", "How late the controller's event loop ran a 100 ms timer: "
    "anything blocking the loop (a store call made on it) shows here.", registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
RECONCILE_ERRORS = Counter("genesis_reconcile_errors", "Controller passes or actions that failed.", ["kind"],
                           registry=REGISTRY)
RECONCILE_ACTIONS = Counter("genesis_reconcile_actions", "Actions the controller applied.", ["action"],
                            registry=REGISTRY)
NATS_MESSAGES = Counter("genesis_nats_messages", "NATS messages in and out.", ["direction", "family", "result"],
                        registry=REGISTRY)
IMAGE_BUILDS = Counter("genesis_image_builds", "Image builds.", ["kind", "result"], registry=REGISTRY)
IMAGE_CACHE_HITS = Counter("genesis_image_cache_hits", "Snapshot images reused instead of built.",
                           registry=REGISTRY)
SNAPSHOT_BYTES = Gauge("genesis_snapshot_images_bytes", "Disk used by snapshot images Genesis tracks.",
                       registry=REGISTRY)
LEADER = Gauge("genesis_controller_leader", "1 while this process is the active controller.", registry=REGISTRY)
# Warm pools (docs/pools.md): ready sandboxes by pool and tier; how each sandbox was had
# (tier hot | warm from a pool, cold made on the spot) and how long a claim took.
POOL_SANDBOXES = Gauge("genesis_pool_sandboxes", "Ready (unclaimed) pooled sandboxes.", ["pool", "tier"],
                       registry=REGISTRY)
POOL_CLAIMS = Counter("genesis_pool_claims", "Experiment sandboxes by where they came from.", ["tier"],
                      registry=REGISTRY)
POOL_CLAIM_SECONDS = Histogram(
    "genesis_pool_claim_seconds", "From claiming a pooled sandbox to its bundle delivered.", ["tier"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=REGISTRY)
POOL_EVICTIONS = Counter("genesis_pool_evictions", "Pooled sandboxes removed unclaimed.", ["reason"],
                         registry=REGISTRY)


def set_pool_sizes(counts: dict[tuple[str, str], int]) -> None:
    """The ready sandboxes now: series of pools no longer held disappear."""
    POOL_SANDBOXES.clear()
    for (pool, tier), count in counts.items():
        POOL_SANDBOXES.labels(pool=pool, tier=tier).set(count)


_types: set[str] = set()
_types_lock = threading.Lock()


def bounded_type(experiment_type: str) -> str:
    with _types_lock:
        if experiment_type in _types:
            return experiment_type
        if len(_types) < MAX_EXPERIMENT_TYPES:
            _types.add(experiment_type)
            return experiment_type
    return "other"


def observe_finished(*, status: str, recommendation: str | None, reason: str | None, experiment_type: str,
                     risk_level: str, duration_s: float | None) -> None:
    EXPERIMENTS_FINISHED.labels(
        status=status if status in STATUSES else "failed",
        recommendation=recommendation if recommendation in RECOMMENDATIONS else "rollback",
        reason=(reason or "none") if (reason or "none") in REASONS else "other",
        experiment_type=bounded_type(experiment_type),
        risk_level=risk_level if risk_level in RISKS else "unknown",
    ).inc()
    if duration_s is not None and duration_s >= 0:
        EXPERIMENT_DURATION.observe(duration_s)


def observe_phase(phase: str, seconds: float | None) -> None:
    if seconds is not None and seconds >= 0 and phase in PHASES:
        PHASE_DURATION.labels(phase=phase).observe(seconds)


class SandboxCollector(Collector):
    """Per-sandbox CPU, memory and pids, from the latest samples; a sandbox's
    series disappear as soon as it is no longer sampled as running."""

    def __init__(self) -> None:
        self._samples: dict[str, SandboxUsage] = {}
        self._lock = threading.Lock()

    def replace(self, samples: dict[str, SandboxUsage]) -> None:
        with self._lock:
            self._samples = dict(samples)

    def samples(self) -> dict[str, SandboxUsage]:
        with self._lock:
            return dict(self._samples)

    def collect(self):
        samples = self.samples()
        cpu = CounterMetricFamily("genesis_sandbox_cpu_seconds", "CPU time used by a running sandbox.",
                                  labels=["sandbox"])
        memory = GaugeMetricFamily("genesis_sandbox_memory_working_set_bytes",
                                   "Working set of a running sandbox (usage minus inactive file cache).",
                                   labels=["sandbox"])
        limit = GaugeMetricFamily("genesis_sandbox_memory_limit_bytes", "Memory limit of a running sandbox.",
                                  labels=["sandbox"])
        pids = GaugeMetricFamily("genesis_sandbox_pids", "Processes in a running sandbox.", labels=["sandbox"])
        for name, usage in sorted(samples.items()):
            cpu.add_metric([name], usage.cpu_seconds)
            memory.add_metric([name], usage.memory_working_set_bytes)
            limit.add_metric([name], usage.memory_limit_bytes)
            pids.add_metric([name], usage.pids)
        return [cpu, memory, limit, pids]

    def describe(self):
        return self.collect()


SANDBOXES = SandboxCollector()
REGISTRY.register(SANDBOXES)

"""Controller figures.

1. pass time and memory with 10,000 records of which 1,000 are active, and
   at the scale of a busy single host, 100,000 of which 10,000 active (goal:
   a pass under 300 ms): the pure planner alone, and a pass over the real
   store (SQLite; the ``fencing`` benchmark runs it on PostgreSQL too), each
   beside the same pass with a tenth of the records (the cost of history).
2. throughput: trivial experiments per minute at max_concurrent 2, 4, 8,
   beside the same number of raw ``docker run --rm`` in a shell loop; and
   the orchestrator's CPU seconds per experiment.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report, raw_docker_runs, stats_ms
from orchestrator.domain.models import Phase
from orchestrator.domain.planner import Capacity, Desired, Limits, Observed, plan
from orchestrator.store.db import make_engine, upgrade
from orchestrator.store.repository import Store
from orchestrator.store.tables import ExperimentRow

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)
ACTIVE = (Phase.BUILDING, Phase.RUNNING, Phase.RUNNING, Phase.COLLECTING)


def synthetic(total: int, active: int, rng: random.Random) -> tuple[list[Desired], list[Observed]]:
    desired, observed = [], []
    for index in range(total):
        eid = f"exp-{index:06d}"
        if index < active:
            phase = rng.choice(ACTIVE)
        elif index < active * 2:
            phase = Phase.PENDING
        else:
            continue  # finished and not preserved: the store never returns these
        name = f"genesis-{eid}-a1"
        desired.append(Desired(id=eid, instance_id=f"inst-{index % 50}", phase=phase, priority=rng.randint(0, 9),
                               created_at=NOW - timedelta(seconds=index), attempt=1, sandbox_name=name,
                               phase_since=NOW, deadline_at=NOW + timedelta(hours=1), cpu=0.5,
                               memory_bytes=2**28))
        if phase is Phase.RUNNING:
            observed.append(Observed(name, eid, "running"))
    return desired, observed


def timed_plan(desired, observed, runs: int) -> tuple[dict, int]:
    capacity = Capacity(max_concurrent=2000, cpu=4000, memory_bytes=2**50)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        plan(desired, observed, now=NOW, capacity=capacity, limits=Limits())
        samples.append((time.perf_counter() - started) * 1000)
    # Memory from one more pass, untimed: tracing every allocation makes a pass about twice as slow.
    tracemalloc.start()
    try:
        plan(desired, observed, now=NOW, capacity=capacity, limits=Limits())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return stats_ms(samples), peak


def fill_store(store: Store, total: int, active: int, rng: random.Random) -> None:
    rows = []
    for index in range(total):
        phase = rng.choice(ACTIVE) if index < active else (
            Phase.PENDING if index < 2 * active else rng.choice((Phase.SUCCEEDED, Phase.FAILED)))
        rows.append(dict(id=f"exp-{index:06d}", instance_id=f"inst-{index % 50}", experiment_type="bench",
                         risk_level="low", repo="monorepo", base_ref="main", commit="0" * 40,
                         spec={"pad": "x" * 2000}, body_sha256="0" * 64, phase=phase.value, conditions=[],
                         priority=rng.randint(0, 9), attempt=1, cancel_requested=False,
                         sandbox_name=f"genesis-exp-{index:06d}-a1", created_at=NOW, updated_at=NOW,
                         phase_since=NOW, cpu=0.5, memory_bytes=2**28, gpus_requested=0))
    with store.engine.begin() as conn:
        conn.execute(ExperimentRow.__table__.insert(), rows)


def store_pass(total: int, active: int, runs: int, *, url: str | None = None) -> tuple[dict, int]:
    """What a pass reads (``desired()``, ``baselines()``) and decides (``plan``), over
    ``total`` records of which ``active`` active, in the empty database at ``url``
    (migrated here); ``None``: a SQLite file in a temp dir."""
    if url is None:
        with tempfile.TemporaryDirectory(prefix="genesis-bench-db-") as scratch:
            return store_pass(total, active, runs, url=f"sqlite:///{scratch}/bench.db")
    engine = make_engine(url)
    try:
        upgrade(engine)
        store = Store(engine)
        fill_store(store, total, active, random.Random(total))
        capacity = Capacity(max_concurrent=2000, cpu=4000, memory_bytes=2**50)

        def one_pass() -> None:
            desired = store.desired()
            store.baselines(frozenset())
            observed = [Observed(d.sandbox_name or "", d.id, "running") for d in desired if d.phase is Phase.RUNNING]
            plan(desired, observed, now=NOW, capacity=capacity, limits=Limits())

        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            one_pass()
            samples.append((time.perf_counter() - started) * 1000)
        # Memory from one more pass, untimed: tracing every allocation makes a pass several times slower.
        tracemalloc.start()
        try:
            one_pass()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        engine.dispose()
    return stats_ms(samples), peak


def pass_figures(report: Report, runs: int) -> None:
    rng = random.Random(7)
    scales = {"100k_10k_active": (100_000, 10_000), "10k_1k_active": (10_000, 1_000), "1k_100_active": (1_000, 100)}
    few = max(3, min(runs, 5))  # a 100k pass takes a while: enough samples for a median
    planner = {key: timed_plan(*synthetic(total, active, rng), few if total >= 100_000 else runs)
               for key, (total, active) in scales.items()}
    report.data["planner"] = {key: figures for key, (figures, _) in planner.items()}
    report.data["planner"]["peak_bytes"] = {key: peak for key, (_, peak) in planner.items()}
    for big, small in (("100k_10k_active", "10k_1k_active"), ("10k_1k_active", "1k_100_active")):
        (b, b_peak), (s, s_peak) = planner[big], planner[small]
        report.add(f"planner pass, {_scale(big)} (ms)", f"{b['median_ms']:.1f}",
                   f"{s['median_ms']:.1f} ({_scale(small)})", f"{b['median_ms'] / s['median_ms']:.1f}x")
        report.add(f"  planner peak memory, {_scale(big)} (MiB)", f"{b_peak / 2**20:.1f}", f"{s_peak / 2**20:.1f}", "")
    store = {key: store_pass(total, active, few if total >= 100_000 else runs)
             for key, (total, active) in scales.items()}
    report.data["store_pass"] = {key: figures for key, (figures, _) in store.items()}
    for big, small in (("100k_10k_active", "10k_1k_active"), ("10k_1k_active", "1k_100_active")):
        (b, b_peak), (s, s_peak) = store[big], store[small]
        report.add(f"pass with the SQLite store, {_scale(big)} (ms)", f"{b['median_ms']:.1f}",
                   f"{s['median_ms']:.1f} ({_scale(small)})", f"{b['median_ms'] / s['median_ms']:.1f}x")
        report.add(f"  store pass peak memory, {_scale(big)} (MiB)", f"{b_peak / 2**20:.1f}",
                   f"{s_peak / 2**20:.1f}", "")


def _scale(key: str) -> str:
    total, active = key.split("_")[:2]
    return f"{total} records / {active} active"


def throughput(report: Report, *, count: int, levels: tuple[int, ...]) -> None:
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="genesis-bench-tp-") as scratch:
        home = Path(scratch)
        subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(home / "repo")], check=True)
        for level in levels:
            config = home / f"g{level}.yaml"
            config.write_text(json.dumps({
                "home": str(home / f"h{level}"),
                "repos": {"monorepo": {"path": str(home / "repo"), "allow_validation_override": True}},
                "extra_labels": {BENCH_LABEL: RUN_ID}, "max_concurrent": level, "pass_interval_s": 0.1,
                "preserve_ttl_s": 0}))
            app = App(load_settings(config))
            body = {"instance_id": "bench", "repo": "monorepo", "base_ref": "main",
                    "changes": {"files": [{"path": "x.txt", "content": "x"}]},
                    "validation": {"command": ["true"], "report": "exit_code"},
                    "resources": {"cpu": 0.25, "memory": "128Mi", "pids": 64}}
            # Warm: snapshot image and baseline exist before timing.
            app.intake.submit(json.dumps(dict(body, experiment_id=str(uuid.uuid4()))).encode())
            asyncio.run(app.controller(leader=False).run_until_idle())
            ids = [app.intake.submit(json.dumps(dict(body, experiment_id=str(uuid.uuid4()))).encode()).view.id
                   for _ in range(count)]
            cpu0, started = time.process_time(), time.perf_counter()
            asyncio.run(app.controller(leader=False).run_until_idle())
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
            # A rate of refused or failed experiments would measure nothing of interest.
            failed = [v.message for v in map(app.store.get, ids) if v.recommendation is None or
                      v.recommendation.value != "merge"]
            assert not failed, f"{len(failed)} of {count} not merged: {failed[:3]}"
            image = app.store.images()[-1]["tag"]
            app.close()
            raw = raw_docker_runs(image, count)
            report.data.setdefault("throughput", {})[level] = {"experiments": count, "wall_s": wall,
                                                               "cpu_s": cpu, "raw_loop_s": raw}
            report.add(f"throughput, max_concurrent {level} (experiments/min)", f"{60 * count / wall:.0f}",
                       f"{60 * count / raw:.0f} (docker run loop)", f"{raw / wall:.2f}x")
            report.add(f"  orchestrator CPU per experiment, max_concurrent {level} (s)", f"{cpu / count:.3f}", "", "")

"""Warm pools beside cold starts and raw ``docker run``, from one run.

1. claim latency: an agent's loop (each experiment submitted when the previous
   one finished), from the experiment being admitted (its ``Admitted``
   transition) to the validation command starting (the runner's
   ``validation_started_ms``): pools on (hot claims) beside pools off (cold
   starts). Goal: p50 <= 50 ms, p99 <= 120 ms.
2. burst: 20 trivial experiments submitted at once (one batch, as NATS intake
   records a fetch) on pools pre-warmed by the same burst a moment before
   (pools allowed to hold the burst, hot: ``max_per_pool``,
   ``max_hot_per_pool`` and ``max_sandboxes`` at 20), beside 20 raw
   ``docker run --rm`` at the same concurrency (``xargs -P``). Three times,
   each beside its raw run; the medians. Goal: >= 1.3x sooner.
3. steady throughput at max_concurrent 2 / 4 / 8, pools on and off, beside a
   raw ``docker run`` loop of the same count (one after another, timed at
   each level, right after) and the same count through ``xargs -P`` at the
   level (the ``throughput`` benchmark times the same without a running
   controller), and the orchestrator's CPU seconds per experiment: per
   level, and the median over every burst of the run (goal: <= 0.05 s).

The controller runs for the whole of each part (``Controller.run``, passes at
the default 1 s, woken by requests and sandbox exits as in ``genesis serve``),
so pools stay filled between experiments as they would there.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report, raw_docker_runs

BODY = {"instance_id": "bench", "repo": "monorepo", "base_ref": "main",
        "changes": {"files": [{"path": "x.txt", "content": "x"}]},
        "validation": {"command": ["true"], "report": "exit_code"},
        "resources": {"cpu": 0.25, "memory": "128Mi", "pids": 64}}


def _app(home: Path, repo: Path, *, pools: bool, level: int, depth: int | None = None):
    """A Genesis of its own; ``depth``: pools that may hold that many sandboxes, all hot."""
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    config = home / f"genesis-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(json.dumps({
        "home": str(home / config.stem), "installation": f"bench-{RUN_ID}-{config.stem[-6:]}",
        "repos": {"monorepo": {"path": str(repo), "allow_validation_override": True}},
        "extra_labels": {BENCH_LABEL: RUN_ID}, "max_concurrent": level,  # passes: the default 1 s
        "preserve_ttl_s": 0, "api": {"port": 0}, "metrics_port": 0, "sandbox_sample_interval_s": 0,
        "pools": {"enabled": pools, **({"max_per_pool": depth, "max_hot_per_pool": depth, "max_sandboxes": depth}
                                       if depth else {})}}))
    return App(load_settings(config))


def _submit(app, n: int = 1) -> list[str]:
    """``n`` requests recorded at once, as intake records a batch fetched from NATS (one
    transaction, the base ref resolved once per batch), waking the controller once."""
    from orchestrator.pipeline.intake import Received

    recorded = app.intake.submit_many([Received(json.dumps(dict(BODY, experiment_id=str(uuid.uuid4()))).encode())
                                       for _ in range(n)])
    refused = [r.error for r in recorded if r.error is not None]
    assert not refused, f"refused: {refused[:3]}"
    return [r.experiment_id for r in recorded]


async def _until(predicate, timeout_s: float = 300) -> float:
    """Polls every 20 ms, cheaply: the benchmark shares the controller's process (and its GIL).
    Returns the CPU seconds the polls took, which are the benchmark's, not Genesis's."""
    deadline = time.monotonic() + timeout_s
    spent = 0.0
    while True:
        before = time.thread_time()  # the checks run on this (the event loop's) thread
        done = predicate()
        spent += time.thread_time() - before
        if done:
            return spent
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.02)


def _finished() -> float:
    """Experiments this process finished so far (Genesis's own counter, read in memory: a
    burst's polls must not cost the store a query each, nor hold its one SQLite connection)."""
    from orchestrator.telemetry import metrics

    return sum(s.value for m in metrics.EXPERIMENTS_FINISHED.collect() for s in m.samples
               if s.name.endswith("_total"))


async def _run(app, n: int = 1) -> tuple[list[str], float]:
    """Submit ``n`` experiments and wait until Genesis finished them all; their ids, and the
    CPU seconds the polls took. The only experiments in flight are these."""
    before = _finished()
    ids = _submit(app, n)
    polling = await _until(lambda: _finished() - before >= n)
    assert _done(app, ids), "the experiments finished are not the ones submitted"
    return ids, polling


def _done(app, ids: list[str]) -> bool:
    """All of ``ids`` finished: one indexed count, not a record read per id."""
    from sqlalchemy import func, select
    from orchestrator.store.tables import ExperimentRow

    with app.engine.connect() as connection:
        finished = connection.scalar(select(func.count()).select_from(ExperimentRow).where(
            ExperimentRow.id.in_(ids), ExperimentRow.phase.in_(("Succeeded", "Failed"))))
    return finished == len(ids)


def _merged(app, ids: list[str]) -> None:
    failed = [v.message for v in map(app.store.get, ids) if v.recommendation is None
              or v.recommendation.value != "merge"]
    assert not failed, f"{len(failed)} of {len(ids)} not merged: {failed[:3]}"


def _ready(app, tier: str | None = "hot") -> int:
    """Ready members of ``tier`` (None: any) once the host is quiet: no refill round in
    progress and no finished experiment's sandbox still to remove. An agent's think time,
    seconds, outlasts both; on 2 cores a claim beside a create or a removal waits for the CPU."""
    pools = app.executor.pools
    if pools._running_round() is not None or not _swept(app):
        return 0
    return sum(1 for m in pools._ready.values() if tier is None or m.tier == tier)


def _swept(app) -> bool:
    """No finished experiment's sandbox is left to remove (the next part starts on an engine
    as clean as the one before it: every listing of the engine walks all its containers)."""
    others = app.docker.client.api.containers(  # summaries: no inspect that a removal could race
        all=True, filters={"label": f"genesis.installation={app.settings.installation}"})
    return not any((c.get("Labels") or {}).get("genesis.role") != "pool" or c.get("State") == "exited"
                   for c in others)


def _claim_ms(app, experiment_id: str) -> float:
    """Admitted → the validation command started (the runner's clock: the host's)."""
    admitted = next(h.at for h in app.store.history(experiment_id) if h.reason.startswith("Admitted"))
    result = json.loads((app.settings.artifacts_dir / experiment_id / "out" / "result.json").read_text())
    return result["validation_started_ms"] - admitted.timestamp() * 1000


async def _with_controller(app, work):
    controller = app.controller(leader=False)
    app.intake.notify = controller.wake  # as `genesis serve` wires it: a request wakes a pass
    running = asyncio.create_task(controller.run())
    try:
        return await work()
    finally:
        controller.shutdown()
        await running


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def claim_latency(home: Path, repo: Path, *, runs: int, pools: bool) -> tuple[list[float], str]:
    """Samples (ms), and the snapshot image the experiments ran on."""
    app = _app(home, repo, pools=pools, level=2)

    async def work():
        await _run(app)  # builds the image and runs the baseline
        samples = []
        for _ in range(runs):
            if pools:
                await _until(lambda: _ready(app) >= 1, 60)  # an agent's think time is longer than a refill
            [one], _ = await _run(app)
            _merged(app, [one])
            samples.append(_claim_ms(app, one))
        await _until(lambda: _swept(app), 60)
        return samples, app.store.get(one).image
    try:
        return asyncio.run(_with_controller(app, work))
    finally:
        app.close()


def burst(home: Path, repo: Path, *, count: int, level: int, pools: bool,
          deep: bool = False) -> tuple[float, float]:
    """(wall seconds, orchestrator CPU seconds) of ``count`` experiments submitted at once.
    Pools on: pre-warmed by ``level`` experiments a moment before (the pools' defaults), or
    ``deep``: by the same burst, in pools allowed to hold all of it hot."""
    app = _app(home, repo, pools=pools, level=level, depth=count if deep else None)

    async def work():
        await _run(app)
        if pools:  # pre-warm: demand a moment before fills the pool
            await _run(app, count if deep else level)
            await _until(lambda: _ready(app, "hot" if deep else None) >= (count if deep else level), 120)
        cpu0, started = time.process_time(), time.perf_counter()
        ids, polling = await _run(app, count)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0 - polling
        _merged(app, ids)
        await _until(lambda: _swept(app), 60)
        return wall, cpu
    try:
        return asyncio.run(_with_controller(app, work))
    finally:
        app.close()


def run(report: Report, *, runs: int, count: int = 20, levels: tuple[int, ...] = (2, 4, 8),
        bursts: int = 3) -> None:
    """Each figure beside its baseline timed right after it (interleaved: the machine's drift
    over a run hits both sides alike); the burst ``bursts`` times, as medians."""
    with tempfile.TemporaryDirectory(prefix="genesis-bench-pools-") as scratch:
        home = Path(scratch)
        repo = home / "repo"
        subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(repo)], check=True,
                       capture_output=True)
        hot, image = claim_latency(home, repo, runs=runs, pools=True)
        cold, _ = claim_latency(home, repo, runs=runs, pools=False)
        report.data["pool_claim_ms"] = {"hot": hot, "cold": cold}
        report.add("admitted -> validation started, p50 (ms)", f"{statistics.median(hot):.0f} (hot pool)",
                   f"{statistics.median(cold):.0f} (cold start)", f"{statistics.median(hot) / statistics.median(cold):.2f}x")
        report.add("admitted -> validation started, p99 (ms)", f"{_pct(hot, 0.99):.0f} (hot pool)",
                   f"{_pct(cold, 0.99):.0f} (cold start)", f"{_pct(hot, 0.99) / _pct(cold, 0.99):.2f}x")
        walls, raws = [], []
        for _ in range(bursts):
            walls.append(burst(home, repo, count=count, level=4, pools=True, deep=True))
            raws.append(raw_docker_runs(image, count, 4))
        wall, raw = statistics.median(w for w, _ in walls), statistics.median(raws)
        report.data["pool_burst"] = {"count": count, "level": 4, "runs": [{"wall_s": w, "cpu_s": c, "raw_s": r}
                                                                         for (w, c), r in zip(walls, raws)]}
        report.add(f"burst of {count}, pools pre-warmed by it, concurrency 4, median of {bursts} (s)", f"{wall:.2f}",
                   f"{raw:.2f} (docker run, xargs -P 4)", f"{raw / wall:.2f}x sooner")
        report.add("  each run (s)", " / ".join(f"{w:.2f}" for w, _ in walls), " / ".join(f"{r:.2f}" for r in raws),
                   " / ".join(f"{r / w:.2f}x" for (w, _), r in zip(walls, raws)))
        for level in levels:
            on = burst(home, repo, count=count, level=level, pools=True)
            off = burst(home, repo, count=count, level=level, pools=False)
            loop = raw_docker_runs(image, count, 1)  # the baseline: one `docker run` after another
            raw = raw_docker_runs(image, count, level)
            report.data.setdefault("pool_throughput", {})[level] = {"pools": on, "no_pools": off, "raw_s": raw,
                                                                    "loop_s": loop}
            report.add(f"throughput, max_concurrent {level}, pools on / off (experiments/min)",
                       f"{60 * count / on[0]:.0f} / {60 * count / off[0]:.0f}",
                       f"{60 * count / loop:.0f} (docker run loop)",
                       f"{loop / on[0]:.2f}x / {loop / off[0]:.2f}x")
            report.add("", "", f"{60 * count / raw:.0f} (docker run, xargs -P {level})",
                       f"{raw / on[0]:.2f}x / {raw / off[0]:.2f}x")
            report.add(f"  orchestrator CPU per experiment, max_concurrent {level}, pools on / off (s)",
                       f"{on[1] / count:.3f} / {off[1] / count:.3f}", "", "")
        # One figure for the goal: every burst of the run (the machine drifts within a run).
        cpus = sorted(c / count for c in [c for _, c in walls] + [r[k][1] for r in
                                                                 report.data["pool_throughput"].values()
                                                                 for k in ("pools", "no_pools")])
        report.data["pool_cpu_per_experiment_s"] = cpus
        report.add(f"orchestrator CPU per experiment, median of all {len(cpus)} bursts (s)",
                   f"{statistics.median(cpus):.3f} ({cpus[0]:.3f}-{cpus[-1]:.3f})", "", "")

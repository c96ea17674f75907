"""The intake's batches under SIGKILL: a burst of 10,000 requests queued in a
real JetStream, drained by an intake that is killed five times mid-drain. Every
request ends recorded exactly once: none lost (a batch is acked only after
its transaction commits) and none twice (a redelivered batch finds its
requests duplicates)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter

import nats
import pytest
from sqlalchemy import text

from helpers import ROOT, Lines, request_body, wait_until

BURST = 10_000
KILLS = 5


async def _queue(url: str, bodies: list[bytes]) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for start in range(0, len(bodies), 500):
        await asyncio.gather(*(js.publish("genesis.experiment.request.test-instance", body, timeout=30)
                               for body in bodies[start:start + 500]))
    await nc.drain()


async def _pending(url: str) -> tuple[int, int]:
    nc = await nats.connect(url)
    info = await nc.jetstream().consumer_info("GENESIS_REQUESTS", "genesis-intake")
    await nc.drain()
    return info.num_pending, info.num_ack_pending


def _intake(config) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "messaging" / "intake_only.py"), str(config)],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert Lines(proc.stdout).next(timeout_s=60).strip() == "ready"
    return proc


@pytest.fixture
def burst_config(tmp_path, sample_repo, nats_server, docker_client):
    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(tmp_path), "repos": {"monorepo": {"path": str(sample_repo)}},
        "installation": f"burst-{uuid.uuid4().hex[:8]}", "nats": {"url": nats_server.url, "ack_wait_s": 5}}))
    return config


def test_an_intake_killed_five_times_mid_burst_records_every_request_once(burst_config, nats_server):
    from orchestrator.messaging.connection import connect, ensure_streams
    from orchestrator.settings import load_settings
    from orchestrator.store.db import make_engine, upgrade
    from orchestrator.store.repository import Store

    settings = load_settings(burst_config)
    engine = make_engine(settings.db_url)
    upgrade(engine)
    store = Store(engine)

    async def streams() -> None:
        nc = await connect(settings.nats)
        await ensure_streams(nc.jetstream(), settings.nats)
        await nc.drain()

    asyncio.run(streams())
    bodies = [request_body() for _ in range(BURST)]
    asyncio.run(_queue(nats_server.url, [json.dumps(b).encode() for b in bodies]))  # all queued first
    rng = random.Random(20261130)
    recorded = []
    for _ in range(KILLS):
        proc = _intake(burst_config)
        time.sleep(rng.uniform(0.25, 0.5))  # mid-drain: a batch being recorded, committed or acked
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recorded.append(store.count())
    assert 0 < recorded[-1] < BURST, f"the kills did not come mid-drain: {recorded}"
    proc = _intake(burst_config)
    try:
        wait_until(lambda: store.count() == BURST and asyncio.run(_pending(nats_server.url)) == (0, 0),
                   timeout_s=120, what="every request recorded and acked")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT experiment_id, COUNT(*) FROM sandbox_history "
                                        "WHERE action = 'submitted' GROUP BY experiment_id")).all())
    times = Counter(counts.get(body["experiment_id"], 0) for body in bodies)
    assert times == {1: BURST}, f"experiments by times submitted: {times} (recorded at each kill: {recorded})"
    engine.dispose()

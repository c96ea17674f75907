"""The daily report reaches a real nats-server (JetStream) through the outbox
relay exactly once: the scheduler enqueues it once per UTC day whoever runs
it, and a relay that publishes it again (a crash between publishing and
marking the row) is de-duplicated by its Nats-Msg-Id. No Docker needed."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import nats
from sqlalchemy import update

from orchestrator.controller.jobs import Scheduler, reporting_job
from orchestrator.domain.subjects import DAILY_METRICS
from orchestrator.messaging.connection import ensure_streams
from orchestrator.messaging.relay import OutboxRelay
from orchestrator.settings import NatsSettings
from orchestrator.store.db import make_engine, upgrade
from orchestrator.store.repository import Store
from orchestrator.store.tables import OutboxRow

NOW = datetime(2026, 11, 29, 0, 0, 30, tzinfo=timezone.utc)


def test_the_daily_report_is_published_once(tmp_path, nats_server):
    engine = make_engine(f"sqlite:///{tmp_path / 'genesis.db'}")
    upgrade(engine)
    store = Store(engine)
    settings = NatsSettings(url=nats_server.url)

    async def scenario():
        for _ in range(2):  # two controllers (or a restart) on the same day: one row
            await Scheduler(Store(engine), [reporting_job(store)], clock=lambda: NOW).tick()
        [row] = store.outbox(unpublished_only=True)
        assert row["msg_id"] == "genesis-daily-2026-11-28"
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await ensure_streams(js, settings)
        seen = []

        async def received(msg):
            seen.append(msg)
        await nc.subscribe(DAILY_METRICS, cb=received)
        relay = OutboxRelay(nc, js, store)
        assert await relay.run_once() == 1
        with engine.begin() as conn:  # as if the relay died before marking the row published
            conn.execute(update(OutboxRow).values(published_at=None))
        assert await relay.run_once() == 1
        assert relay.duplicates == 1 and not store.outbox(unpublished_only=True)
        info = await js.stream_info(settings.outcome_stream, subjects_filter=">")
        stored = await js.get_last_msg(settings.outcome_stream, DAILY_METRICS)
        await nc.flush()
        await nc.close()
        return info, stored, seen

    info, stored, seen = asyncio.run(scenario())
    assert (info.state.subjects or {}).get(DAILY_METRICS) == 1  # the stream kept it once
    assert stored.headers["Nats-Msg-Id"] == "genesis-daily-2026-11-28"
    body = json.loads(stored.data)
    assert body["period"]["start"] == "2026-11-28T00:00:00+00:00" and body["total"] == 0
    # Core subscribers see every publish, the re-publish too: exactly once is what the stream keeps.
    assert seen and all(json.loads(m.data) == body for m in seen)
    engine.dispose()

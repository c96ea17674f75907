"""The outbox relay: publishes what the store decided, exactly once.

Durable rows (every subject the outcomes stream captures) go through
JetStream with ``Nats-Msg-Id`` = the row's ``msg_id``: if Genesis dies after
publishing and before marking the row, the re-publish is dropped by the
stream's de-duplication window. Reply subjects (a client's inbox) use core
NATS, at least once. Only the leading controller runs the relay.
"""

from __future__ import annotations

import asyncio
import json
import logging

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext

from orchestrator.store.repository import Store
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
BATCH = 200


class OutboxRelay:
    def __init__(self, nc: Client, js: JetStreamContext, store: Store) -> None:
        self._nc, self._js, self._store = nc, js, store
        self.published = 0
        self.duplicates = 0  # re-publishes the stream dropped (a crash between publish and mark)

    async def run_once(self) -> int:
        rows = await asyncio.to_thread(self._store.outbox, unpublished_only=True, limit=BATCH)
        done, failed = [], []
        for row in rows:
            data = json.dumps(row["payload"]).encode()
            try:
                if row["durable"]:
                    ack = await self._js.publish(row["subject"], data, timeout=5,
                                                 headers={**row["headers"], "Nats-Msg-Id": row["msg_id"]})
                    self.duplicates += int(bool(ack.duplicate))
                else:
                    await self._nc.publish(row["subject"], data, headers=row["headers"] or None)
            except nats.errors.Error as exc:
                log.warning("outbox publish failed", extra={"subject": row["subject"], "error": type(exc).__name__,
                                                            "experiment_id": row["experiment_id"]})
                failed.append(row["id"])
                metrics.NATS_MESSAGES.labels(direction="out", family=_family(row), result="failed").inc()
                break  # the connection is likely down: keep order, retry the rest next time
            done.append(row["id"])
            metrics.NATS_MESSAGES.labels(direction="out", family=_family(row), result="published").inc()
            if _family(row) == "genesis":
                log.info("metrics_reported", extra={"experiment_id": row["experiment_id"], "subject": row["subject"],
                                                    "trace_id": row["payload"].get("trace_id")})
        if any(not r["durable"] for r in rows if r["id"] in done):
            await self._nc.flush(timeout=5)
        await asyncio.to_thread(self._store.mark_published, done)
        await asyncio.to_thread(self._store.mark_attempted, failed)
        self.published += len(done)
        return len(done)


def _family(row: dict) -> str:
    """The bounded label for a message: the last part of its msg_id (genesis, centralcloud, agent, ...),
    or ``daily`` for the daily report (``genesis-daily-<day>``)."""
    if row["msg_id"].startswith("genesis-daily-"):
        return "daily"
    family = row["msg_id"].rsplit(":", 1)[-1]
    return family if family in ("genesis", "centralcloud", "agent", "instance", "reply", "conflict",
                                "conflict-reply") else "other"

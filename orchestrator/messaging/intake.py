"""JetStream intake: pull requests, record them, then ack.

A message is acked only after the request is recorded (accepted, duplicate,
or rejected with its code), so a crash before that redelivers it and
idempotency by ``experiment_id`` makes the redelivery harmless. Each fetch
(up to ``nats.fetch_batch`` messages) is recorded as one batch, its valid
requests in one transaction, and acked once that committed. When the
store itself fails, the batch's messages are nak'ed with a growing delay; on
a message's last allowed delivery it is copied to the dead-letter stream and
terminated.
Bodies that are not even UTF-8 JSON are recorded as rejections *and* copied
to the dead-letter stream for inspection.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from orchestrator.domain.subjects import DLQ, REPLY_HEADER, instance_from_subject
from orchestrator.errors import GenesisError
from orchestrator.pipeline.intake import Intake, Received, Recorded
from orchestrator.settings import NatsSettings
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
UNDECODABLE = ("invalid_json",)


@dataclass
class IntakeStats:
    received: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retried: int = 0
    dead_lettered: int = 0


class NatsIntake:
    def __init__(self, js: JetStreamContext, intake: Intake, settings: NatsSettings) -> None:
        self._js = js
        self._intake = intake
        self._settings = settings
        self._stopping = asyncio.Event()
        self.stats = IntakeStats()

    async def run(self) -> None:
        sub = await self._js.pull_subscribe_bind(self._settings.consumer, self._settings.request_stream)
        while not self._stopping.is_set():
            try:
                messages = await sub.fetch(self._settings.fetch_batch, timeout=1.0)
            except asyncio.TimeoutError:  # nothing waiting; nats-py raises its own or asyncio's
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.NoServersError):
                raise
            except nats.errors.Error as exc:  # reconnecting: wait and fetch again
                log.warning("fetch failed", extra={"error": type(exc).__name__})
                await asyncio.sleep(1.0)
                continue
            await self.handle(messages)

    def shutdown(self) -> None:
        self._stopping.set()

    async def handle(self, messages: list[Msg]) -> list[Recorded]:
        """Record one fetch's requests, then ack each; never raises. Returns what was
        recorded (nothing when the store failed and the messages were nak'ed)."""
        self.stats.received += len(messages)
        batch = [Received(m.data, traceparent=(m.headers or {}).get("traceparent"), actor="nats",
                          reply_to=(m.headers or {}).get(REPLY_HEADER),
                          # "" when the subject's instance token is not a valid one: nothing matches it.
                          subject_instance=instance_from_subject(m.subject) or "") for m in messages]
        try:
            recorded = await asyncio.to_thread(self._intake.submit_many, batch)
        except GenesisError as exc:  # the store is down: not the requests' fault
            for message in messages:
                await self._retry_later(message, exc)
            return []
        for message, result in zip(messages, recorded):
            if result.error is None:
                outcome = "accepted" if result.created else "duplicate"
                if result.created:
                    self.stats.accepted += 1
                else:
                    self.stats.duplicates += 1
            else:
                outcome = "rejected"
                self.stats.rejected += 1
                if result.error.code in UNDECODABLE:
                    await self._dead_letter(message, f"{result.error.code}: recorded as {result.experiment_id}")
            await message.ack()
            metrics.NATS_MESSAGES.labels(direction="in", family="request", result=outcome).inc()
        return recorded

    async def _retry_later(self, message: Msg, exc: GenesisError) -> None:
        delivered = message.metadata.num_delivered if message.metadata else 1
        if delivered >= self._settings.max_deliver:
            await self._dead_letter(message, f"{exc.code}: {exc}")
            await message.term()
            return
        delays = self._settings.nak_backoff_s or [1.0]
        delay = delays[min(delivered - 1, len(delays) - 1)]
        self.stats.retried += 1
        metrics.NATS_MESSAGES.labels(direction="in", family="request", result="retried").inc()
        log.warning("request not recorded; redelivery later",
                    extra={"error": str(exc), "delivered": delivered, "retry_in_s": delay})
        await message.nak(delay=delay)

    async def _dead_letter(self, message: Msg, why: str) -> None:
        self.stats.dead_lettered += 1
        metrics.NATS_MESSAGES.labels(direction="out", family="dlq", result="published").inc()
        headers = {"Genesis-Original-Subject": message.subject, "Genesis-Error": why[:500]}
        try:
            await self._js.publish(DLQ, message.data, headers=headers, timeout=5)
        except nats.errors.Error as exc:
            log.error("dead-letter publish failed", extra={"error": type(exc).__name__})

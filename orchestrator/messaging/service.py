"""Genesis on NATS: one supervised connection, and on it the request intake
(on every replica: the work queue hands each request to one of them), the
outbox relay (the outcomes and the daily report) and the health report
(only on the leading controller).

The first connection is retried with exponential backoff (tenacity), later
ones by the client's own reconnect; the controller keeps working while NATS
is away, and the outbox holds outcomes until they can be published. A
shutdown ends the wait between attempts at once, not an attempt under way
(``connect`` bounds that).
"""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.client import Client
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from orchestrator.errors import GenesisError

from orchestrator.messaging.connection import connect, ensure_streams, redact
from orchestrator.messaging.intake import NatsIntake
from orchestrator.messaging.relay import OutboxRelay
from orchestrator.messaging.reports import ReportPublisher

log = logging.getLogger(__name__)
PUBLISH_POLL_S = 0.2  # how soon an outcome leaves after it is decided
MAX_CONNECT_BACKOFF_S = 30.0  # waits from 1 s doubling: NATS coming back is tried at least twice a minute
CONNECT_ERRORS = (OSError, asyncio.TimeoutError, nats.errors.Error, GenesisError)


class NatsService:
    def __init__(self, app, controller) -> None:
        self._app = app
        self._controller = controller
        self._settings = app.settings.nats
        self._stopping = asyncio.Event()
        self.intake: NatsIntake | None = None
        self.relay: OutboxRelay | None = None
        self.connected = asyncio.Event()

    def shutdown(self) -> None:
        self._stopping.set()
        if self.intake is not None:
            self.intake.shutdown()

    async def run(self) -> None:
        while not self._stopping.is_set():
            nc = await self._connect()
            if nc is None:
                return
            try:
                await self._serve(nc)
            except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
                log.warning("nats session ended; reconnecting", extra={"error": type(exc).__name__})
                await self._sleep(1.0)
            finally:
                self.connected.clear()
                await _close(nc)

    async def _connect(self) -> Client | None:
        """A connection, retried from 1 s doubling to MAX_CONNECT_BACKOFF_S; None once shut down."""
        servers = ", ".join(redact(s) for s in self._settings.servers())

        def warn(state: RetryCallState) -> None:
            log.warning("nats unreachable; retrying", extra={
                "servers": servers, "error": str(state.outcome.exception())[:300],
                "retry_in_s": state.next_action.sleep})

        retrying = AsyncRetrying(retry=retry_if_exception_type(CONNECT_ERRORS),
                                 wait=wait_exponential(multiplier=1.0, max=MAX_CONNECT_BACKOFF_S),
                                 sleep=self._sleep, before_sleep=warn, reraise=True)
        async for attempt in retrying:
            if self._stopping.is_set():  # woken from the wait by shutdown(): no further attempt
                return None
            with attempt:
                return await connect(self._settings, name=f"genesis-{self._controller.actor}")
        return None  # not reached: with no stop condition, tenacity ends in a return or a re-raise

    async def _serve(self, nc) -> None:
        js = nc.jetstream()
        await ensure_streams(js, self._settings)
        self.intake = NatsIntake(js, self._app.intake, self._settings)
        self.relay = OutboxRelay(nc, js, self._app.store)
        reports = ReportPublisher(nc, self._app.store, self._app.runtime,
                                  health_interval_s=self._settings.health_interval_s)
        self.connected.set()
        log.info("nats ready", extra={"streams": [self._settings.request_stream, self._settings.outcome_stream]})
        tasks = [asyncio.create_task(self.intake.run()), asyncio.create_task(self._publish(self.relay, reports)),
                 asyncio.create_task(self._stopping.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish(self, relay: OutboxRelay, reports: ReportPublisher) -> None:
        while not self._stopping.is_set():
            if self._controller.leading:
                try:
                    while await relay.run_once():
                        pass
                    await reports.tick()
                except nats.errors.Error as exc:
                    log.warning("publishing paused", extra={"error": type(exc).__name__})
                except Exception:  # noqa: BLE001 - e.g. the database is down: try again later
                    log.exception("outbox relay pass failed")
            await self._sleep(PUBLISH_POLL_S)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass


async def _close(nc) -> None:
    """Flush what was published and close. Not ``drain()``: a pull subscription
    never finishes draining, and every message is acked as it is handled."""
    try:
        if nc.is_connected:
            await nc.flush(timeout=2)
    except Exception:  # noqa: BLE001 - a broken connection has nothing to flush
        pass
    try:
        await nc.close()
    except Exception:  # noqa: BLE001
        pass

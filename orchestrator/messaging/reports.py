"""Publishes ``system.health.genesis`` and ``system.metrics.genesis`` on their
intervals (while this process leads), from the store and the runtime."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

from nats.aio.client import Client

from orchestrator import __version__
from orchestrator.domain import reports
from orchestrator.domain.subjects import DAILY_METRICS, HEALTH
from orchestrator.errors import GenesisError
from orchestrator.runtimes.base import Runtime
from orchestrator.store.repository import Store, utcnow

log = logging.getLogger(__name__)


class ReportPublisher:
    def __init__(self, nc: Client, store: Store, runtime: Runtime, *, health_interval_s: float,
                 report_interval_s: float) -> None:
        self._nc, self._store, self._runtime = nc, store, runtime
        self._intervals = {HEALTH: health_interval_s, DAILY_METRICS: report_interval_s}
        self._last: dict[str, float] = {HEALTH: float("-inf"), DAILY_METRICS: time.monotonic()}

    async def health(self) -> dict:
        now = utcnow()
        counts = await asyncio.to_thread(self._store.phase_counts)
        rows = await asyncio.to_thread(self._store.finished_since, now - timedelta(days=30))
        try:
            await self._runtime.ping()
            reachable = True
        except GenesisError:
            reachable = False
        disk = None
        if reachable and self._runtime.capabilities.disk_usage:
            disk = await self._runtime.disk_usage()
        return reports.health_report(
            active=sum(counts.get(p, 0) for p in ("Building", "Running", "Collecting")),
            queued=counts.get("Pending", 0), rows_30d=rows, disk_bytes=disk, runtime_reachable=reachable,
            version=__version__, now=now)

    async def daily(self) -> dict:
        end = utcnow()
        start = end - timedelta(seconds=self._intervals[DAILY_METRICS])
        rows = await asyncio.to_thread(self._store.finished_since, start)
        return reports.daily_report(rows, start=start, end=end, version=__version__)

    async def tick(self) -> list[str]:
        """Publish whatever is due; returns the subjects published."""
        sent = []
        for subject, build in ((HEALTH, self.health), (DAILY_METRICS, self.daily)):
            if time.monotonic() - self._last[subject] >= self._intervals[subject]:
                await self._nc.publish(subject, json.dumps(await build()).encode())
                self._last[subject] = time.monotonic()
                sent.append(subject)
        if sent:
            await self._nc.flush(timeout=5)
        return sent

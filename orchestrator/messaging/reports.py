"""Publishes ``system.health.genesis`` every ``health_interval_s`` (while this
process leads), from the store and the runtime.

A live figure on an interval, over core NATS: a restart that resets the
timer at worst sends one early. The daily ``system.metrics.genesis`` report
is not here: it is a scheduled job on the wall clock, sent through the
outbox (:mod:`orchestrator.controller.jobs`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta

from nats.aio.client import Client

from orchestrator import __version__
from orchestrator.domain import reports
from orchestrator.domain.subjects import HEALTH
from orchestrator.errors import GenesisError
from orchestrator.runtimes.base import Runtime
from orchestrator.store.repository import Store, utcnow

log = logging.getLogger(__name__)


class ReportPublisher:
    def __init__(self, nc: Client, store: Store, runtime: Runtime, *, health_interval_s: float) -> None:
        self._nc, self._store, self._runtime = nc, store, runtime
        self._interval = health_interval_s
        self._last = float("-inf")

    async def health(self) -> dict:
        now = utcnow()
        counts = await asyncio.to_thread(self._store.phase_counts)
        rows = await asyncio.to_thread(self._store.finished_between, now - timedelta(days=30))
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

    async def tick(self) -> list[str]:
        """Publish the health report if it is due; returns the subjects published."""
        if time.monotonic() - self._last < self._interval:
            return []
        await self._nc.publish(HEALTH, json.dumps(await self.health()).encode())
        self._last = time.monotonic()
        await self._nc.flush(timeout=5)
        return [HEALTH]

"""Live changes for every watcher from one poll.

One task polls the store for experiments updated since its cursor, every
``api.watch_interval_s`` while anyone watches, and hands each change to every
watcher's queue; each watcher keeps those its selectors (and its role)
match. A hundred watchers cost one query per interval, not a hundred.

Writers stamp ``updated_at`` with their own clocks, and a transaction may
commit after a later-stamped one: each poll looks back ``LOOKBACK_S`` behind
the newest stamp it saw and drops what it already sent at the same stamp,
so a change that committed late is still delivered, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from orchestrator.domain.records import ExperimentView

log = logging.getLogger(__name__)

LOOKBACK_S = 10.0
QUEUE_SIZE = 1000  # a watcher this far behind is dropped (it reconnects), never slows the others


class Watchers:
    def __init__(self, changed_since: Callable, *, interval_s: float) -> None:
        """``changed_since(since)``: a coroutine, experiments updated at or after ``since``."""
        self._changed_since = changed_since
        self._interval_s = interval_s
        self._queues: set[asyncio.Queue] = set()
        self._task: asyncio.Task | None = None
        self._sent: dict[str, datetime] = {}
        self._cursor = self._floor = datetime.now(timezone.utc)

    @property
    def count(self) -> int:
        return len(self._queues)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        if not self._queues:  # a new first watcher sees changes from now on, not the look-back's
            self._cursor = self._floor = datetime.now(timezone.utc)
            self._sent.clear()
        self._queues.add(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="api-watch")
        return queue

    def active(self, queue: asyncio.Queue) -> bool:
        return queue in self._queues

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._queues.discard(queue)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _poll(self) -> None:
        while self._queues:
            try:
                views = await self._changed_since(self._cursor - timedelta(seconds=LOOKBACK_S))
            except Exception as exc:  # noqa: BLE001 - a database blip must not end every watch
                log.warning("watch poll failed", extra={"error": str(exc)})
                views = []
            self._publish(views)
            await asyncio.sleep(self._interval_s)

    def _publish(self, views: list[ExperimentView]) -> None:
        for view in views:
            if self._sent.get(view.id) == view.updated_at:
                continue
            if view.updated_at < self._floor:  # before anyone watched: not news
                self._sent[view.id] = view.updated_at
                continue
            kind = "ADDED" if view.id not in self._sent and view.updated_at == view.created_at else "MODIFIED"
            self._sent[view.id] = view.updated_at
            self._cursor = max(self._cursor, view.updated_at)
            for queue in list(self._queues):
                try:
                    queue.put_nowait((kind, view))
                except asyncio.QueueFull:
                    self._queues.discard(queue)  # its stream ends once it drained the queue
        horizon = self._cursor - timedelta(seconds=LOOKBACK_S)
        self._sent = {k: v for k, v in self._sent.items() if v >= horizon}

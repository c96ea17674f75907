"""The sequential worker behind ``genesis serve``: one experiment at a time.

Each pass: recover experiments a previous worker left mid-flight, remove
preserved sandboxes whose TTL expired, then run the highest-priority
Pending experiment to its end. A bad record fails that experiment only;
the loop itself never dies of one and never spins (it sleeps when idle).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from orchestrator.domain.models import Phase
from orchestrator.errors import GenesisError
from orchestrator.pipeline import lifecycle
from orchestrator.pipeline.execute import Executor
from orchestrator.store.repository import utcnow

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # an interrupted experiment is retried this many times in all


@dataclass
class Worker:
    executor: Executor
    poll_s: float = 1.0
    _stopping: bool = False

    @property
    def store(self):
        return self.executor.store

    async def run(self, *, once: bool = False) -> int:
        """Work until :meth:`shutdown` (or, with ``once``, until the queue is empty)."""
        await self.recover()
        done = 0
        while not self._stopping:
            await self.sweep_expired()
            pending = self.store.next_pending()
            if pending is None:
                if once:
                    break
                await asyncio.sleep(self.poll_s)
                continue
            await self.run_one(pending.id)
            done += 1
        return done

    def shutdown(self) -> None:
        self._stopping = True

    async def __aenter__(self) -> "Worker":
        return self

    async def __aexit__(self, *exc) -> None:
        self.shutdown()

    async def run_one(self, experiment_id: str) -> None:
        try:
            await self.executor.run(experiment_id)
        except Exception as exc:  # the loop must outlive any one experiment
            log.exception("experiment crashed the executor", extra={"experiment_id": experiment_id})
            await self._remove_sandboxes(experiment_id, reason=f"executor error: {exc}")
            view = self.store.get(experiment_id)
            code = exc.code if isinstance(exc, GenesisError) else "runtime_error"
            self.executor.fail(view, code, f"{type(exc).__name__}: {exc}")

    async def recover(self) -> None:
        """Experiments left in flight by a dead worker are retried or failed."""
        for phase in (Phase.BUILDING, Phase.RUNNING, Phase.COLLECTING):
            for view in self.store.list(phase=phase):
                await self._remove_sandboxes(view.id, reason="worker restarted mid-run")
                if view.attempt >= MAX_ATTEMPTS:
                    self.executor.fail(view, "sandbox_lost", f"interrupted {view.attempt} times")
                else:
                    self.store.transition(view.id, Phase.PENDING, reason="Requeued", actor=self.executor.actor,
                                          message=f"worker restarted during attempt {view.attempt}")

    async def sweep_expired(self) -> None:
        now = utcnow()
        for view in self.store.expired_preserved(now):
            await self._remove_sandboxes(view.id, reason="preservation TTL expired")
            self.store.set_preserved_until(view.id, None)

    async def _remove_sandboxes(self, experiment_id: str, *, reason: str) -> None:
        await lifecycle.remove_sandboxes(self.executor.runtime, self.store, experiment_id,
                                         actor=self.executor.actor, reason=reason)

"""The scheduled jobs of ``genesis serve`` (SPEC §11), run by the leading
controller on the wall clock:

* ``cleanup`` every 6 h: Genesis's images past ``image_disk_budget``
  (:meth:`Controller.cleanup_images`; expired preserved sandboxes and
  orphans are the reconcile pass's own work);
* ``analysis`` daily: trends by type and risk over 7 and 30 days
  (:func:`orchestrator.domain.analysis.trends`), stored as a report;
* ``reporting`` daily: the day's ``system.metrics.genesis`` report, stored
  and enqueued into the outbox with ``Nats-Msg-Id = genesis-daily-<day>``.

Every tick (a minute) the scheduler asks :func:`orchestrator.domain.schedule.due`
which period each job owes, from its stored last period and the injected
clock, runs it, and records it with a compare-and-set (the store writes the
run's report and message in the same transaction). A job that raises is
recorded as failed, its period stays due and is retried at the next tick.

Not here: leadership (the controller's lease; this only asks ``leading()``),
publishing (the outbox relay), the health report (its own interval).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Awaitable, Callable

from orchestrator import __version__
from orchestrator.domain import reports
from orchestrator.domain.analysis import LOOKBACK, trends
from orchestrator.domain.schedule import DAY, CatchUp, JobOutput, JobSpec, Message, due, period_bounds
from orchestrator.domain.subjects import DAILY_METRICS
from orchestrator.fencing import FENCE, Term
from orchestrator.store.aio import AsyncStore, as_async
from orchestrator.store.repository import Store, utcnow

log = logging.getLogger(__name__)
JOB_TICK_S = 60.0  # periods are hours long: a minute late is on time, and a failed run waits a minute

CLEANUP = JobSpec("cleanup", timedelta(hours=6))
ANALYSIS = JobSpec("analysis", DAY)
# Each missed day is its own message; a month back matches the outcomes stream's max age.
REPORTING = JobSpec("reporting", DAY, catch_up=CatchUp.EACH, max_backlog=30)

RunFn = Callable[[str, datetime, datetime], Awaitable[JobOutput]]  # (period, its start, its end)


@dataclass(frozen=True)
class Job:
    spec: JobSpec
    run: RunFn


@dataclass(frozen=True)
class JobRun:
    """One run: ``succeeded`` (period recorded), ``failed`` (still due), or
    ``lost`` (another controller recorded the period first; its output was dropped)."""
    job: str
    period: str
    status: str
    error: str | None = None


def daily_msg_id(period: str) -> str:
    """The daily report's Nats-Msg-Id: one message per day, whoever enqueues it."""
    return f"genesis-daily-{period}"


def cleanup_job(cleanup: Callable[[], Awaitable[list[str]]]) -> Job:
    async def run(period: str, start: datetime, end: datetime) -> JobOutput:
        removed = await cleanup()
        log.info("cleanup done", extra={"period": period, "removed": len(removed)})
        return JobOutput()
    return Job(CLEANUP, run)


def analysis_job(store: Store | AsyncStore) -> Job:
    store = as_async(store)

    async def run(period: str, start: datetime, end: datetime) -> JobOutput:
        samples = await store.metrics_between(end - LOOKBACK, end)
        return JobOutput(report={"period": period, **trends(samples, end=end)})
    return Job(ANALYSIS, run)


def reporting_job(store: Store | AsyncStore) -> Job:
    store = as_async(store)

    async def run(period: str, start: datetime, end: datetime) -> JobOutput:
        rows = await store.finished_between(start, end)
        body = reports.daily_report(rows, start=start, end=end, version=__version__)
        return JobOutput(report=body, message=Message(DAILY_METRICS, daily_msg_id(period), body))
    return Job(REPORTING, run)


class Scheduler:
    def __init__(self, store: Store | AsyncStore, jobs: list[Job], *, leading: Callable[[], bool] = lambda: True,
                 term: Callable[[], Term | None] = lambda: None, clock: Callable[[], datetime] = utcnow,
                 tick_s: float = JOB_TICK_S) -> None:
        self.store = as_async(store)
        self.jobs = jobs
        self._leading = leading
        self._term = term  # the controller's current term: the jobs' writes are fenced by it
        self._clock = clock
        self.tick_s = tick_s

    @classmethod
    def for_controller(cls, controller, **kwargs) -> "Scheduler":
        """The three jobs of SPEC §11, run while ``controller`` leads."""
        jobs = [cleanup_job(controller.cleanup_images), analysis_job(controller.store),
                reporting_job(controller.store)]
        return cls(controller.store, jobs, leading=lambda: controller.leading,
                   term=lambda: controller.leader.term if controller.leader else None, **kwargs)

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick until ``stopping`` is set; a failed tick (the database away) is logged and retried."""
        while not stopping.is_set():
            if self._leading():
                FENCE.set(self._term())
                try:
                    await self.tick()
                except Exception as exc:  # noqa: BLE001 - the schedule must never stop for good
                    log.warning("scheduled jobs tick failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            try:
                await asyncio.wait_for(stopping.wait(), timeout=self.tick_s)
            except asyncio.TimeoutError:
                pass

    async def tick(self) -> list[JobRun]:
        """Run every period now due, each job's oldest first; returns the runs."""
        runs: list[JobRun] = []
        for job in self.jobs:
            for _ in range(job.spec.max_backlog):  # bounded: a clock gone wild never loops forever
                if not self._leading():
                    return runs
                state = await self.store.job_state(job.spec.name)
                period = due(job.spec, state.last_period, self._clock())
                if period is None:
                    break
                run = await self._run(job, previous=state.last_period, period=period)
                runs.append(run)
                if run.status != "succeeded":
                    break
        return runs

    async def _run(self, job: Job, *, previous: str | None, period: str) -> JobRun:
        name = job.spec.name
        start, end = period_bounds(period, job.spec.period)
        try:
            output = await job.run(period, start, end)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded and retried
            error = f"{type(exc).__name__}: {exc}"
            log.warning("scheduled job failed; retried next tick", extra={"job": name, "period": period,
                                                                          "error": error})
            await self.store.fail_job(name, previous=previous, error=error, at=self._clock())
            return JobRun(name, period, "failed", error)
        won = await self.store.complete_job(name, previous=previous, period=period,
                                      at=self._clock(), output=output)
        if not won:
            log.info("scheduled job already recorded by another controller", extra={"job": name, "period": period})
            return JobRun(name, period, "lost")
        log.info("scheduled job done", extra={"job": name, "period": period})
        return JobRun(name, period, "succeeded")

"""When a scheduled job is due (SPEC §11), as pure functions of the wall clock.

A job runs once per *period*: a slice of UTC time aligned to midnight (a
day, 6 hours, ...), named by its start, ``2026-11-28`` for a day and
``2026-11-28T06`` for the 6 hours from 06:00. A period is due once it has
ended, so at 00:05 on 29 November the daily jobs run for ``2026-11-28``.
The last period a job completed is stored (``scheduled_jobs``); what is due
follows from it and ``now`` alone, so a restart, a deploy or a new leader
neither skips a period nor repeats one. No timer is ever reset.

After an outage longer than a period, a job either runs only the latest
period that ended (:attr:`CatchUp.LATEST`: a cleanup, a trend analysis,
whose latest run subsumes the missed ones) or every missed period in order
(:attr:`CatchUp.EACH`: a daily report, each day its own message), up to
``max_backlog`` periods back; older ones are skipped, on purpose: a report
of a day a month ago is no longer news.

Not here: running the jobs, storing their runs (``orchestrator.controller.jobs``,
``orchestrator.store.jobs``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

DAY = timedelta(days=1)


class CatchUp(str, enum.Enum):
    LATEST = "latest"  # only the latest period that ended
    EACH = "each"  # every missed period, oldest first


@dataclass(frozen=True)
class JobSpec:
    name: str
    period: timedelta  # divides a day, so periods align to UTC midnight
    catch_up: CatchUp = CatchUp.LATEST
    max_backlog: int = 30  # with EACH: the most periods run after an outage

    def __post_init__(self) -> None:
        if self.period <= timedelta(0) or DAY % self.period or self.period % timedelta(hours=1):
            raise ValueError(f"job {self.name}: a period must be whole hours that divide a day, "
                             f"not {self.period}")
        if self.max_backlog < 1:
            raise ValueError(f"job {self.name}: max_backlog must be at least 1")


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError("naive datetime: the schedule runs on aware UTC time")
    return now.astimezone(timezone.utc)


def period_start(moment: datetime, period: timedelta) -> datetime:
    """The start of the period ``moment`` falls in."""
    moment = _utc(moment)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + ((moment - midnight) // period) * period


def period_id(start: datetime, period: timedelta) -> str:
    """``2026-11-28`` for a daily period, ``2026-11-28T06`` for a shorter one."""
    start = _utc(start)
    return start.strftime("%Y-%m-%d") if period == DAY else start.strftime("%Y-%m-%dT%H")


def parse_period(text: str) -> datetime:
    """The start of the period ``text`` names (either form); ValueError if it names none."""
    fmt = "%Y-%m-%dT%H" if "T" in text else "%Y-%m-%d"
    return datetime.strptime(text, fmt).replace(tzinfo=timezone.utc)


def period_bounds(text: str, period: timedelta) -> tuple[datetime, datetime]:
    start = parse_period(text)
    return start, start + period


def latest_ended(now: datetime, period: timedelta) -> datetime:
    """The start of the latest period that has ended by ``now``."""
    return period_start(now, period) - period


def due(job: JobSpec, last_period: str | None, now: datetime) -> str | None:
    """The period ``job`` should run now, or None when it is up to date.

    ``last_period`` is the last one it completed (None: never, or not
    readable any more, e.g. written under another period length): then
    the latest period that ended is due, never a backfill of history.
    A ``last_period`` ahead of ``now`` (another controller's clock ran
    ahead) makes nothing due rather than a period run twice.
    """
    latest = latest_ended(now, job.period)
    try:
        last = period_start(parse_period(last_period), job.period) if last_period else None
    except ValueError:
        last = None
    if last is None:
        return period_id(latest, job.period)
    if last >= latest:
        return None
    if job.catch_up is CatchUp.LATEST:
        return period_id(latest, job.period)
    oldest = latest - (job.max_backlog - 1) * job.period
    return period_id(max(last + job.period, oldest), job.period)


@dataclass(frozen=True)
class JobState:
    """A job's stored last run: the last period completed, and the latest attempt."""
    name: str
    last_period: str | None = None
    last_run_at: datetime | None = None
    last_status: str | None = None  # "succeeded" | "failed"
    last_error: str | None = None


@dataclass(frozen=True)
class Message:
    """An outbox message; ``msg_id`` is its Nats-Msg-Id (JetStream de-duplicates on it)."""
    subject: str
    msg_id: str
    payload: dict


@dataclass(frozen=True)
class JobOutput:
    """What a run leaves to be written with its period's mark, in one transaction:
    a controller that loses the race to mark the period writes neither."""
    report: dict | None = None  # a row of ``reports``: kind = the job's name, the period
    message: Message | None = None


@dataclass(frozen=True)
class Report:
    id: int
    kind: str
    period: str
    created_at: datetime
    body: dict

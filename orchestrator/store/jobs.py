"""Scheduled jobs in the store (SPEC §11): each job's last completed period,
the reports jobs compute, and the rows they read.

Marking a period done is a compare-and-set on the period read before the run
(``last_period`` still the previous value), in the same transaction as what
the run produced (its report row, its outbox message). Two controllers that
both ran a period (a leader change mid-run) cannot both record it: the loser's
transaction writes nothing, so a report is stored and enqueued once.

Not here: when a job is due (:mod:`orchestrator.domain.schedule`) or running
it (:mod:`orchestrator.controller.jobs`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.domain.analysis import MetricsSample
from orchestrator.domain.models import Phase
from orchestrator.domain.reports import FinishedRow
from orchestrator.domain.schedule import JobOutput, JobState, Report
from orchestrator.store.base import StoreBase, _aware, _utc, transient, utcnow
from orchestrator.store.tables import ExperimentRow, MetricsRow, OutboxRow, ReportRow, ScheduledJobRow

ERROR_CHARS = 2000  # enough for an exception and its cause; the log has the rest


def _state(row: ScheduledJobRow) -> JobState:
    return JobState(name=row.name, last_period=row.last_period, last_run_at=_aware(row.last_run_at),
                    last_status=row.last_status, last_error=row.last_error)


def _report(row: ReportRow) -> Report:
    return Report(id=row.id, kind=row.kind, period=row.period, created_at=_aware(row.created_at), body=row.body)


class JobsMixin(StoreBase):
    def job_state(self, name: str) -> JobState:
        """The stored last run of ``name`` (an empty one before its first)."""
        with self._tx() as session:
            row = session.get(ScheduledJobRow, name)
            return _state(row) if row is not None else JobState(name=name)

    @transient
    def complete_job(self, name: str, *, previous: str | None, period: str, at: datetime,
                     output: JobOutput = JobOutput()) -> bool:
        """Mark ``period`` done if ``previous`` is still the last one, and write the
        run's output with it; False (nothing written) if another run got there first."""
        values = dict(last_period=period, last_run_at=_utc(at), last_status="succeeded", last_error=None)
        try:
            with self._tx() as session:
                if not self._compare_and_set(session, name, previous, values):
                    return False
                if output.report is not None and not session.scalar(
                        select(func.count()).select_from(ReportRow)
                        .where(ReportRow.kind == name, ReportRow.period == period)):
                    session.add(ReportRow(kind=name, period=period, created_at=_utc(at), body=output.report))
                message = output.message
                if message is not None and not session.scalar(
                        select(func.count()).select_from(OutboxRow).where(OutboxRow.msg_id == message.msg_id)):
                    session.add(OutboxRow(experiment_id="", msg_id=message.msg_id, subject=message.subject,
                                          payload=message.payload, headers={}, durable=True, created_at=utcnow(),
                                          attempts=0))
                return True
        except IntegrityError:
            return False  # another controller recorded this job's first run at the same moment

    @transient
    def fail_job(self, name: str, *, previous: str | None, error: str, at: datetime) -> bool:
        """Record a failed attempt; the period stays due (retried at the next tick)."""
        values = dict(last_run_at=_utc(at), last_status="failed", last_error=error[:ERROR_CHARS])
        try:
            with self._tx() as session:
                return self._compare_and_set(session, name, previous, values)
        except IntegrityError:
            return False

    @staticmethod
    def _compare_and_set(session: Session, name: str, previous: str | None, values: dict) -> bool:
        """Update the job's row where ``last_period`` is still ``previous`` (a new row
        for a job's first run); a concurrent writer's insert fails on the primary key."""
        same = (ScheduledJobRow.last_period.is_(None) if previous is None
                else ScheduledJobRow.last_period == previous)
        result = session.execute(update(ScheduledJobRow).where(ScheduledJobRow.name == name, same).values(**values)
                                 .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            return True
        if previous is None and session.get(ScheduledJobRow, name) is None:
            session.add(ScheduledJobRow(name=name, **{"last_period": None, **values}))
            session.flush()
            return True
        return False

    # -- reports -----------------------------------------------------------------------

    def reports(self, *, kind: str | None = None, period: str | None = None, limit: int = 200) -> list[Report]:
        """Stored reports, newest period first."""
        with self._tx() as session:
            query = select(ReportRow).order_by(ReportRow.period.desc(), ReportRow.kind).limit(limit)
            if kind is not None:
                query = query.where(ReportRow.kind == kind)
            if period is not None:
                query = query.where(ReportRow.period == period)
            return [_report(row) for row in session.scalars(query)]

    # -- what jobs read ----------------------------------------------------------------

    def metrics_between(self, start: datetime, end: datetime) -> list[MetricsSample]:
        """Each experiment run's figures recorded in [start, end), with its type and risk."""
        with self._tx() as session:
            rows = session.execute(
                select(ExperimentRow.experiment_type, ExperimentRow.risk_level, MetricsRow.recorded_at,
                       MetricsRow.success_rate, MetricsRow.regression, MetricsRow.llm_reduction)
                .join(ExperimentRow, MetricsRow.experiment_id == ExperimentRow.id)
                .where(MetricsRow.recorded_at >= _utc(start), MetricsRow.recorded_at < _utc(end)))
            return [MetricsSample(experiment_type=t, risk_level=r, recorded_at=_aware(at), success_rate=sr,
                                  regression=reg, llm_reduction=llm) for t, r, at, sr, reg, llm in rows]

    def finished_between(self, start: datetime, end: datetime | None = None) -> list[FinishedRow]:
        """Experiments finished in [start, end) (end None: until now), with their
        figures: the daily report's day, the health report's last 30 days."""
        with self._tx() as session:
            query = (select(ExperimentRow.experiment_type, ExperimentRow.risk_level, ExperimentRow.phase,
                            ExperimentRow.recommendation, MetricsRow.regression, MetricsRow.llm_reduction)
                     .outerjoin(MetricsRow, (MetricsRow.experiment_id == ExperimentRow.id)
                                & (MetricsRow.attempt == ExperimentRow.attempt))
                     .where(ExperimentRow.finished_at >= _utc(start)))
            if end is not None:
                query = query.where(ExperimentRow.finished_at < _utc(end))
            return [FinishedRow(experiment_type=t, risk_level=r, succeeded=p == Phase.SUCCEEDED.value,
                                recommendation=rec, regression=reg, llm_reduction=llm)
                    for t, r, p, rec, reg, llm in session.execute(query)]

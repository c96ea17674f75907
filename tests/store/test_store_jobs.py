"""Scheduled jobs on the wall clock (SPEC §11), on SQLite and PostgreSQL: the
stored last period, its compare-and-set, and the scheduler driven by an
injected clock (no sleeps): restarts, a leader change, a failing job, the
daily report's outbox message and the analysis report."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from orchestrator.controller.jobs import (
    ANALYSIS, REPORTING, Job, Scheduler, analysis_job, daily_msg_id, reporting_job,
)
from orchestrator.domain.schedule import DAY, JobOutput, JobSpec, Message
from orchestrator.domain.subjects import DAILY_METRICS
from orchestrator.store.repository import Store
from orchestrator.store.tables import ExperimentRow, MetricsRow, OutboxRow, ReportRow

UTC = timezone.utc
JOB = JobSpec("counting", DAY)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


class Clock:
    def __init__(self, now: str) -> None:
        self.now = at(now)

    def __call__(self) -> datetime:
        return self.now

    def set(self, text: str) -> None:
        self.now = at(text)


class Counting:
    """A job that records each period it ran and fails while told to."""

    def __init__(self, spec: JobSpec = JOB) -> None:
        self.ran: list[str] = []
        self.failing = False
        self.job = Job(spec, self.run)

    async def run(self, period: str, start: datetime, end: datetime) -> JobOutput:
        self.ran.append(period)
        if self.failing:
            raise RuntimeError("disk full")
        return JobOutput(report={"period": period, "start": start.isoformat(), "end": end.isoformat()})


def tick(scheduler: Scheduler):
    return asyncio.run(scheduler.tick())


def count(store, model, **where) -> int:
    with Session(store.engine) as session:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return session.scalar(query)


def add_experiment(store, *, finished: datetime, type_="decomposition", risk="low", phase="Succeeded",
                   recommendation="merge", sr=0.9, reg=0.0, llm=0.4) -> str:
    """A finished experiment and its metrics row, at a chosen time."""
    experiment_id = str(uuid.uuid4())
    with Session(store.engine) as session, session.begin():
        session.add(ExperimentRow(
            id=experiment_id, instance_id="i-1", experiment_type=type_, risk_level=risk, repo="monorepo",
            base_ref="main", body_sha256="0" * 64, phase=phase, conditions=[], recommendation=recommendation,
            priority=0, attempt=1, cancel_requested=False, created_at=finished, updated_at=finished,
            finished_at=finished))
        session.flush()
        if sr is not None:
            session.add(MetricsRow(experiment_id=experiment_id, attempt=1, success_rate=sr, regression=reg,
                                   llm_reduction=llm, runtime_ms=1000, test_count=10, failures=0, errors=0,
                                   skipped=0, custom={}, recommendation=recommendation, recorded_at=finished))
    return experiment_id


# -- the store's compare-and-set ---------------------------------------------------------


def test_marking_a_period_is_a_compare_and_set(store):
    assert store.job_state("counting").last_period is None
    assert store.complete_job("counting", previous=None, period="2026-11-27", at=at("2026-11-28T00:01"))
    assert not store.complete_job("counting", previous=None, period="2026-11-27", at=at("2026-11-28T00:01"),
                                  output=JobOutput(report={"x": 1}))
    assert store.complete_job("counting", previous="2026-11-27", period="2026-11-28", at=at("2026-11-29T00:01"),
                              output=JobOutput(report={"x": 2}))
    assert not store.complete_job("counting", previous="2026-11-27", period="2026-11-28",
                                  at=at("2026-11-29T00:02"), output=JobOutput(report={"x": 3}))
    state = store.job_state("counting")
    assert (state.last_period, state.last_status, state.last_run_at) == ("2026-11-28", "succeeded",
                                                                         at("2026-11-29T00:01"))
    assert [r.body for r in store.reports(kind="counting")] == [{"x": 2}]  # the losers wrote nothing


def test_a_failure_keeps_the_period_and_records_the_error(store):
    assert store.fail_job("counting", previous=None, error="boom " * 1000, at=at("2026-11-28T00:01"))
    state = store.job_state("counting")
    assert (state.last_period, state.last_status) == (None, "failed") and len(state.last_error) == 2000
    assert store.complete_job("counting", previous=None, period="2026-11-27", at=at("2026-11-28T00:02"))
    assert not store.fail_job("counting", previous=None, error="late", at=at("2026-11-28T00:03"))
    state = store.job_state("counting")
    assert (state.last_period, state.last_status, state.last_error) == ("2026-11-27", "succeeded", None)


# -- the scheduler, on an injected clock ----------------------------------------------------


def test_a_restart_in_the_middle_of_a_day_neither_skips_nor_repeats(store):
    clock, job = Clock("2026-11-28T09:00"), Counting()
    assert [r.period for r in tick(Scheduler(store, [job.job], clock=clock))] == ["2026-11-27"]
    for hour in ("2026-11-28T15:00", "2026-11-28T23:59:59"):  # restarts: a new scheduler each time
        clock.set(hour)
        assert tick(Scheduler(Store(store.engine), [job.job], clock=clock)) == []
    clock.set("2026-11-29T00:00:30")
    assert [r.period for r in tick(Scheduler(Store(store.engine), [job.job], clock=clock))] == ["2026-11-28"]
    assert job.ran == ["2026-11-27", "2026-11-28"]
    assert [r.period for r in store.reports(kind="counting")] == ["2026-11-28", "2026-11-27"]


def test_a_leader_change_runs_each_period_exactly_once(store):
    """Two controllers on one database; leadership moves between them at every tick."""
    clock, job = Clock("2026-11-20T12:00"), Counting()
    leader = {"a": True}
    a = Scheduler(store, [job.job], clock=clock, leading=lambda: leader["a"])
    b = Scheduler(Store(store.engine), [job.job], clock=clock, leading=lambda: not leader["a"])
    for _ in range(20):
        tick(a), tick(b)
        clock.now += timedelta(hours=11)
        leader["a"] = not leader["a"]
    assert job.ran == sorted(set(job.ran)) and len(job.ran) == 10
    assert count(store, ReportRow, kind="counting") == 10


def test_two_controllers_running_one_period_at_once_record_it_once(store):
    """A split second of two leaders: both run the period, one records it and its output."""
    clock, job = Clock("2026-11-28T09:00"), Counting()

    async def both():
        entered = asyncio.Event()

        async def run(period, start, end):  # each waits until the other has run it too
            output = await job.run(period, start, end)
            if len(job.ran) == 2:
                entered.set()
            await asyncio.wait_for(entered.wait(), timeout=10)
            return output
        racing = Job(JOB, run)
        a, b = Scheduler(store, [racing], clock=clock), Scheduler(Store(store.engine), [racing], clock=clock)
        return await asyncio.gather(a.tick(), b.tick())
    runs = [run for ticked in asyncio.run(both()) for run in ticked]
    assert sorted(r.status for r in runs) == ["lost", "succeeded"] and job.ran == ["2026-11-27"] * 2
    assert count(store, ReportRow, kind="counting") == 1


def test_a_failing_job_records_its_error_and_is_retried_next_tick(store):
    clock, job = Clock("2026-11-28T09:00"), Counting()
    scheduler = Scheduler(store, [job.job], clock=clock)
    job.failing = True
    [run] = tick(scheduler)
    assert (run.status, run.error) == ("failed", "RuntimeError: disk full")
    state = store.job_state("counting")
    assert (state.last_period, state.last_status, state.last_error) == (None, "failed", "RuntimeError: disk full")
    clock.set("2026-11-28T09:01")
    assert [r.status for r in tick(scheduler)] == ["failed"]  # still due, tried again
    job.failing = False
    clock.set("2026-11-28T09:02")
    assert [(r.period, r.status) for r in tick(scheduler)] == [("2026-11-27", "succeeded")]
    state = store.job_state("counting")
    assert (state.last_period, state.last_status, state.last_error) == ("2026-11-27", "succeeded", None)
    assert job.ran == ["2026-11-27"] * 3 and tick(scheduler) == []


def test_a_failing_job_does_not_hold_up_the_others(store):
    clock, broken, fine = Clock("2026-11-28T09:00"), Counting(), Counting(JobSpec("other", DAY))
    broken.failing = True
    runs = tick(Scheduler(store, [broken.job, fine.job], clock=clock))
    assert [(r.job, r.status) for r in runs] == [("counting", "failed"), ("other", "succeeded")]


def test_nothing_runs_while_standby(store):
    job = Counting()
    assert tick(Scheduler(store, [job.job], clock=Clock("2026-11-28T09:00"), leading=lambda: False)) == []
    assert job.ran == [] and store.job_state("counting").last_run_at is None


# -- the daily report and the analysis ---------------------------------------------------


def test_the_daily_report_is_enqueued_with_the_period_as_its_message_id(store):
    add_experiment(store, finished=at("2026-11-27T23:59:59"))  # the day before
    add_experiment(store, finished=at("2026-11-28T00:00"), risk="high", recommendation="merge", reg=0.02)
    add_experiment(store, finished=at("2026-11-28T13:00"), phase="Failed", recommendation="rollback", sr=None)
    add_experiment(store, finished=at("2026-11-29T00:00"))  # the day after
    clock = Clock("2026-11-29T00:00:10")
    scheduler = Scheduler(store, [reporting_job(store)], clock=clock)
    assert [r.period for r in tick(scheduler)] == ["2026-11-28"]
    assert tick(Scheduler(Store(store.engine), [reporting_job(store)], clock=clock)) == []  # a restart
    [message] = [m for m in store.outbox() if m["subject"] == DAILY_METRICS]
    assert message["msg_id"] == daily_msg_id("2026-11-28") == "genesis-daily-2026-11-28"
    assert message["durable"] and message["published_at"] is None
    body = message["payload"]
    assert body["period"] == {"start": "2026-11-28T00:00:00+00:00", "end": "2026-11-29T00:00:00+00:00"}
    assert (body["total"], body["completed"], body["failed"], body["merged"]) == (2, 1, 1, 1)
    assert body["by_risk"]["high"]["avg_regression"] == pytest.approx(0.02)
    [stored] = store.reports(kind=REPORTING.name)
    assert stored.period == "2026-11-28" and stored.body == body


def test_missed_daily_reports_are_each_enqueued_after_an_outage(store):
    assert store.complete_job(REPORTING.name, previous=None, period="2026-11-24", at=at("2026-11-25T00:01"))
    clock = Clock("2026-11-28T10:00")
    runs = tick(Scheduler(store, [reporting_job(store)], clock=clock))
    assert [r.period for r in runs] == ["2026-11-25", "2026-11-26", "2026-11-27"]
    assert sorted(m["msg_id"] for m in store.outbox()) == [f"genesis-daily-2026-11-2{d}" for d in (5, 6, 7)]


def test_a_message_already_in_the_outbox_is_not_enqueued_again(store):
    message = Message(DAILY_METRICS, "genesis-daily-2026-11-28", {"total": 0})
    for previous, period in ((None, "2026-11-28"), ("2026-11-28", "2026-11-29")):
        assert store.complete_job("reporting", previous=previous, period=period, at=at("2026-11-30T00:00"),
                                  output=JobOutput(message=message))
    assert count(store, OutboxRow, msg_id="genesis-daily-2026-11-28") == 1


def test_the_analysis_report_aggregates_the_metrics_rows(store):
    end = at("2026-11-29T00:00")
    add_experiment(store, finished=end - timedelta(days=1), sr=1.0, reg=0.0, llm=0.4)
    add_experiment(store, finished=end - timedelta(days=2), type_="refactor", risk="high", sr=0.8, reg=0.1, llm=None)
    add_experiment(store, finished=end - timedelta(days=9), sr=0.6, reg=0.2, llm=0.2)
    add_experiment(store, finished=end - timedelta(days=45), sr=0.9, reg=0.0, llm=0.1)
    add_experiment(store, finished=end - timedelta(days=70), sr=0.0, reg=1.0, llm=1.0)  # too old to count
    add_experiment(store, finished=end, sr=0.0, reg=1.0, llm=1.0)  # the next day's
    add_experiment(store, finished=end - timedelta(hours=1), phase="Failed", sr=None)  # no metrics row
    runs = tick(Scheduler(store, [analysis_job(store)], clock=Clock("2026-11-29T00:00:10")))
    assert [(r.job, r.period, r.status) for r in runs] == [(ANALYSIS.name, "2026-11-28", "succeeded")]
    [report] = store.reports(kind="analysis")
    assert report.period == report.body["period"] == "2026-11-28"
    week, month = report.body["windows"]["7d"], report.body["windows"]["30d"]
    assert (week["overall"]["count"], week["overall"]["previous_count"]) == (2, 1)
    assert week["overall"]["success_rate"]["mean"] == pytest.approx(0.9)
    assert week["overall"]["success_rate"]["change"] == pytest.approx(0.3)
    assert week["overall"]["llm_reduction"]["mean"] == pytest.approx(0.4)  # the one measured
    assert week["by_type"]["refactor"]["regression"]["mean"] == pytest.approx(0.1)
    assert week["by_risk"]["low"]["previous_count"] == 1
    assert (month["overall"]["count"], month["overall"]["previous_count"]) == (3, 1)
    assert month["overall"]["success_rate"]["previous"] == pytest.approx(0.9)


def test_reports_are_listed_newest_first(store):
    for previous, period in ((None, "2026-11-27"), ("2026-11-27", "2026-11-28")):
        for kind in ("analysis", "reporting"):
            store.complete_job(kind, previous=previous, period=period, at=at("2026-11-29T00:00"),
                               output=JobOutput(report={"kind": kind}))
    assert [(r.kind, r.period) for r in store.reports()] == [
        ("analysis", "2026-11-28"), ("reporting", "2026-11-28"), ("analysis", "2026-11-27"),
        ("reporting", "2026-11-27")]
    assert [r.period for r in store.reports(kind="reporting", period="2026-11-27")] == ["2026-11-27"]


def test_genesis_get_reports(store, database_url, tmp_path, capsys):
    from orchestrator.cli.main import main

    store.complete_job("analysis", previous=None, period="2026-11-28", at=at("2026-11-29T00:01"),
                       output=JobOutput(report={"period": "2026-11-28", "windows": {}}))
    store.complete_job("reporting", previous=None, period="2026-11-28", at=at("2026-11-29T00:01"),
                       output=JobOutput(report={"total": 3, "merged": 1, "success_rate": 1 / 3}))
    config = tmp_path / "cli.yaml"
    config.write_text(f"home: {tmp_path}\ndatabase_url: '{database_url}'\n")
    assert main(["--config", str(config), "get", "reports"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in table] == ["NAME", "analysis-2026-11-28", "reporting-2026-11-28"]
    assert main(["--config", str(config), "get", "report", "reporting-2026-11-28", "-o", "json"]) == 0
    assert '"total": 3' in capsys.readouterr().out
    assert main(["--config", str(config), "get", "reports", "-l", "kind=analysis", "-o", "name"]) == 0
    assert capsys.readouterr().out == "report/analysis-2026-11-28\n"
    assert main(["--config", str(config), "get", "reports", "analysis-2026-11-01"]) == 1
    assert 'reports "analysis-2026-11-01" not found' in capsys.readouterr().err


def test_the_controller_runs_cleanup_analysis_and_reporting_while_it_leads(store):
    from types import SimpleNamespace

    cleaned = []

    async def cleanup_images():
        cleaned.append(True)
        return ["genesis/snapshot:old"]
    controller = SimpleNamespace(store=store, leading=False, cleanup_images=cleanup_images)
    scheduler = Scheduler.for_controller(controller, clock=Clock("2026-11-29T07:00"))
    assert tick(scheduler) == []  # a standby
    controller.leading = True
    assert [(r.job, r.period, r.status) for r in tick(scheduler)] == [
        ("cleanup", "2026-11-29T00", "succeeded"), ("analysis", "2026-11-28", "succeeded"),
        ("reporting", "2026-11-28", "succeeded")]
    assert cleaned == [True] and [r.kind for r in store.reports()] == ["analysis", "reporting"]

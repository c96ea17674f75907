"""orchestrator.domain.schedule: which wall-clock period a job owes (SPEC §11)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from orchestrator.domain.schedule import (
    DAY, CatchUp, JobSpec, due, latest_ended, parse_period, period_bounds, period_id, period_start,
)

UTC = timezone.utc
DAILY = JobSpec("reporting", DAY, catch_up=CatchUp.EACH, max_backlog=30)
ANALYSIS = JobSpec("analysis", DAY)
SIX_HOURLY = JobSpec("cleanup", timedelta(hours=6))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_period_ids_name_the_period_by_its_start():
    assert period_id(at("2026-11-28T00:00"), DAY) == "2026-11-28"
    assert period_id(at("2026-11-28T06:00"), timedelta(hours=6)) == "2026-11-28T06"
    assert period_start(at("2026-11-28T11:59:59"), timedelta(hours=6)) == at("2026-11-28T06:00")
    assert period_bounds("2026-11-28", DAY) == (at("2026-11-28T00:00"), at("2026-11-29T00:00"))
    assert period_bounds("2026-11-28T18", timedelta(hours=6)) == (at("2026-11-28T18:00"), at("2026-11-29T00:00"))


def test_periods_are_utc_whatever_zone_now_is_given_in():
    tokyo = timezone(timedelta(hours=9))
    now = datetime(2026, 11, 29, 8, 0, tzinfo=tokyo)  # 2026-11-28T23:00Z: the 28th has not ended
    assert due(DAILY, None, now) == "2026-11-27"
    with pytest.raises(ValueError):
        due(DAILY, None, datetime(2026, 11, 29))


def test_a_daily_job_runs_the_day_that_just_ended():
    assert due(DAILY, None, at("2026-11-29T00:00:01")) == "2026-11-28"
    assert due(DAILY, "2026-11-28", at("2026-11-29T00:00:01")) is None
    assert due(DAILY, "2026-11-28", at("2026-11-29T23:59:59")) is None
    assert due(DAILY, "2026-11-28", at("2026-11-30T00:00")) == "2026-11-29"


def test_a_restart_in_the_middle_of_a_day_neither_skips_nor_repeats():
    """The old timer started at every start: with a deploy a day, it never fired."""
    last = None
    ran = []
    now = at("2026-11-20T09:00")
    while now < at("2026-11-30T00:00"):  # a "restart" every 13 h: nothing but the stored period survives it
        period = due(DAILY, last, now)
        if period is not None:
            ran.append(period)
            last = period
        now += timedelta(hours=13)
    assert ran == [f"2026-11-{d}" for d in range(19, 29)]


def test_six_hourly_periods():
    assert due(SIX_HOURLY, None, at("2026-11-28T13:00")) == "2026-11-28T06"
    assert due(SIX_HOURLY, "2026-11-28T06", at("2026-11-28T17:59")) is None
    assert due(SIX_HOURLY, "2026-11-28T06", at("2026-11-28T18:00")) == "2026-11-28T12"
    assert due(SIX_HOURLY, "2026-11-28T18", at("2026-11-29T06:30")) == "2026-11-29T00"  # LATEST: skips none


def test_after_an_outage_latest_runs_once_and_each_runs_every_day_in_order():
    now = at("2026-11-29T10:00")
    assert due(ANALYSIS, "2026-11-20", now) == "2026-11-28"  # only the latest: trends subsume the rest
    assert due(ANALYSIS, "2026-11-28", now) is None
    last, ran = "2026-11-25", []
    while (period := due(DAILY, last, now)) is not None:
        ran.append(period)
        last = period
    assert ran == ["2026-11-26", "2026-11-27", "2026-11-28"]


def test_each_catches_up_at_most_max_backlog_periods():
    job = JobSpec("reporting", DAY, catch_up=CatchUp.EACH, max_backlog=3)
    assert due(job, "2026-10-01", at("2026-11-29T10:00")) == "2026-11-26"  # the oldest of the last three


def test_a_stored_period_ahead_of_the_clock_runs_nothing():
    """Another controller's clock ran ahead: waiting beats running a period twice."""
    assert due(DAILY, "2026-11-30", at("2026-11-29T10:00")) is None


def test_an_unreadable_stored_period_runs_the_latest():
    assert due(DAILY, "yesterday", at("2026-11-29T10:00")) == "2026-11-28"
    assert due(DAILY, "2026-11-28T06", at("2026-11-30T10:00")) == "2026-11-29"  # the job was 6-hourly once


@pytest.mark.parametrize("period", [timedelta(hours=5), timedelta(minutes=30), timedelta(days=2), timedelta(0)])
def test_a_period_must_divide_a_day_in_whole_hours(period):
    with pytest.raises(ValueError):
        JobSpec("odd", period)


@given(hours=st.sampled_from([1, 2, 3, 4, 6, 8, 12, 24]),
       start=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
       steps=st.lists(st.integers(min_value=1, max_value=40 * 3600), min_size=1, max_size=40))
def test_ticks_at_any_times_run_each_period_at_most_once_in_order(hours, start, steps):
    job = JobSpec("any", timedelta(hours=hours), catch_up=CatchUp.EACH, max_backlog=10_000)
    last, ran, now = None, [], start
    for step in steps:
        now += timedelta(seconds=step)
        while (period := due(job, last, now)) is not None:
            ran.append(period)
            last = period
    starts = [parse_period(p) for p in ran]
    assert starts == sorted(set(starts))  # never twice, never out of order
    assert all(b - a == job.period for a, b in zip(starts, starts[1:]))  # none skipped
    assert starts[-1] == latest_ended(now, job.period)  # up to date

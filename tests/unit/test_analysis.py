"""orchestrator.domain.analysis: trends by type and risk over 7 and 30 days, by hand."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.domain.analysis import MetricsSample, trends

END = datetime(2026, 11, 29, tzinfo=timezone.utc)


def sample(days_ago: float, *, type_="decomposition", risk="low", sr=None, reg=None, llm=None) -> MetricsSample:
    return MetricsSample(experiment_type=type_, risk_level=risk, recorded_at=END - timedelta(days=days_ago),
                         success_rate=sr, regression=reg, llm_reduction=llm)


SAMPLES = [
    sample(1, sr=1.0, reg=0.0, llm=0.4),
    sample(2, type_="refactor", risk="high", sr=0.8, reg=0.1),  # no llm_reduction measured
    sample(9, sr=0.6, reg=0.2, llm=0.2),  # the week before
    sample(20, type_="refactor", risk="high", sr=0.5, reg=0.3, llm=0.0),
    sample(45, sr=0.9, reg=0.0, llm=0.1),  # the month before
    sample(61, sr=0.0, reg=1.0, llm=1.0),  # beyond every window
    sample(-0.5, sr=0.0, reg=1.0, llm=1.0),  # after the end: the next period's
]


def test_week_on_week():
    week = trends(SAMPLES, end=END)["windows"]["7d"]
    assert (week["start"], week["end"]) == ((END - timedelta(days=7)).isoformat(), END.isoformat())
    overall = week["overall"]
    assert (overall["count"], overall["previous_count"]) == (2, 1)
    assert overall["success_rate"] == {"mean": pytest.approx(0.9), "previous": 0.6, "change": pytest.approx(0.3)}
    assert overall["regression"]["mean"] == pytest.approx(0.05)
    assert overall["llm_reduction"] == {"mean": 0.4, "previous": 0.2, "change": pytest.approx(0.2)}


def test_month_on_month_and_groups():
    month = trends(SAMPLES, end=END)["windows"]["30d"]
    assert (month["overall"]["count"], month["overall"]["previous_count"]) == (4, 1)
    assert month["overall"]["success_rate"]["mean"] == pytest.approx((1.0 + 0.8 + 0.6 + 0.5) / 4)
    assert month["overall"]["success_rate"]["change"] == pytest.approx((1.0 + 0.8 + 0.6 + 0.5) / 4 - 0.9)
    assert set(month["by_type"]) == {"decomposition", "refactor"} and set(month["by_risk"]) == {"low", "high"}
    refactor = month["by_type"]["refactor"]
    assert refactor["count"] == 2 and refactor["success_rate"]["mean"] == pytest.approx(0.65)
    assert refactor["llm_reduction"]["mean"] == 0.0  # the one measured
    assert refactor["success_rate"]["previous"] is None and refactor["success_rate"]["change"] is None
    assert month["by_risk"]["low"]["previous_count"] == 1


def test_no_rows_no_figures():
    week = trends([], end=END)["windows"]["7d"]
    assert week["overall"]["count"] == 0 and week["overall"]["success_rate"] == {
        "mean": None, "previous": None, "change": None}
    assert week["by_type"] == {} and week["by_risk"] == {}

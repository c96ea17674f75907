"""The daily analysis (SPEC §11): trends of success rate, regression and
llm_reduction by experiment type and by risk level, over 7 and 30 days.

Pure: the caller fetches the metrics rows (one per finished experiment run,
``experiment_metrics``) of the last 60 days and stores the result as a
report. For each window the figures are the mean over the window and over
the window of the same length just before it, and the change between the
two (week on week, month on month): a trend a reader can check by hand,
where a fitted slope would hide how few runs it rests on (``count`` says).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WINDOWS = {"7d": timedelta(days=7), "30d": timedelta(days=30)}
FIGURES = ("success_rate", "regression", "llm_reduction")
LOOKBACK = 2 * max(WINDOWS.values())  # each window and the one before it


@dataclass(frozen=True)
class MetricsSample:
    experiment_type: str
    risk_level: str
    recorded_at: datetime
    success_rate: float | None
    regression: float | None
    llm_reduction: float | None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _figures(current: list[MetricsSample], previous: list[MetricsSample]) -> dict:
    out: dict = {"count": len(current), "previous_count": len(previous)}
    for name in FIGURES:
        now = _mean([v for s in current if (v := getattr(s, name)) is not None])
        before = _mean([v for s in previous if (v := getattr(s, name)) is not None])
        out[name] = {"mean": now, "previous": before,
                     "change": now - before if now is not None and before is not None else None}
    return out


def _grouped(current: list[MetricsSample], previous: list[MetricsSample], key: str) -> dict:
    groups = sorted({getattr(s, key) for s in current + previous})
    return {g: _figures([s for s in current if getattr(s, key) == g], [s for s in previous if getattr(s, key) == g])
            for g in groups}


def _window(samples: list[MetricsSample], *, end: datetime, length: timedelta) -> dict:
    start = end - length
    current = [s for s in samples if start <= s.recorded_at < end]
    previous = [s for s in samples if start - length <= s.recorded_at < start]
    return {"start": start.isoformat(), "end": end.isoformat(), "overall": _figures(current, previous),
            "by_type": _grouped(current, previous, "experiment_type"),
            "by_risk": _grouped(current, previous, "risk_level")}


def trends(samples: list[MetricsSample], *, end: datetime) -> dict:
    """The analysis of the windows ending at ``end`` (exclusive)."""
    return {"end": end.isoformat(),
            "windows": {name: _window(samples, end=end, length=length) for name, length in WINDOWS.items()}}

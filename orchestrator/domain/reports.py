"""The periodic reports Genesis publishes (SPEC §3), built from plain rows.

``system.health.genesis`` (every 5 minutes) and ``system.metrics.genesis``
(daily). Pure: the caller fetches the rows and publishes the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class FinishedRow:
    experiment_type: str
    risk_level: str
    succeeded: bool  # ran to a verdict (status "success")
    recommendation: str | None
    regression: float | None
    llm_reduction: float | None


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _summary(rows: list[FinishedRow]) -> dict:
    verdicts = [r for r in rows if r.succeeded]
    merged = [r for r in verdicts if r.recommendation in ("merge", "merge_with_adaptations")]
    return {
        "total": len(rows),
        "completed": len(verdicts),
        "failed": len(rows) - len(verdicts),
        "merged": len(merged),
        "success_rate": len(merged) / len(rows) if rows else None,
        "avg_regression": _mean([r.regression for r in verdicts if r.regression is not None]),
        "avg_llm_reduction": _mean([r.llm_reduction for r in verdicts if r.llm_reduction is not None]),
    }


def daily_report(rows: list[FinishedRow], *, start: datetime, end: datetime, version: str) -> dict:
    """Totals, success rate (share recommended for merge), averages, by type and by risk."""
    by_type: dict[str, list[FinishedRow]] = {}
    by_risk: dict[str, list[FinishedRow]] = {}
    for row in rows:
        by_type.setdefault(row.experiment_type, []).append(row)
        by_risk.setdefault(row.risk_level, []).append(row)
    return {
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        **_summary(rows),
        "by_type": {k: _summary(v) for k, v in sorted(by_type.items())},
        "by_risk": {k: _summary(v) for k, v in sorted(by_risk.items())},
        "version": version,
    }


def health_report(*, active: int, queued: int, rows_30d: list[FinishedRow], disk_bytes: int | None,
                  runtime_reachable: bool, version: str, now: datetime) -> dict:
    return {
        "status": "ok" if runtime_reachable else "degraded",
        "active_experiments": active,
        "queued_experiments": queued,
        "success_rate_30d": _summary(rows_30d)["success_rate"],
        "sandbox_disk_bytes": disk_bytes,
        "runtime_reachable": runtime_reachable,
        "version": version,
        "timestamp": now.isoformat(),
    }

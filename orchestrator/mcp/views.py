"""What the MCP tools answer, shaped for an AI assistant to read: compact
rows for listings, one experiment's verdict with its metrics beside the
baseline's, and two experiments side by side.

Pure functions over :class:`~orchestrator.domain.records.ExperimentView`;
the full Kubernetes-style object stays :func:`orchestrator.domain.resources.experiment`
(the ``genesis://experiments/{id}`` resource). Nothing here reads a backend.
"""

from __future__ import annotations

from orchestrator.domain.grading import CATEGORIES
from orchestrator.domain.records import ExperimentView

# The figures the baseline has too (Baseline's fields), compared one to one.
_BASELINE_FIGURES = ("success_rate", "test_count", "runtime_ms")


def row(view: ExperimentView) -> dict:
    """One line of ``list_experiments``."""
    metrics = view.outcome.metrics if view.outcome else None
    return {
        "id": view.id, "instance": view.instance_id, "type": view.experiment_type, "phase": view.phase.value,
        "recommendation": view.recommendation.value if view.recommendation else None,
        "success_rate": metrics.success_rate if metrics else None,
        "regression": metrics.regression if metrics else None,
        "created": view.created_at.isoformat(),
    }


def _delta(a, b):
    return round(b - a, 6) if isinstance(a, int | float) and isinstance(b, int | float) else None


def detail(view: ExperimentView) -> dict:
    """``get_experiment``: where it stands, the verdict and what it rests on."""
    outcome = view.outcome
    metrics = outcome.metrics.model_dump(mode="json") if outcome and outcome.metrics else None
    baseline = outcome.baseline.model_dump(mode="json") if outcome and outcome.baseline else None
    versus = None
    if metrics is not None and baseline is not None:
        versus = {name: {"experiment": metrics[name], "baseline": baseline[name],
                         "delta": _delta(baseline[name], metrics[name])} for name in _BASELINE_FIGURES}
    return {
        "id": view.id, "instance": view.instance_id, "type": view.experiment_type, "risk": view.risk_level,
        "repo": view.repo, "commit": view.commit, "phase": view.phase.value, "finished": view.phase.finished,
        "recommendation": view.recommendation.value if view.recommendation else None,
        "reason": view.reason, "message": view.message, "cancel_requested": view.cancel_requested,
        "error": outcome.error.model_dump(mode="json") if outcome and outcome.error else None,
        "metrics": metrics, "baseline": baseline, "versus_baseline": versus,
        "tests": tests_of(view),
        "sandbox": outcome.sandbox.model_dump(mode="json") if outcome and outcome.sandbox else None,
        "conditions": [{"type": c.type, "status": c.status, "reason": c.reason, "message": c.message}
                       for c in view.conditions],
        "created": view.created_at.isoformat(),
        "started": view.started_at.isoformat() if view.started_at else None,
        "finished_at": view.finished_at.isoformat() if view.finished_at else None,
    }


def tests_of(view: ExperimentView) -> dict | None:
    """Each test category's count and (bounded) names, leaving out the empty ones."""
    tests = view.outcome.tests if view.outcome else None
    if not tests:
        return None
    found = {c: tests[c] for c in CATEGORIES if isinstance(tests.get(c), dict) and tests[c].get("count")}
    return {"passes": tests.get("passes"), "reruns": tests.get("reruns"),
            "protected_edited": tests.get("protected_edited", []), **found}


def compare(a: ExperimentView, b: ExperimentView) -> dict:
    """``compare_experiments``: ``b`` against ``a`` (deltas are b - a)."""
    ma = a.outcome.metrics.model_dump(mode="json") if a.outcome and a.outcome.metrics else {}
    mb = b.outcome.metrics.model_dump(mode="json") if b.outcome and b.outcome.metrics else {}
    metrics = {}
    for name in [k for k in ma if k != "custom"] + [k for k in mb if k not in ma and k != "custom"]:
        va, vb = ma.get(name), mb.get(name)
        if va is not None or vb is not None:
            metrics[name] = {"a": va, "b": vb, "delta": _delta(va, vb)}
    for name in sorted(set(ma.get("custom", {})) | set(mb.get("custom", {}))):
        va, vb = ma.get("custom", {}).get(name), mb.get("custom", {}).get(name)
        metrics[f"custom.{name}"] = {"a": va, "b": vb, "delta": _delta(va, vb)}
    return {
        "a": row(a) | {"reason": a.reason}, "b": row(b) | {"reason": b.reason},
        "same_recommendation": a.recommendation == b.recommendation,
        "metrics": metrics,
        "baseline": {"a": _baseline(a), "b": _baseline(b)},
        "tests": _test_differences(a, b),
    }


def _baseline(view: ExperimentView) -> dict | None:
    return view.outcome.baseline.model_dump(mode="json") if view.outcome and view.outcome.baseline else None


def _test_differences(a: ExperimentView, b: ExperimentView) -> dict:
    """Per category: both counts, and the names only one of them lists (names are bounded,
    so a name missing from a long list may be cut, not absent)."""
    ta, tb = (v.outcome.tests or {} if v.outcome else {} for v in (a, b))
    differences = {}
    for category in CATEGORIES:
        ca, cb = ta.get(category) or {}, tb.get(category) or {}
        na, nb = set(ca.get("names", [])), set(cb.get("names", []))
        if ca.get("count", 0) or cb.get("count", 0):
            differences[category] = {"a": ca.get("count", 0), "b": cb.get("count", 0),
                                     "only_in_a": sorted(na - nb), "only_in_b": sorted(nb - na)}
    return differences

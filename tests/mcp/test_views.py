"""What the MCP tools answer: pure shaping of experiment records (no Docker)."""

from __future__ import annotations

from datetime import datetime, timezone

from orchestrator.domain.models import Baseline, Metrics, Outcome, Phase, Recommendation
from orchestrator.domain.records import ExperimentView
from orchestrator.mcp import views

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)


def view(experiment_id: str, *, recommendation=Recommendation.MERGE, success_rate=1.0, tests=None,
         custom=None) -> ExperimentView:
    outcome = Outcome(experiment_id=experiment_id, instance_id="i", status="success", recommendation=recommendation,
                      metrics=Metrics(success_rate=success_rate, runtime_ms=1200, test_count=10,
                                      custom=custom or {}),
                      baseline=Baseline(success_rate=0.9, test_count=10, runtime_ms=1000), tests=tests,
                      timestamp=NOW)
    return ExperimentView(id=experiment_id, instance_id="i", experiment_type="t", risk_level="low", repo="r",
                          commit="c", phase=Phase.SUCCEEDED, spec=None, recommendation=recommendation,
                          outcome=outcome, created_at=NOW, updated_at=NOW)


def test_row_of_a_pending_experiment_has_no_figures():
    pending = ExperimentView(id="p", instance_id="i", experiment_type="t", risk_level="low", repo="r", commit=None,
                             phase=Phase.PENDING, spec=None, created_at=NOW, updated_at=NOW)
    assert views.row(pending) == {"id": "p", "instance": "i", "type": "t", "phase": "Pending",
                                  "recommendation": None, "success_rate": None, "regression": None,
                                  "created": NOW.isoformat()}
    assert views.detail(pending)["versus_baseline"] is None and views.detail(pending)["finished"] is False


def test_detail_puts_metrics_beside_the_baseline():
    detail = views.detail(view("a", tests={"passes": 2, "PASS_TO_PASS": {"count": 10, "names": ["t1"]},
                                           "PASS_TO_FAIL": {"count": 0, "names": []}}))
    assert detail["versus_baseline"]["success_rate"] == {"experiment": 1.0, "baseline": 0.9, "delta": 0.1}
    assert detail["versus_baseline"]["runtime_ms"]["delta"] == 200
    assert "PASS_TO_FAIL" not in detail["tests"] and detail["tests"]["PASS_TO_PASS"]["count"] == 10


def test_compare_gives_deltas_and_test_differences():
    a = view("a", tests={"PASS_TO_PASS": {"count": 2, "names": ["t1", "t2"]}}, custom={"fitness": 0.5})
    b = view("b", recommendation=Recommendation.ROLLBACK, success_rate=0.5,
             tests={"PASS_TO_PASS": {"count": 1, "names": ["t1"]}, "PASS_TO_FAIL": {"count": 1, "names": ["t2"]}})
    compared = views.compare(a, b)
    assert compared["same_recommendation"] is False
    assert compared["metrics"]["success_rate"] == {"a": 1.0, "b": 0.5, "delta": -0.5}
    assert compared["metrics"]["custom.fitness"] == {"a": 0.5, "b": None, "delta": None}
    assert compared["tests"]["PASS_TO_PASS"] == {"a": 2, "b": 1, "only_in_a": ["t2"], "only_in_b": []}
    assert compared["tests"]["PASS_TO_FAIL"] == {"a": 0, "b": 1, "only_in_a": [], "only_in_b": ["t2"]}

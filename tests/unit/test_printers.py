"""kubectl-style rendering of experiments: pure functions from views to text."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from orchestrator.cli.printers import age, describe, experiment, experiments, table
from orchestrator.domain.resources import experiment as resource, labels_of
from orchestrator.domain.models import (
    Baseline,
    Condition,
    ErrorInfo,
    ExperimentRequest,
    Metrics,
    Outcome,
    Phase,
    Recommendation,
    SandboxInfo,
)
from orchestrator.domain.records import ExperimentView, HistoryEntry

NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=timezone.utc)
EXP_ID = "0b6f2c9e-8c43-4e51-9a59-1d2b3c4d5e6f"

SPEC = ExperimentRequest.model_validate({
    "experiment_id": EXP_ID,
    "instance_id": "singularity-prod-1",
    "experiment_type": "decomposition",
    "description": "Add pre-classifier",
    "risk_level": "low",
    "repo": "monorepo",
    "base_ref": "3f2a9c1",
    "changes": {"patch": "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
                "files": [{"path": "lib/x.py", "content": "x"}]},
    "resources": {"cpu": 2, "memory": "4Gi", "gpu": 0, "pids": 1024},
    "timeout_ms": 600_000,
    "priority": 5,
})

METRICS = Metrics(success_rate=0.95, regression=0.02, llm_reduction=0.38, performance_delta=-0.1,
                  runtime_ms=183000, test_count=250, failures=12, errors=0, skipped=3, memory_peak_mb=812.0,
                  cpu_usage_percent=143.0, io_operations=5120, code_coverage_percent=81.2,
                  custom={"fitness": 0.73})

OUTCOME = Outcome(
    experiment_id=EXP_ID, instance_id="singularity-prod-1", status="success",
    recommendation=Recommendation.MERGE, metrics=METRICS,
    baseline=Baseline(success_rate=0.97, test_count=250, runtime_ms=199000),
    sandbox=SandboxInfo(runtime="docker", image="genesis/snapshot:monorepo-3f2a9c1", preserved=True),
    trace_id="abc123", timestamp=NOW,
)


def view(**overrides) -> ExperimentView:
    fields = dict(
        id=EXP_ID, instance_id="singularity-prod-1", experiment_type="decomposition", risk_level="low",
        repo="monorepo", commit="3f2a9c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b", phase=Phase.SUCCEEDED,
        reason="Verdict", message="merge: rule 2", spec=SPEC, recommendation=Recommendation.MERGE,
        attempt=1, trace_id="abc123", sandbox_name="genesis-exp-0b6f2c9e-1",
        image="genesis/snapshot:monorepo-3f2a9c1", preserved_until=NOW + timedelta(days=7), outcome=OUTCOME,
        conditions=[Condition(type="Succeeded", status="True", reason="Verdict", message="merge",
                              last_transition_time=NOW)],
        created_at=NOW - timedelta(hours=3), updated_at=NOW,
    )
    fields.update(overrides)
    return ExperimentView(**fields)


PENDING = dict(id="manual-1", instance_id="ops", experiment_type="unspecified", risk_level="medium",
               repo="monorepo", commit=None, phase=Phase.PENDING, spec=None, recommendation=None,
               outcome=None, sandbox_name=None, image=None, preserved_until=None, reason=None,
               message=None, conditions=[], attempt=0, created_at=NOW - timedelta(seconds=42))


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [
        (timedelta(seconds=0), "0s"),
        (timedelta(seconds=59), "59s"),
        (timedelta(seconds=60), "1m"),
        (timedelta(minutes=119, seconds=59), "119m"),
        (timedelta(hours=2), "2h"),
        (timedelta(hours=47), "47h"),
        (timedelta(days=2), "2d"),
        (timedelta(days=400), "400d"),
        (timedelta(seconds=-30), "0s"),  # clock skew never shows a negative age
    ],
)
def test_age(elapsed: timedelta, expected: str) -> None:
    assert age(NOW - elapsed, NOW) == expected


def test_age_of_nothing() -> None:
    assert age(None, NOW) == "<none>"


def test_table_aligns_columns_and_strips_trailing_space() -> None:
    text = table([["a", "long-value"], ["bbbb", "x"]], ["NAME", "V"])
    assert text.splitlines() == ["NAME   V", "a      long-value", "bbbb   x"]


@pytest.mark.parametrize("output", [None, "wide"])
def test_empty_list_says_no_resources(output) -> None:
    assert experiments([], output, now=NOW) == "No resources found."


def test_default_table() -> None:
    lines = experiments([view(), view(**PENDING)], None, now=NOW).splitlines()
    assert lines[0].split() == ["NAME", "INSTANCE", "TYPE", "RISK", "PHASE", "RECOMMENDATION", "AGE"]
    assert lines[1].split() == [EXP_ID, "singularity-prod-1", "decomposition", "low", "Succeeded", "merge", "3h"]
    assert lines[2].split() == ["manual-1", "ops", "unspecified", "medium", "Pending", "<none>", "42s"]
    assert len(lines) == 3


def test_wide_table() -> None:
    lines = experiments([view(), view(**PENDING)], "wide", now=NOW).splitlines()
    assert lines[0].split()[7:] == ["REPO", "COMMIT", "ATTEMPT", "SUCCESS", "REGRESSION", "SANDBOX", "REASON"]
    assert lines[1].split()[7:] == ["monorepo", "3f2a9c1d2e3f", "1", "95.0%", "2.0%", "genesis-exp-0b6f2c9e-1",
                                    "Verdict"]
    assert lines[2].split()[7:] == ["monorepo", "<none>", "0", "-", "-", "<none>"]


def test_name_output() -> None:
    assert experiments([view(), view(**PENDING)], "name") == f"experiment/{EXP_ID}\nexperiment/manual-1"


def test_json_of_a_named_experiment_is_the_object() -> None:
    doc = json.loads(experiment(view(), "json"))
    assert doc["apiVersion"] == "genesis.dev/v1" and doc["kind"] == "Experiment"
    assert doc["metadata"]["name"] == EXP_ID
    assert doc["metadata"]["labels"]["risk_level"] == "low"
    assert doc["spec"]["resources"]["memory"] == "4Gi"
    assert doc["status"]["phase"] == "Succeeded"
    assert doc["status"]["recommendation"] == "merge"
    assert doc["status"]["outcome"]["metrics"]["custom"] == {"fitness": 0.73}
    assert doc["status"]["conditions"][0]["type"] == "Succeeded"


def test_a_named_experiment_in_other_outputs_is_a_one_row_listing() -> None:
    assert experiment(view(), None, now=NOW) == experiments([view()], None, now=NOW)
    assert experiment(view(), "name") == f"experiment/{EXP_ID}"
    assert yaml.safe_load(experiment(view(), "yaml")) == json.loads(experiment(view(), "json"))


def test_json_of_several_experiments_is_a_list() -> None:
    doc = json.loads(experiments([view(), view(**PENDING)], "json"))
    assert doc["kind"] == "List"
    assert [item["metadata"]["name"] for item in doc["items"]] == [EXP_ID, "manual-1"]
    assert doc["items"][1]["status"]["outcome"] is None


def test_json_of_one_listed_experiment_is_still_a_list() -> None:
    doc = json.loads(experiments([view()], "json"))
    assert (doc["apiVersion"], doc["kind"], doc["metadata"]) == ("genesis.dev/v1", "List", {})
    assert [item["kind"] for item in doc["items"]] == ["Experiment"]
    assert doc["items"][0] == json.loads(experiment(view(), "json"))


def test_json_of_nothing_is_an_empty_list() -> None:
    assert json.loads(experiments([], "json")) == {"apiVersion": "genesis.dev/v1", "kind": "List", "items": [],
                                                   "metadata": {}}


def test_a_list_with_more_remaining_carries_the_continue_token() -> None:
    doc = json.loads(experiments([view()], "json", continue_token="abc"))
    assert doc["metadata"] == {"continue": "abc"}
    assert yaml.safe_load(experiments([view()], "yaml", continue_token="abc"))["metadata"] == {"continue": "abc"}
    assert "abc" not in experiments([view()], None, continue_token="abc", now=NOW)  # the verb says it on stderr


def test_yaml_matches_json() -> None:
    views = [view(), view(**PENDING)]
    assert yaml.safe_load(experiments(views, "yaml")) == json.loads(experiments(views, "json"))


def test_rejected_request_without_spec_shows_raw_excerpt() -> None:
    rejected = view(**{**PENDING, "phase": Phase.FAILED, "raw_excerpt": "{not json"})
    assert resource(rejected)["spec"] == {"rawExcerpt": "{not json"}


def test_labels_of() -> None:
    assert labels_of(view()) == {"instance_id": "singularity-prod-1", "experiment_type": "decomposition",
                                 "risk_level": "low", "repo": "monorepo", "phase": "Succeeded"}


def _history() -> list[HistoryEntry]:
    return [
        HistoryEntry(experiment_id=EXP_ID, sandbox_name="genesis-exp-0b6f2c9e-1", action="created",
                     actor="controller", reason="sandbox created", at=NOW - timedelta(hours=3)),
        HistoryEntry(experiment_id=EXP_ID, sandbox_name="", action="deleted", actor="controller",
                     reason="baseline collected", duration_ms=412.4, at=NOW - timedelta(minutes=5)),
    ]


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(title) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("  ")), len(lines))
    return lines[start:end]


def test_describe_shows_spec_metrics_with_baseline_and_events() -> None:
    text = describe(view(), _history(), now=NOW)
    assert f"Name:            {EXP_ID}" in text
    assert "Repo:            monorepo@3f2a9c1d2e3f" in text
    assert "Recommendation:  merge" in text
    assert "  Changes:       patch 6 lines, 1 file(s)" in text
    assert "  Resources:     cpu=2 memory=4Gi gpu=0 pids=1024 network=False" in text

    metrics = _section(text, "Metrics:")
    assert metrics[0].split() == ["Metric", "Experiment", "Baseline"]
    rows = {line.split()[0]: line.split()[1:] for line in metrics[1:]}
    assert rows["success_rate"] == ["0.95", "0.97"]
    assert rows["test_count"] == ["250", "250"]
    assert rows["runtime_ms"] == ["183000", "199000"]
    assert rows["regression"] == ["0.02"]
    assert rows["custom.fitness"] == ["0.73"]

    events = _section(text, "Events:")
    assert events[0].split() == ["Age", "Action", "By", "Sandbox", "Reason"]
    assert events[1].split()[:4] == ["3h", "created", "controller", "genesis-exp-0b6f2c9e-1"]
    assert events[2].split()[:4] == ["5m", "deleted", "controller", "-"]
    assert events[2].endswith("baseline collected (412 ms)")

    conditions = _section(text, "Conditions:")
    assert conditions[1].split() == ["Succeeded", "True", "Verdict", "merge"]


def test_describe_names_the_tests_behind_the_verdict() -> None:
    tests = {"passes": 2, "reruns": 3, "protected_edited": ["conftest.py"],
             "PASS_TO_FAIL": {"count": 6, "names": [f"t::{i}" for i in range(6)]},
             "FLAKY": {"count": 1, "names": ["t::flaky"]}, "NEW": {"count": 0, "names": []}}
    outcome = OUTCOME.model_copy(update={"tests": tests})
    text = describe(view(outcome=outcome), _history(), now=NOW)
    assert "Tests:           2 pass(es), 3 rerun(s)" in text
    assert "  PASS_TO_FAIL: 6  (t::0, t::1, t::2, t::3, t::4, …)" in text
    assert "  FLAKY: 1  (t::flaky)" in text and "NEW" not in text
    assert "  protected edited: conftest.py" in text


def test_describe_of_a_rejected_request() -> None:
    outcome = Outcome(experiment_id="manual-1", instance_id="ops", status="failed",
                      recommendation=Recommendation.ROLLBACK, timestamp=NOW,
                      error=ErrorInfo(code="invalid_path", message="path '../x': '..' segments are not allowed"))
    rejected = view(**{**PENDING, "phase": Phase.FAILED, "raw_excerpt": '{"changes":\n {"files": ["../x"]}}',
                       "outcome": outcome})
    text = describe(rejected, [], now=NOW)
    assert "Request (as received, truncated):" in text
    assert '  {"changes":  {"files": ["../x"]}}' in text
    assert "  Code:          invalid_path" in text
    assert "Metrics:" not in text
    assert text.endswith("Events:\n  <none>")


def test_describe_says_a_pids_limit_was_the_nodes_or_not_enforced() -> None:
    def created(**details) -> HistoryEntry:
        return HistoryEntry(experiment_id=EXP_ID, sandbox_name="genesis-exp-0b6f2c9e-1", action="created",
                            actor="controller", reason="image x", details=details, at=NOW)

    node = describe(view(), [created(pids_enforced="node", pids_node_limit=4096)], now=NOW)
    assert "pids=1024 (enforced as the node's podPidsLimit: 4096) network=False" in node
    unknown = describe(view(), [created(pids_enforced="none", pids_node_limit=None)], now=NOW)
    assert "pids=1024 (not enforced: podPidsLimit unknown) network=False" in unknown

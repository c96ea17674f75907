"""The verdict policy (SPEC §4): ordered rules, first match wins.

Defaults:
1. rollback if regression > 0.05 or success_rate < 0.70
2. merge if no test went PASS_TO_FAIL, no protected test infrastructure
   changed, and (llm_reduction > 0.30 or success_rate > 0.95)
3. merge_with_adaptations if success_rate > 0.90 and regression < 0.05
4. otherwise rollback
"""

from __future__ import annotations

import pytest

from orchestrator.domain.models import Metrics, Recommendation
from orchestrator.domain.policy import DEFAULT_POLICY, Policy, named

MERGE = Recommendation.MERGE
ADAPT = Recommendation.MERGE_WITH_ADAPTATIONS
ROLLBACK = Recommendation.ROLLBACK


@pytest.mark.parametrize(
    ("success_rate", "regression", "llm_reduction", "expected", "rule"),
    [
        # rule 1: rollback on regression or low success, even when rule 2 would merge
        (1.00, 0.06, None, ROLLBACK, "rule 1"),
        (0.99, 0.051, 0.90, ROLLBACK, "rule 1"),
        (0.69, 0.00, 0.90, ROLLBACK, "rule 1"),
        (0.0, 0.0, None, ROLLBACK, "rule 1"),
        # regression exactly 0.05 is not > 0.05; success exactly 0.70 is not < 0.70
        (0.99, 0.05, None, ROLLBACK, "default"),  # a test broke: no merge; and 0.05 is not < 0.05
        (0.70, 0.00, 0.50, MERGE, "rule 2"),
        # rule 2, first group: llm_reduction > 0.30 and nothing broke
        (0.80, 0.02, 0.31, ROLLBACK, "default"),  # the old rule merged this
        (0.93, 0.02, 0.31, ADAPT, "rule 3"),
        (0.71, 0.00, 1.00, MERGE, "rule 2"),
        (0.80, 0.03, 0.50, ROLLBACK, "default"),  # regression 0.03 is not < 0.03
        (0.80, 0.00, 0.30, ROLLBACK, "default"),  # llm_reduction 0.30 is not > 0.30
        (0.93, 0.00, 0.30, ADAPT, "rule 3"),
        # rule 2, second group: success_rate > 0.95
        (0.96, 0.04, None, ADAPT, "rule 3"),  # a broken test is never a plain merge
        (1.00, 0.00, None, MERGE, "rule 2"),
        (0.95, 0.00, None, ADAPT, "rule 3"),  # 0.95 is not > 0.95
        # rule 3: success_rate > 0.90 and regression < 0.05
        (0.93, 0.04, None, ADAPT, "rule 3"),
        (0.93, 0.04, 0.10, ADAPT, "rule 3"),
        (0.91, 0.0, None, ADAPT, "rule 3"),
        (0.90, 0.0, None, ROLLBACK, "default"),  # 0.90 is not > 0.90
        (0.93, 0.05, None, ROLLBACK, "default"),  # regression 0.05 is not < 0.05
        # default
        (0.85, 0.00, None, ROLLBACK, "default"),
        (0.85, 0.00, 0.20, ROLLBACK, "default"),
        (0.70, 0.00, None, ROLLBACK, "default"),
    ],
)
def test_default_policy(success_rate, regression, llm_reduction, expected, rule) -> None:
    broken = round(regression * 1000)  # a suite of 1000 baseline-passing tests
    metrics = Metrics(success_rate=success_rate, regression=regression, llm_reduction=llm_reduction,
                      pass_to_fail=broken)
    recommendation, reason = DEFAULT_POLICY.decide(metrics)
    assert recommendation is expected
    if rule == "default":
        assert reason == "no rule matched: default"
    else:
        assert reason.startswith(f"{rule}: {expected.value} if ")


def test_unmeasured_llm_reduction_never_satisfies_a_clause() -> None:
    # With llm_reduction None the first merge group cannot hold, whatever the
    # other figures; only the success-rate group can still merge.
    metrics = Metrics(success_rate=0.80, regression=0.0, llm_reduction=None)
    assert DEFAULT_POLICY.decide(metrics)[0] is ROLLBACK
    lower_bound_policy = Policy.model_validate(
        {"rules": [{"recommendation": "merge", "any_of": [[{"metric": "llm_reduction", "op": "<", "value": 1e9}]]}]}
    )
    assert lower_bound_policy.decide(metrics) == (ROLLBACK, "no rule matched: default")


def test_reason_names_the_rule_that_fired() -> None:
    _, reason = DEFAULT_POLICY.decide(Metrics(success_rate=0.5, regression=0.0))
    assert reason == "rule 1: rollback if (regression > 0.05) or (success_rate < 0.7)"
    _, reason = DEFAULT_POLICY.decide(Metrics(success_rate=0.93, regression=0.0))
    assert reason == "rule 3: merge_with_adaptations if success_rate > 0.9 and regression < 0.05"


CUSTOM = {
    "rules": [
        {"recommendation": "rollback", "any_of": [[{"metric": "regression", "op": ">", "value": 0.0}]]},
        {
            "recommendation": "merge",
            "any_of": [[{"metric": "success_rate", "op": ">=", "value": 0.80},
                        {"metric": "custom.fitness", "op": ">=", "value": 0.5}]],
        },
    ],
    "default": "merge_with_adaptations",
}


def test_custom_policy_from_a_dict_changes_the_outcome() -> None:
    policy = Policy.model_validate(CUSTOM)
    # The default policy rolls this back (success 0.85, no rule); the custom
    # one merges on the custom fitness figure.
    metrics = Metrics(success_rate=0.85, regression=0.0, custom={"fitness": 0.73})
    assert DEFAULT_POLICY.decide(metrics)[0] is ROLLBACK
    assert policy.decide(metrics) == (MERGE, "rule 2: merge if success_rate >= 0.8 and custom.fitness >= 0.5")
    # The default policy adapts this (success 1.0, one broken test); the custom one rolls back any regression.
    strict = Metrics(success_rate=1.0, regression=0.01, pass_to_fail=1, custom={"fitness": 0.9})
    assert DEFAULT_POLICY.decide(strict)[0] is ADAPT
    assert policy.decide(strict)[0] is ROLLBACK


def test_custom_policy_default_applies_when_no_rule_matches() -> None:
    policy = Policy.model_validate(CUSTOM)
    assert policy.decide(Metrics(success_rate=0.5)) == (ADAPT, "no rule matched: default")
    # A custom metric that was not reported never satisfies its clause.
    assert policy.decide(Metrics(success_rate=0.9))[0] is ADAPT


def test_inclusive_operators() -> None:
    policy = Policy.model_validate(
        {"rules": [{"recommendation": "merge", "any_of": [[{"metric": "regression", "op": "<=", "value": 0.0}]]}]}
    )
    assert policy.decide(Metrics(regression=0.0))[0] is MERGE
    assert policy.decide(Metrics(regression=0.001))[0] is ROLLBACK


@pytest.mark.parametrize(
    "bad",
    [
        {"rules": [{"recommendation": "ship_it", "any_of": [[{"metric": "x", "op": ">", "value": 1}]]}]},
        {"rules": [{"recommendation": "merge", "any_of": [[{"metric": "x", "op": "==", "value": 1}]]}]},
        {"rules": [{"recommendation": "merge", "any_of": []}]},
    ],
)
def test_invalid_policy_files_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        Policy.model_validate(bad)


def test_custom_metric_named_like_a_model_attribute_is_compared_as_a_number() -> None:
    # A custom metric called "copy" (or "json", "validate", ...) is a number, never the model's method.
    policy = Policy.model_validate(
        {"rules": [{"recommendation": "merge", "any_of": [[{"metric": "custom.copy", "op": ">", "value": 0.5}]]}]}
    )
    assert policy.decide(Metrics(custom={"copy": 0.9}))[0] is MERGE


@pytest.mark.parametrize("metric", ["fitness", "copy", "model_fields", "custom", "custom."])
def test_a_clause_names_a_genesis_figure_or_a_custom_one(metric: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        Policy.model_validate({"rules": [{"recommendation": "merge",
                                          "any_of": [[{"metric": metric, "op": ">", "value": 0}]]}]})


def test_metrics_json_cannot_satisfy_a_clause_on_a_named_figure() -> None:
    # metrics.json is written by the code under test: {"llm_reduction": 0.9} there is custom.llm_reduction.
    forged = Metrics(success_rate=0.80, regression=0.0, llm_reduction=None, custom={"llm_reduction": 0.9})
    assert DEFAULT_POLICY.decide(forged)[0] is ROLLBACK
    measured = Metrics(success_rate=0.80, regression=0.0, llm_reduction=0.9)
    assert DEFAULT_POLICY.decide(measured)[0] is MERGE


def test_a_large_suite_cannot_hide_broken_tests() -> None:
    # 5 broken tests of 62,430: success 99.99 %, regression 0.008 %; the old rule 2 merged it.
    metrics = Metrics(success_rate=62_425 / 62_430, regression=5 / 62_430, pass_to_fail=5)
    recommendation, reason = DEFAULT_POLICY.decide(metrics)
    assert recommendation is ADAPT and reason.startswith("rule 3")


def test_protected_infrastructure_edits_are_never_a_plain_merge() -> None:
    metrics = Metrics(success_rate=1.0, regression=0.0, protected_changed=1)
    assert DEFAULT_POLICY.decide(metrics)[0] is ADAPT
    assert DEFAULT_POLICY.decide(metrics.model_copy(update={"protected_changed": 0}))[0] is MERGE


def test_a_flaky_threshold_is_a_policy_clause() -> None:
    policy = Policy.model_validate({"rules": [
        {"recommendation": "merge_with_adaptations", "any_of": [[{"metric": "flaky_tests", "op": ">", "value": 2}]]},
        *[r.model_dump(mode="json") for r in DEFAULT_POLICY.rules]]})
    assert policy.decide(Metrics(success_rate=1.0, flaky_tests=3))[0] is ADAPT
    assert policy.decide(Metrics(success_rate=1.0, flaky_tests=2))[0] is MERGE


def test_named_reason_lists_the_broken_tests_and_files() -> None:
    why = named("rule 3: x", pass_to_fail=[f"t::{i}" for i in range(12)], protected=["conftest.py"], flaky=["f::a"])
    assert "PASS_TO_FAIL: t::0, t::1" in why and "…" in why
    assert "protected test infrastructure edited: conftest.py" in why and "flaky: f::a" in why

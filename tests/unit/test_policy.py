"""The verdict policy (SPEC §4): ordered rules, first match wins.

Defaults:
1. rollback if regression > 0.05 or success_rate < 0.70
2. merge if (llm_reduction > 0.30 and regression < 0.03) or success_rate > 0.95
3. merge_with_adaptations if success_rate > 0.90 and regression < 0.05
4. otherwise rollback
"""

from __future__ import annotations

import pytest

from orchestrator.domain.models import Metrics, Recommendation
from orchestrator.domain.policy import DEFAULT_POLICY, Policy

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
        (0.99, 0.05, None, MERGE, "rule 2"),
        (0.70, 0.00, 0.50, MERGE, "rule 2"),
        # rule 2, first group: llm_reduction > 0.30 and regression < 0.03
        (0.80, 0.02, 0.31, MERGE, "rule 2"),
        (0.71, 0.00, 1.00, MERGE, "rule 2"),
        (0.80, 0.03, 0.50, ROLLBACK, "default"),  # regression 0.03 is not < 0.03
        (0.80, 0.00, 0.30, ROLLBACK, "default"),  # llm_reduction 0.30 is not > 0.30
        (0.93, 0.00, 0.30, ADAPT, "rule 3"),
        # rule 2, second group: success_rate > 0.95
        (0.96, 0.04, None, MERGE, "rule 2"),
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
    metrics = Metrics(success_rate=success_rate, regression=regression, llm_reduction=llm_reduction)
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
                        {"metric": "fitness", "op": ">=", "value": 0.5}]],
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
    assert policy.decide(metrics) == (MERGE, "rule 2: merge if success_rate >= 0.8 and fitness >= 0.5")
    # The default policy merges this (success 1.0); the custom one rolls back any regression.
    strict = Metrics(success_rate=1.0, regression=0.01, custom={"fitness": 0.9})
    assert DEFAULT_POLICY.decide(strict)[0] is MERGE
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
    # BUG: Clause.holds looks the metric up with getattr(metrics, name) first,
    # so a custom metric called "copy" (or "json", "dict", "validate", ...)
    # finds the pydantic method instead and decide() raises TypeError.
    policy = Policy.model_validate(
        {"rules": [{"recommendation": "merge", "any_of": [[{"metric": "copy", "op": ">", "value": 0.5}]]}]}
    )
    assert policy.decide(Metrics(custom={"copy": 0.9}))[0] is MERGE

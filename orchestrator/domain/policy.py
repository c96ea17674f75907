"""The verdict policy (SPEC §4): ordered rules, first match wins.

A rule is a list of clauses that must all hold (AND); a rule with
``any_of`` holds when any of its clause groups holds (OR of ANDs). The
defaults reproduce SPEC §4; operators override them with a policy file
(YAML or JSON) of the same shape::

    rules:
      - recommendation: rollback
        any_of: [[{metric: regression, op: ">", value: 0.05}],
                 [{metric: success_rate, op: "<", value: 0.70}]]
    default: rollback

A clause names one of Genesis's own figures (``regression``,
``pass_to_fail``, ``flaky_tests``, ...) or, as ``custom.<name>``, a figure
the validation command wrote to ``metrics.json``. The two namespaces never
mix: ``llm_reduction`` is Genesis's count, even when ``metrics.json`` has a
figure of that name, since that file is written by the code under test.
"""

from __future__ import annotations

import operator
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from orchestrator.domain.models import Metrics, Recommendation

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


CUSTOM = "custom."
NAMED = frozenset(name for name, field in Metrics.model_fields.items() if name != "custom")


class Clause(BaseModel):
    metric: str
    op: Literal[">", ">=", "<", "<="]
    value: float

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in NAMED and not (metric.startswith(CUSTOM) and len(metric) > len(CUSTOM)):
            raise ValueError(f"unknown metric {metric!r}: one of {', '.join(sorted(NAMED))}, or custom.<name>")
        return metric

    def holds(self, metrics: Metrics) -> bool:
        if self.metric.startswith(CUSTOM):
            actual = metrics.custom.get(self.metric[len(CUSTOM):])
        else:
            actual = getattr(metrics, self.metric)
        if actual is None:  # an unmeasured figure never satisfies a clause
            return False
        return _OPS[self.op](actual, self.value)


class Rule(BaseModel):
    recommendation: Recommendation
    any_of: list[list[Clause]] = Field(min_length=1)

    def holds(self, metrics: Metrics) -> bool:
        return any(all(c.holds(metrics) for c in group) for group in self.any_of)


class Policy(BaseModel):
    rules: list[Rule]
    default: Recommendation = Recommendation.ROLLBACK

    def decide(self, metrics: Metrics) -> tuple[Recommendation, str]:
        """The recommendation and a one-line reason naming the rule that fired."""
        for index, rule in enumerate(self.rules, start=1):
            if rule.holds(metrics):
                return rule.recommendation, f"rule {index}: {describe_rule(rule)}"
        return self.default, "no rule matched: default"


def describe_rule(rule: Rule) -> str:
    groups = [" and ".join(f"{c.metric} {c.op} {c.value:g}" for c in g) for g in rule.any_of]
    joined = " or ".join(f"({g})" if len(rule.any_of) > 1 else g for g in groups)
    return f"{rule.recommendation.value} if {joined}"


def _c(metric: str, op: str, value: float) -> Clause:
    return Clause(metric=metric, op=op, value=value)


DEFAULT_POLICY = Policy(
    rules=[
        Rule(
            recommendation=Recommendation.ROLLBACK,
            any_of=[[_c("regression", ">", 0.05)], [_c("success_rate", "<", 0.70)]],
        ),
        # Like SWE-bench's "resolved": every baseline-passing test still passes.
        Rule(
            recommendation=Recommendation.MERGE,
            any_of=[
                [_c("pass_to_fail", "<", 1), _c("protected_changed", "<", 1), _c("llm_reduction", ">", 0.30)],
                [_c("pass_to_fail", "<", 1), _c("protected_changed", "<", 1), _c("success_rate", ">", 0.95)],
            ],
        ),
        Rule(
            recommendation=Recommendation.MERGE_WITH_ADAPTATIONS,
            any_of=[[_c("success_rate", ">", 0.90), _c("regression", "<", 0.05)]],
        ),
    ],
    default=Recommendation.ROLLBACK,
)


def capped(recommendation: Recommendation, why: str, *, note: str) -> tuple[Recommendation, str]:
    """At best ``merge_with_adaptations``, saying why (``note``)."""
    if recommendation is Recommendation.MERGE:
        return Recommendation.MERGE_WITH_ADAPTATIONS, f"{note}; {why}"
    return recommendation, f"{why}; {note}"


def named(why: str, *, pass_to_fail: list[str], protected: list[str], flaky: list[str]) -> str:
    """The reason with the tests and files behind it, so a reviewer need not dig."""
    parts = [why]
    if pass_to_fail:
        parts.append("PASS_TO_FAIL: " + ", ".join(pass_to_fail[:10]) + (" …" if len(pass_to_fail) > 10 else ""))
    if protected:
        parts.append("protected test infrastructure edited: " + ", ".join(protected[:10]))
    if flaky:
        parts.append("flaky: " + ", ".join(flaky[:5]) + (" …" if len(flaky) > 5 else ""))
    return "; ".join(parts)


def capped_for_dependencies(recommendation: Recommendation, why: str,
                            changed_inputs: list[str]) -> tuple[Recommendation, str]:
    """A change that edits its environment's inputs is at best
    ``merge_with_adaptations``: its dependencies were installed by its own
    setup, which no baseline vouches for, and a reviewer must look at them."""
    if not changed_inputs:
        return recommendation, why
    return capped(recommendation, why, note="dependencies changed (" + ", ".join(changed_inputs[:5]) + ")")

"""Turn a run's raw results into SPEC §4 metrics, beside its baseline.

Pure: the pipeline hands in what the sandbox produced (already parsed into a
:class:`TestReport` and a :class:`RunFacts`) and gets :class:`Metrics` back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from orchestrator.domain.grading import FAIL_TO_PASS, FLAKY, Grade, Timing
from orchestrator.domain.junit import TestReport, regression
from orchestrator.domain.models import Baseline, Metrics

MAX_CUSTOM_METRICS = 64  # metrics.json is untrusted; keep the record bounded


@dataclass(frozen=True)
class RunFacts:
    """What one sandbox run measured, other than test results."""

    runtime_ms: int
    exit_code: int
    memory_peak_bytes: int | None = None
    cpu_seconds: float | None = None
    io_operations: int | None = None
    coverage_percent: float | None = None
    custom: dict = field(default_factory=dict)


def clean_custom(raw: object) -> dict[str, float]:
    """Keep only finite numbers under short string keys."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if len(out) >= MAX_CUSTOM_METRICS:
            break
        if not (isinstance(key, str) and len(key) <= 64) or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:  # JSON integers are unbounded
                continue
            if math.isfinite(number):
                out[key] = number
    return out


def excess(delta: float | None, noise: float | None) -> float | None:
    """How far a runtime change goes past the baseline's own spread, signed;
    0 inside it. A policy clause ``performance_excess > 0.1`` reads "slower
    by more than 10 % beyond what the unchanged tree varies by"."""
    if delta is None or noise is None:
        return None
    if abs(delta) <= noise:
        return 0.0
    return round(delta - noise if delta > 0 else delta + noise, 4)


def baseline_of(report: TestReport, facts: RunFacts, timing: Timing | None = None) -> Baseline:
    runs = list(timing.runtimes_ms) if timing is not None else []
    return Baseline(success_rate=report.success_rate, test_count=report.total, runtime_ms=facts.runtime_ms,
                    repetitions=max(len(runs), 1), runtimes_ms=runs)


def score(
    *,
    report: TestReport,
    facts: RunFacts,
    baseline_report: TestReport,
    baseline_facts: RunFacts,
    llm_reduction: float | None,
    grade: Grade | None = None,
    protected_changed: int = 0,
    performance_noise: float | None = None,
) -> Metrics:
    """The figures of one verdict. With a ``grade`` (two passes, flaky tests
    known) regression and the PASS_TO_FAIL counts are the grade's."""
    perf = None
    if baseline_facts.runtime_ms > 0:
        perf = (facts.runtime_ms - baseline_facts.runtime_ms) / baseline_facts.runtime_ms
    cpu_percent = None
    if facts.cpu_seconds is not None and facts.runtime_ms > 0:
        cpu_percent = round(100.0 * facts.cpu_seconds / (facts.runtime_ms / 1000.0), 1)
    return Metrics(
        success_rate=report.success_rate,
        regression=grade.regression if grade is not None else regression(baseline_report, report),
        pass_to_fail=len(grade.pass_to_fail) if grade is not None else 0,
        fail_to_pass=len(grade.names(FAIL_TO_PASS)) if grade is not None else 0,
        flaky_tests=len(grade.names(FLAKY)) if grade is not None else 0,
        protected_changed=protected_changed,
        performance_noise=None if performance_noise is None else round(performance_noise, 4),
        performance_excess=excess(perf, performance_noise),
        llm_reduction=llm_reduction,
        performance_delta=perf,
        runtime_ms=facts.runtime_ms,
        test_count=report.total,
        failures=report.failed,
        errors=report.errors,
        skipped=report.skipped,
        memory_peak_mb=None if facts.memory_peak_bytes is None else round(facts.memory_peak_bytes / 2**20, 1),
        cpu_usage_percent=cpu_percent,
        io_operations=facts.io_operations,
        code_coverage_percent=facts.coverage_percent,
        custom=clean_custom(facts.custom),
    )

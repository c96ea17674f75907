"""SPEC §4 figures of one run beside its baseline, and the custom-metrics filter."""

from __future__ import annotations

import math

import pytest

from orchestrator.domain.junit import ERROR, FAILED, PASSED, SKIPPED
from orchestrator.domain.junit import TestReport as Report  # not a test class
from orchestrator.domain.scoring import MAX_CUSTOM_METRICS, RunFacts, baseline_of, clean_custom, score

BASELINE_REPORT = Report(cases={"t::a": PASSED, "t::b": PASSED, "t::c": PASSED, "t::d": PASSED, "t::e": SKIPPED})
CHANGED_REPORT = Report(
    cases={"t::a": PASSED, "t::b": PASSED, "t::c": FAILED, "t::d": ERROR, "t::e": SKIPPED},
    parse_errors=("extra.xml: junk",),
)


def _score(facts: RunFacts, baseline_facts: RunFacts | None = None, *, llm: float | None = 0.25):
    return score(
        report=CHANGED_REPORT,
        facts=facts,
        baseline_report=BASELINE_REPORT,
        baseline_facts=baseline_facts or RunFacts(runtime_ms=200_000, exit_code=0),
        llm_reduction=llm,
    )


def test_score_figures() -> None:
    facts = RunFacts(runtime_ms=180_000, exit_code=1, memory_peak_bytes=812 * 2**20 + 2**19,
                     cpu_seconds=257.4, io_operations=5120, coverage_percent=81.2,
                     custom={"fitness": 0.73})
    metrics = _score(facts)
    # 6 cases counted (5 + one unparsable document), one skipped, two passed.
    assert metrics.test_count == 6
    assert metrics.success_rate == pytest.approx(2 / 5)
    assert (metrics.failures, metrics.errors, metrics.skipped) == (1, 2, 1)
    assert metrics.regression == 0.5  # c and d passed in the baseline
    assert metrics.llm_reduction == 0.25
    assert metrics.performance_delta == pytest.approx(-0.10)
    assert metrics.runtime_ms == 180_000
    assert metrics.cpu_usage_percent == 143.0  # 100 * 257.4 s / 180 s
    assert metrics.memory_peak_mb == 812.5
    assert metrics.io_operations == 5120
    assert metrics.code_coverage_percent == 81.2
    assert metrics.custom == {"fitness": 0.73}


def test_slower_run_has_positive_performance_delta() -> None:
    metrics = _score(RunFacts(runtime_ms=300_000, exit_code=0), RunFacts(runtime_ms=200_000, exit_code=0))
    assert metrics.performance_delta == pytest.approx(0.5)


def test_unmeasured_figures_stay_none() -> None:
    metrics = _score(RunFacts(runtime_ms=0, exit_code=0, cpu_seconds=3.0), RunFacts(runtime_ms=0, exit_code=0),
                     llm=None)
    assert metrics.performance_delta is None  # baseline runtime 0: no ratio
    assert metrics.cpu_usage_percent is None  # runtime 0: no rate
    assert metrics.memory_peak_mb is None
    assert metrics.io_operations is None
    assert metrics.code_coverage_percent is None
    assert metrics.llm_reduction is None
    assert metrics.custom == {}


def test_cpu_usage_percent_of_a_single_busy_core_is_100() -> None:
    assert _score(RunFacts(runtime_ms=2_000, exit_code=0, cpu_seconds=2.0)).cpu_usage_percent == 100.0


def test_baseline_of() -> None:
    baseline = baseline_of(BASELINE_REPORT, RunFacts(runtime_ms=199_000, exit_code=0))
    assert (baseline.success_rate, baseline.test_count, baseline.runtime_ms) == (1.0, 5, 199_000)


def test_clean_custom_keeps_only_finite_numbers() -> None:
    raw = {
        "fitness": 0.73,
        "count": 12,
        "negative": -1.5,
        "flag": True,
        "off": False,
        "nan": math.nan,
        "inf": math.inf,
        "ninf": -math.inf,
        "text": "0.5",
        "none": None,
        "list": [1],
        "nested": {"a": 1},
        "k" * 65: 1.0,
        "k" * 64: 2.0,
    }
    cleaned = clean_custom(raw)
    assert cleaned == {"fitness": 0.73, "count": 12.0, "negative": -1.5, "k" * 64: 2.0}
    assert all(type(v) is float for v in cleaned.values())


@pytest.mark.parametrize("raw", [None, [("a", 1.0)], "a", 3.0])
def test_clean_custom_of_non_dict_is_empty(raw) -> None:
    assert clean_custom(raw) == {}


def test_clean_custom_caps_the_number_of_metrics() -> None:
    raw = {f"m{i:03d}": float(i) for i in range(MAX_CUSTOM_METRICS + 20)}
    cleaned = clean_custom(raw)
    assert len(cleaned) == MAX_CUSTOM_METRICS
    assert list(cleaned) == [f"m{i:03d}" for i in range(MAX_CUSTOM_METRICS)]


def test_clean_custom_cap_counts_kept_entries_not_rejected_ones() -> None:
    raw = {f"junk{i}": "x" for i in range(100)} | {"fitness": 0.5}
    assert clean_custom(raw) == {"fitness": 0.5}


def test_clean_custom_drops_integers_too_large_for_a_float() -> None:
    # BUG: math.isfinite(10**400) raises OverflowError ("int too large to
    # convert to float"); metrics.json is untrusted and JSON integers are
    # unbounded, so one huge integer crashes scoring.
    assert clean_custom({"huge": 10**400, "fitness": 0.5}) == {"fitness": 0.5}


@pytest.mark.parametrize(("delta", "noise", "expected"), [
    (0.35, 0.40, 0.0), (-0.2, 0.3, 0.0), (0.5, 0.2, 0.3), (-0.5, 0.2, -0.3), (0.1, None, None), (None, 0.1, None)])
def test_performance_excess_is_the_delta_beyond_the_baseline_spread(delta, noise, expected) -> None:
    from orchestrator.domain.scoring import excess

    assert excess(delta, noise) == (pytest.approx(expected) if expected is not None else None)

"""Each test's fate under a change, in SWE-bench's names, from up to two passes.

Pass A runs the base commit's test files (and test data) against the changed
source; pass B, run only when the change edits test files, runs the change's
own. A test in a file the change did not edit is judged by pass A alone:
if it passed on the base and fails in pass A it is PASS_TO_FAIL, whatever
pass B says. A test in a file the change edited that fails in pass A is a
*declared* behaviour change only if pass B runs it and it passes (not
skipped, not xfailed, not removed); otherwise it is PASS_TO_FAIL too. So a
real fix that updates its own test's expectation still merges, and a change
that deletes, skips or rewrites the test it breaks does not.

Flaky tests (outcomes that vary between runs of one tree) are labelled
FLAKY and a failure of one is counted nowhere (not a regression, not in the
success rate): they are found by repeating the baseline, and by rerunning
pass A when a test goes PASS_TO_FAIL.

Pure: reports in, a :class:`Grade` out.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from orchestrator.domain.junit import PASSED, SKIPPED, TestReport

PASS_TO_PASS, FAIL_TO_PASS, PASS_TO_FAIL, FAIL_TO_FAIL = "PASS_TO_PASS", "FAIL_TO_PASS", "PASS_TO_FAIL", "FAIL_TO_FAIL"
NEW, REMOVED, FLAKY, DECLARED, NOT_RUN = "NEW", "REMOVED", "FLAKY", "DECLARED_CHANGE", "NOT_RUN"
CATEGORIES = (PASS_TO_PASS, FAIL_TO_PASS, PASS_TO_FAIL, FAIL_TO_FAIL, NEW, REMOVED, FLAKY, DECLARED, NOT_RUN)
MAX_NAMES = 100  # test ids listed per category in a record


@dataclass(frozen=True)
class Grade:
    categories: dict[str, str]  # test id -> category
    report: TestReport  # what the verdict counts: pass A, pass B for edited test files, no flaky failure
    passes: int  # 1: pass A was the whole change (no test edits, or inseparable tests)
    baseline_passing: int  # non-flaky tests that passed on the base

    def names(self, category: str) -> list[str]:
        return sorted(t for t, c in self.categories.items() if c == category)

    @property
    def pass_to_fail(self) -> list[str]:
        return self.names(PASS_TO_FAIL)

    @property
    def regression(self) -> float:
        """Share of the base's (non-flaky) passing tests that went PASS_TO_FAIL."""
        return len(self.pass_to_fail) / self.baseline_passing if self.baseline_passing else 0.0

    def summary(self, *, reruns: int = 0, protected: Iterable[str] = ()) -> dict:
        """The record's ``tests`` document: counts and (bounded) names per category."""
        doc: dict = {"passes": self.passes, "reruns": reruns, "protected_edited": sorted(protected)[:MAX_NAMES]}
        for category in CATEGORIES:
            names = self.names(category)
            doc[category] = {"count": len(names), "names": names[:MAX_NAMES]}
        return doc


def file_of(test_id: str, paths: Iterable[str]) -> str | None:
    """The file among ``paths`` a test id (``classname::name``) lives in.

    pytest names a test's class by its module (``tests.test_parse`` or
    ``tests.test_parse.TestX``); JUnit from Node and Rust runners often use
    the file's path itself.
    """
    wanted = set(paths)
    classname = test_id.split("::", 1)[0]
    if classname in wanted:
        return classname
    parts = classname.split(".")
    for end in range(len(parts), 0, -1):
        candidate = "/".join(parts[:end]) + ".py"
        if candidate in wanted:
            return candidate
    for path in wanted:  # a path-like classname with a suffix: "test/a.test.js > suite"
        if classname.startswith(path):
            return path
    return None


def _category(base: str | None, a: str | None, b: str | None, *, edited: bool) -> str:
    final = b if edited else a
    if base is None:
        return NEW if final is not None else NOT_RUN
    if base == SKIPPED:
        return NEW if final not in (None, SKIPPED) else NOT_RUN
    if base == PASSED:
        if not edited:
            return PASS_TO_PASS if a == PASSED else PASS_TO_FAIL
        if a == PASSED:
            return {PASSED: PASS_TO_PASS, None: REMOVED}.get(b, PASS_TO_FAIL)
        return DECLARED if b == PASSED else PASS_TO_FAIL
    if final is None:
        return REMOVED
    return FAIL_TO_PASS if final == PASSED else FAIL_TO_FAIL


def grade(*, base: TestReport, pass_a: TestReport, pass_b: TestReport | None = None,
          edited_tests: Iterable[str] = (), flaky: Iterable[str] = ()) -> Grade:
    """Every test's category. ``pass_b`` is None when pass A ran the whole change."""
    flaky = set(flaky)
    edited_files = set(edited_tests) if pass_b is not None else set()
    b_cases = pass_b.cases if pass_b is not None else {}
    categories: dict[str, str] = {}
    counted: dict[str, str] = {}
    for test in set(base.cases) | set(pass_a.cases) | set(b_cases):
        edited = bool(edited_files) and file_of(test, edited_files) is not None
        a, b = pass_a.cases.get(test), b_cases.get(test)
        category = _category(base.cases.get(test), a, b, edited=edited)
        if test in flaky and category == PASS_TO_FAIL:
            category = FLAKY
        categories[test] = category
        final = PASSED if category == DECLARED else (b if edited else a)
        if final is not None and category != FLAKY:  # a flaky failure says nothing about the change
            counted[test] = final
    errors = pass_a.parse_errors + (pass_b.parse_errors if pass_b is not None else ())
    passing = sum(1 for t, s in base.cases.items() if s == PASSED and t not in flaky)
    return Grade(categories=categories, report=TestReport(cases=counted, parse_errors=errors),
                 passes=1 if pass_b is None else 2, baseline_passing=passing)


def varying(reports: list[TestReport]) -> set[str]:
    """Tests whose outcome differs between runs of one tree (absent counts as an outcome)."""
    tests = set().union(*(r.cases for r in reports)) if reports else set()
    return {t for t in tests if len({r.cases.get(t) for r in reports}) > 1}


def combine(reports: list[TestReport]) -> TestReport:
    """Repetitions of the baseline as one report: a test passed if it passed in any run."""
    cases: dict[str, str] = {}
    for report in reports:
        for test, status in report.cases.items():
            if test not in cases or status == PASSED:
                cases[test] = status
    return TestReport(cases=cases, parse_errors=reports[0].parse_errors if reports else ())


def passed_in(reruns: list[TestReport], tests: Iterable[str]) -> set[str]:
    """Of ``tests``, those that passed in at least one rerun: flaky, not broken."""
    return {t for t in tests if any(r.cases.get(t) == PASSED for r in reruns)}


@dataclass(frozen=True)
class Timing:
    """The baseline's runtime over its repetitions: the middle and the spread."""

    runtimes_ms: tuple[int, ...] = field(default_factory=tuple)

    @property
    def median_ms(self) -> int:
        return int(statistics.median(self.runtimes_ms)) if self.runtimes_ms else 0

    @property
    def noise(self) -> float | None:
        """(slowest − fastest) / median: how far one run may stray with no change at all."""
        if len(self.runtimes_ms) < 2 or self.median_ms <= 0:
            return None
        return (max(self.runtimes_ms) - min(self.runtimes_ms)) / self.median_ms


def counts(categories: Mapping[str, str]) -> dict[str, int]:
    return {c: sum(1 for v in categories.values() if v == c) for c in CATEGORIES}

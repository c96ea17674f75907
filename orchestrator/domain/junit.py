"""JUnit XML to per-test results, and the SPEC §4 scores over them.

Input is untrusted (written by the change under test): files are size-capped
by the caller, parsed with the standard library's expat (which refuses
entity-expansion bombs), and anything unparsable counts as one error rather
than crashing the collector.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

PASSED, FAILED, ERROR, SKIPPED = "passed", "failed", "error", "skipped"


@dataclass(frozen=True)
class TestReport:
    """Outcome of every test case, keyed ``classname::name``."""

    __test__ = False  # not a pytest test class

    cases: dict[str, str] = field(default_factory=dict)
    parse_errors: tuple[str, ...] = ()

    def count(self, status: str) -> int:
        return sum(1 for s in self.cases.values() if s == status)

    @property
    def total(self) -> int:
        return len(self.cases) + len(self.parse_errors)

    @property
    def passed(self) -> int:
        return self.count(PASSED)

    @property
    def failed(self) -> int:
        return self.count(FAILED)

    @property
    def errors(self) -> int:
        return self.count(ERROR) + len(self.parse_errors)

    @property
    def skipped(self) -> int:
        return self.count(SKIPPED)

    @property
    def success_rate(self) -> float:
        """passed / (total − skipped); 0 when nothing ran."""
        ran = self.total - self.skipped
        return self.passed / ran if ran > 0 else 0.0


def _case_status(case: ET.Element) -> str:
    tags = {child.tag for child in case}
    if "error" in tags:
        return ERROR
    if "failure" in tags:
        return FAILED
    if "skipped" in tags:
        return SKIPPED
    return PASSED


def parse_junit(documents: dict[str, bytes]) -> TestReport:
    """Merge JUnit documents (name → bytes) into one report."""
    cases: dict[str, str] = {}
    problems: list[str] = []
    for name, data in sorted(documents.items()):
        try:
            root = ET.fromstring(data)
        except (ET.ParseError, LookupError, ValueError, RecursionError) as exc:  # LookupError: unknown encoding
            problems.append(f"{name}: {exc}")
            continue
        for case in root.iter("testcase"):
            key = f"{case.get('classname', '')}::{case.get('name', '')}"
            cases[key] = _case_status(case)
    return TestReport(cases=cases, parse_errors=tuple(problems))


def from_exit_code(exit_code: int) -> TestReport:
    """A command that wrote no JUnit is one test, judged by its exit code."""
    return TestReport(cases={"validation::command": PASSED if exit_code == 0 else FAILED})


def regression(baseline: TestReport, changed: TestReport) -> float:
    """Share of baseline-passing tests that do not pass with the change.

    A test that disappeared counts as not passing: deleting a failing test
    must not look like a fix.
    """
    passing = [k for k, s in baseline.cases.items() if s == PASSED]
    if not passing:
        return 0.0
    broken = sum(1 for k in passing if changed.cases.get(k) != PASSED)
    return broken / len(passing)

"""Does a run's evidence hang together? Pure checks over what a pass left.

What Genesis trusts about a run: the runtime's own record (the container's
exit status and end time), and the first ``GENESIS-APPLIED`` line of the
log, which the runner prints before any of the change's code has run. What
it cannot trust, and so cross-checks: the JUnit report, the runner's final
document and the test runner's terminal summary, all written by processes
the change's code shares. A run whose evidence disagrees ends ``failed``
with ``evidence_inconsistent`` and the disagreement, never with a guess.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from orchestrator.domain.junit import FAILED, PASSED, TestReport
from orchestrator.domain.results import RESULT_MARKER

APPLIED_MARKER = "GENESIS-APPLIED "
RUNTIME_TOLERANCE_MS = 2_000  # Kubernetes reports a container's end to the second
_SUMMARY = re.compile(r"^=*\s*((?:\d+ [a-z]+(?:, )?)+) in [\d.]+s")
_COUNT = re.compile(r"(\d+) ([a-z]+)")


@dataclass(frozen=True)
class Applied:
    """The runner's first line: the change applied, the validation about to start."""

    validation_started_ms: int
    touched: tuple[str, ...]


def applied_marker(log_head: str) -> Applied | None:
    """The first ``GENESIS-APPLIED`` line, if it is the first marker of the log."""
    for line in log_head.splitlines():
        if line.startswith(RESULT_MARKER):
            return None  # the runner stopped before the validation (the change did not apply)
        if line.startswith(APPLIED_MARKER):
            try:
                doc = json.loads(line[len(APPLIED_MARKER):])
                started = int(doc["validation_started_ms"])
            except (ValueError, KeyError, TypeError):
                return None
            touched = doc.get("touched") if isinstance(doc.get("touched"), list) else []
            return Applied(validation_started_ms=started, touched=tuple(str(t) for t in touched))
    return None


def pytest_summary(log_text: str) -> dict[str, int] | None:
    """The counts of the last pytest summary line (``3 passed, 1 failed in 0.2s``)."""
    found = None
    for line in log_text.splitlines():
        match = _SUMMARY.match(line.strip())
        if match:
            found = match.group(1)
    if found is None:
        return None
    counts: dict[str, int] = {}
    for number, word in _COUNT.findall(found):
        word = {"errors": "error", "warnings": "warning"}.get(word, word)
        counts[word] = counts.get(word, 0) + int(number)
    return counts


def inconsistency(*, report_kind: str, report: TestReport, has_report: bool, truncated: list[str],
                  exit_code: int, runner_exit: int | None, runner_runtime_ms: int | None,
                  engine_runtime_ms: int | None, log_text: str) -> str | None:
    """Why this run's evidence cannot be believed, or None when it agrees."""
    if runner_exit is not None and runner_exit != exit_code:
        return f"the runner reported exit {runner_exit}, the runtime recorded exit {exit_code}"
    if runner_runtime_ms is not None and engine_runtime_ms is not None \
            and abs(runner_runtime_ms - engine_runtime_ms) > RUNTIME_TOLERANCE_MS + engine_runtime_ms // 20:
        return f"the runner reported {runner_runtime_ms} ms, the runtime {engine_runtime_ms} ms"
    if report_kind != "junit":
        return None
    cut = [name for name in truncated if name.endswith(".xml")]
    if cut:
        return f"the JUnit report was cut short at the collection limit ({', '.join(cut[:3])})"
    if not has_report:
        return f"no JUnit report, though the repository reports with junit (exit {exit_code})"
    if report.parse_errors:
        return "the JUnit report is unreadable: " + "; ".join(report.parse_errors)[:400]
    broken = report.failed + report.errors
    if exit_code == 0 and broken:
        return f"exit 0, but the report has {report.failed} failures and {report.errors} errors"
    if exit_code == 0 and report.total == 0:
        return "exit 0, but the report has no tests"
    if exit_code != 0 and report.total > 0 and not broken:
        return f"exit {exit_code}, but every test in the report passed or was skipped"
    summary = pytest_summary(log_text)
    if summary is not None:
        claimed = summary.get("passed", 0) + summary.get("xpassed", 0)
        if report.passed > claimed:
            return f"the report has {report.passed} passed tests, the test runner's summary {claimed}"
        if broken < summary.get("failed", 0):
            return f"the report has {broken} failures, the test runner's summary {summary['failed']}"
    return None


def missing_tests(base: TestReport, run: TestReport, *, exempt: set[str]) -> list[str]:
    """Base tests (that ran: passed or failed) absent from a run in which
    nothing failed. A failure explains missing tests honestly (a collection
    error hides a module's tests; cargo stops at the first failing target),
    and they count as broken anyway; a run where all passed and tests
    vanished is one that deselected them."""
    if run.errors or run.failed:
        return []
    return sorted(t for t, status in base.cases.items()
                  if status in (PASSED, FAILED) and t not in run.cases and t not in exempt)

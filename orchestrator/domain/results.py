"""Read what a sandbox left in /genesis/out: pure functions over file bytes.

Everything here is untrusted input written by the change under test, so
every field is checked and anything malformed degrades to "not measured"
rather than an exception.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Mapping

from orchestrator.domain.junit import TestReport, from_exit_code, parse_junit
from orchestrator.domain.llm_calls import LlmPatterns, count_file
from orchestrator.domain.scoring import RunFacts

RESULT_FILE = "result.json"
RESULT_MARKER = "GENESIS-RESULT "


@dataclass(frozen=True)
class RunnerResult:
    """The runner's own document (see orchestrator/sandbox/runner.py)."""

    status: str  # completed | patch_failed | runner_failed | missing
    message: str
    exit_code: int | None
    runtime_ms: int
    validation_started_ms: int | None
    runner_started_ms: int | None
    memory_peak_bytes: int | None
    cpu_seconds: float | None
    io_operations: int | None
    touched: tuple[str, ...]


_INT_RANGE = 2**63  # anything beyond a signed 64-bit column is not a measurement


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) and abs(number) < _INT_RANGE else None


def _int(value) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _load_json(raw: bytes | None):
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def parse_runner_result(files: dict[str, bytes], log_tail: str = "") -> RunnerResult:
    """result.json, or the ``GENESIS-RESULT`` line of the log when the file is absent."""
    raw = files.get(RESULT_FILE)
    if raw is None:
        lines = [line for line in log_tail.splitlines() if line.startswith(RESULT_MARKER)]
        raw = lines[-1][len(RESULT_MARKER):].encode() if lines else None
    doc = _load_json(raw)
    if not isinstance(doc, dict):
        return RunnerResult("missing", "the sandbox left no result document", None, 0, None, None,
                            None, None, None, ())
    touched = doc.get("touched") if isinstance(doc.get("touched"), list) else []
    return RunnerResult(
        status=str(doc.get("status", "missing"))[:32],
        message=str(doc.get("message", ""))[:4000],
        exit_code=_int(doc.get("exit_code")),
        runtime_ms=max(_int(doc.get("runtime_ms")) or 0, 0),
        validation_started_ms=_int(doc.get("validation_started_ms")),
        runner_started_ms=_int(doc.get("runner_started_ms")),
        memory_peak_bytes=_int(doc.get("memory_peak_bytes")),
        cpu_seconds=_number(doc.get("cpu_seconds")),
        io_operations=_int(doc.get("io_operations")),
        touched=tuple(str(t) for t in touched[:10_000]),
    )


def junit_documents(files: dict[str, bytes]) -> dict[str, bytes]:
    """JUnit XML files at the top of /genesis/out (``*.xml`` except coverage)."""
    return {name: data for name, data in files.items()
            if "/" not in name and name.endswith(".xml") and name != "coverage.xml"}


def test_report(files: dict[str, bytes], exit_code: int | None) -> TestReport:
    documents = junit_documents(files)
    if documents:
        return parse_junit(documents)
    return from_exit_code(exit_code if exit_code is not None else 1)


def coverage_percent(files: dict[str, bytes]) -> float | None:
    """Cobertura ``coverage.xml`` line rate, as a percentage."""
    data = files.get("coverage.xml")
    if not data:
        return None
    try:
        rate = float(ET.fromstring(data).get("line-rate", ""))
    except (ET.ParseError, LookupError, ValueError, RecursionError):
        return None
    return round(rate * 100, 2) if 0 <= rate <= 1 else None


def custom_metrics(files: dict[str, bytes]) -> dict:
    data = _load_json(files.get("metrics.json"))
    return data if isinstance(data, dict) else {}


def run_facts(result: RunnerResult, files: dict[str, bytes]) -> RunFacts:
    return RunFacts(
        runtime_ms=result.runtime_ms,
        exit_code=result.exit_code if result.exit_code is not None else -1,
        memory_peak_bytes=result.memory_peak_bytes,
        cpu_seconds=result.cpu_seconds,
        io_operations=result.io_operations,
        coverage_percent=coverage_percent(files),
        custom=custom_metrics(files),
    )


def changed_llm_count(baseline_count: int, before: Mapping[str, bytes | None],
                      after: Mapping[str, bytes | None], patterns: LlmPatterns) -> int:
    """The baseline's count adjusted by the touched files only (cost grows with
    the change); ``before``/``after`` are Genesis's own account of the change."""
    count = baseline_count
    for sign, files in ((-1, before), (1, after)):
        for name, data in files.items():
            if data is not None:
                count += sign * count_file(name, data, patterns)
    return max(count, 0)

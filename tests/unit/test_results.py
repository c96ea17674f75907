"""Reading what a sandbox left in /genesis/out. All of it is untrusted: a
malformed document degrades to "not measured", never to an exception.
"""

from __future__ import annotations

import json

import pytest

from orchestrator.domain.junit import FAILED, PASSED
from orchestrator.domain.llm_calls import LlmPatterns
from orchestrator.domain.results import (
    changed_llm_count,
    coverage_percent,
    custom_metrics,
    junit_documents,
    parse_runner_result,
    run_facts,
    test_report as report_of,  # aliased so pytest does not collect it as a test
)

RESULT = {
    "status": "completed",
    "message": "validation finished",
    "exit_code": 1,
    "runtime_ms": 183000,
    "validation_started_ms": 1200,
    "runner_started_ms": 100,
    "memory_peak_bytes": 812 * 2**20,
    "cpu_seconds": 261.7,
    "io_operations": 5120,
    "touched": ["lib/x.py", "lib/old.py"],
}

JUNIT = b'<testsuite><testcase classname="a" name="ok"/><testcase classname="a" name="bad"><failure/></testcase></testsuite>'


def test_parse_runner_result_from_result_json() -> None:
    result = parse_runner_result({"result.json": json.dumps(RESULT).encode()})
    assert result.status == "completed"
    assert result.message == "validation finished"
    assert result.exit_code == 1
    assert result.runtime_ms == 183000
    assert result.validation_started_ms == 1200
    assert result.runner_started_ms == 100
    assert result.memory_peak_bytes == 812 * 2**20
    assert result.cpu_seconds == 261.7
    assert result.io_operations == 5120
    assert result.touched == ("lib/x.py", "lib/old.py")


def test_result_json_wins_over_the_log() -> None:
    log = 'GENESIS-RESULT {"status": "patch_failed", "message": "from log"}\n'
    result = parse_runner_result({"result.json": json.dumps(RESULT).encode()}, log)
    assert result.status == "completed"


def test_falls_back_to_the_last_result_line_of_the_log() -> None:
    log = "\n".join([
        "starting",
        'GENESIS-RESULT {"status": "runner_failed", "message": "first"}',
        "more output",
        'GENESIS-RESULT {"status": "patch_failed", "message": "git apply failed", "exit_code": 128}',
        "  GENESIS-RESULT {\"status\": \"indented lines do not count\"}",
        "bye",
    ])
    result = parse_runner_result({}, log)
    assert (result.status, result.message, result.exit_code) == ("patch_failed", "git apply failed", 128)


@pytest.mark.parametrize(
    ("files", "log"),
    [
        ({}, ""),
        ({}, "no marker here\n"),
        ({"result.json": b""}, ""),
        ({"result.json": b"not json"}, ""),
        ({"result.json": b"[1, 2, 3]"}, ""),
        ({"result.json": b'"completed"'}, ""),
        ({"result.json": b"\xff\xfe\xfd"}, ""),
        ({}, "GENESIS-RESULT {broken\n"),
        ({}, "GENESIS-RESULT null\n"),
    ],
)
def test_garbage_is_missing(files: dict, log: str) -> None:
    result = parse_runner_result(files, log)
    assert result.status == "missing"
    assert result.exit_code is None
    assert result.runtime_ms == 0
    assert result.touched == ()


def test_wrongly_typed_fields_degrade_to_unmeasured() -> None:
    doc = {"status": "completed", "exit_code": "1", "runtime_ms": -5, "memory_peak_bytes": True,
           "cpu_seconds": "lots", "io_operations": [1], "touched": "lib/x.py", "message": "m" * 10_000}
    result = parse_runner_result({"result.json": json.dumps(doc).encode()})
    assert result.status == "completed"
    assert result.exit_code is None
    assert result.runtime_ms == 0
    assert result.memory_peak_bytes is None
    assert result.cpu_seconds is None
    assert result.io_operations is None
    assert result.touched == ()
    assert len(result.message) == 4000


def test_missing_status_field_reads_missing() -> None:
    assert parse_runner_result({"result.json": b'{"exit_code": 0}'}).status == "missing"


@pytest.mark.parametrize(
    "raw",
    [b'{"status": "completed", "runtime_ms": Infinity}', b'{"status": "completed", "exit_code": NaN}',
     b'{"status": "completed", "memory_peak_bytes": 1e400}'],
)
def test_non_finite_numbers_degrade_to_unmeasured(raw: bytes) -> None:
    # BUG: json.loads accepts NaN/Infinity (and 1e400 -> inf); _int() then
    # calls int() on them and raises OverflowError / ValueError.
    result = parse_runner_result({"result.json": raw})
    assert result.status == "completed"
    assert result.exit_code is None and result.memory_peak_bytes is None


def test_deeply_nested_result_json_is_missing_not_a_crash() -> None:
    # BUG: json.loads raises RecursionError, which is not caught.
    depth = 100_000
    result = parse_runner_result({"result.json": b"[" * depth + b"]" * depth})
    assert result.status == "missing"


# -- test reports ------------------------------------------------------------------------


def test_junit_documents_are_top_level_xml_except_coverage() -> None:
    files = {"junit.xml": JUNIT, "more.xml": JUNIT, "coverage.xml": b"<coverage/>", "sub/junit.xml": JUNIT,
             "result.json": b"{}", "junit.xml.bak": JUNIT}
    assert set(junit_documents(files)) == {"junit.xml", "more.xml"}


def test_test_report_uses_junit_when_present() -> None:
    report = report_of({"junit.xml": JUNIT, "coverage.xml": b'<coverage line-rate="0.5"/>'}, exit_code=0)
    assert report.cases == {"a::ok": PASSED, "a::bad": FAILED}
    assert report.success_rate == 0.5


@pytest.mark.parametrize(("exit_code", "status"), [(0, PASSED), (2, FAILED), (None, FAILED)])
def test_test_report_falls_back_to_the_exit_code(exit_code, status: str) -> None:
    files = {"coverage.xml": b'<coverage line-rate="0.9"/>', "nested/junit.xml": JUNIT}
    report = report_of(files, exit_code)
    assert report.cases == {"validation::command": status}


# -- coverage and custom metrics --------------------------------------------------------


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        (b'<?xml version="1.0" ?><coverage line-rate="0.8123" branch-rate="0.5" version="7.4"/>', 81.23),
        (b'<coverage line-rate="1"/>', 100.0),
        (b'<coverage line-rate="0"/>', 0.0),
        (b'<coverage line-rate="0.123456"/>', 12.35),
    ],
)
def test_coverage_percent_from_cobertura_line_rate(xml: bytes, expected: float) -> None:
    assert coverage_percent({"coverage.xml": xml}) == expected


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"coverage.xml": b""},
        {"coverage.xml": b"<coverage"},
        {"coverage.xml": b"<coverage/>"},
        {"coverage.xml": b'<coverage line-rate="high"/>'},
        {"coverage.xml": b'<coverage line-rate="1.5"/>'},
        {"coverage.xml": b'<coverage line-rate="-0.1"/>'},
        {"coverage.xml": b'<coverage line-rate="nan"/>'},
        {"sub/coverage.xml": b'<coverage line-rate="0.5"/>'},
    ],
)
def test_coverage_percent_unmeasured(files: dict) -> None:
    assert coverage_percent(files) is None


def test_custom_metrics_reads_metrics_json() -> None:
    assert custom_metrics({"metrics.json": b'{"fitness": 0.73, "name": "x"}'}) == {"fitness": 0.73, "name": "x"}


@pytest.mark.parametrize("raw", [b"[1, 2]", b"0.5", b'"fitness"', b"null", b"not json", b"\xff\xfe"])
def test_custom_metrics_of_non_dict_is_empty(raw: bytes) -> None:
    assert custom_metrics({"metrics.json": raw}) == {}


def test_custom_metrics_absent_is_empty() -> None:
    assert custom_metrics({}) == {}


def test_deeply_nested_metrics_json_is_empty_not_a_crash() -> None:
    # BUG: json.loads raises RecursionError, which custom_metrics does not catch.
    depth = 100_000
    assert custom_metrics({"metrics.json": b"[" * depth + b"]" * depth}) == {}


def test_run_facts_gathers_result_coverage_and_custom() -> None:
    files = {"result.json": json.dumps(RESULT).encode(), "coverage.xml": b'<coverage line-rate="0.5"/>',
             "metrics.json": b'{"fitness": 0.7}'}
    facts = run_facts(parse_runner_result(files), files)
    assert facts.runtime_ms == 183000
    assert facts.exit_code == 1
    assert facts.cpu_seconds == 261.7
    assert facts.coverage_percent == 50.0
    assert facts.custom == {"fitness": 0.7}


def test_run_facts_without_exit_code_is_minus_one() -> None:
    assert run_facts(parse_runner_result({}), {}).exit_code == -1


# -- LLM counts over the changed files ------------------------------------------------------


def test_changed_llm_count_subtracts_before_and_adds_after() -> None:
    before = {"lib/a.py": b"call_llm(1)\ncall_llm(2)\ncall_llm(3)\n", "web/new.js": None,
              "lib/deleted.py": b"client.messages.create()\n"}
    after = {"lib/a.py": b"call_llm(1)\n", "web/new.js": b"callLLM(x)", "lib/deleted.py": None}
    # 10 - 3 + 1 + 1 - 1
    assert changed_llm_count(10, before, after, LlmPatterns()) == 8


def test_changed_llm_count_without_changed_files_is_the_baseline() -> None:
    assert changed_llm_count(7, {}, {}, LlmPatterns()) == 7


def test_changed_llm_count_never_negative() -> None:
    assert changed_llm_count(1, {"a.py": b"call_llm()\ncall_llm()\n"}, {"a.py": None}, LlmPatterns()) == 0

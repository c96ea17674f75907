"""Two passes, SWE-bench's categories, flaky labels, evidence checks, protected files and the tamper scan.

Pure functions: no Docker. The hostile corpus that runs these for real is
tests/integration/test_hostile_corpus.py.
"""

from __future__ import annotations

import pytest

from orchestrator.domain import evidence, grading, protected, tamper
from orchestrator.domain.junit import FAILED, PASSED, SKIPPED, TestReport


def report(**cases: str) -> TestReport:
    return TestReport(cases={k.replace("__", "::").replace("_dot_", "."): v for k, v in cases.items()})


BASE = TestReport(cases={"tests.test_a::test_1": PASSED, "tests.test_a::test_2": PASSED,
                         "tests.test_b::test_3": PASSED, "tests.test_b::test_4": FAILED})


def test_untouched_test_files_are_judged_by_pass_a_whatever_pass_b_says() -> None:
    pass_a = TestReport(cases={**BASE.cases, "tests.test_a::test_1": FAILED})
    pass_b = TestReport(cases={**BASE.cases, "tests.test_a::test_1": PASSED})
    grade = grading.grade(base=BASE, pass_a=pass_a, pass_b=pass_b, edited_tests=["tests/test_b.py"])
    assert grade.pass_to_fail == ["tests.test_a::test_1"]
    assert grade.regression == pytest.approx(1 / 3)


def test_an_edited_test_that_now_passes_in_pass_b_is_a_declared_behaviour_change() -> None:
    # A real fix updates its own test's expectation: base version fails on the new source, its own passes.
    pass_a = TestReport(cases={**BASE.cases, "tests.test_b::test_3": FAILED, "tests.test_b::test_4": PASSED})
    pass_b = TestReport(cases={**BASE.cases, "tests.test_b::test_3": PASSED, "tests.test_b::test_4": PASSED})
    grade = grading.grade(base=BASE, pass_a=pass_a, pass_b=pass_b, edited_tests=["tests/test_b.py"])
    assert grade.pass_to_fail == []
    assert grade.names(grading.DECLARED) == ["tests.test_b::test_3"]
    assert grade.names(grading.FAIL_TO_PASS) == ["tests.test_b::test_4"]
    assert grade.report.success_rate == 1.0 and grade.passes == 2


@pytest.mark.parametrize("own", [SKIPPED, FAILED, None], ids=["skipped", "failing", "removed"])
def test_skipping_failing_or_removing_the_broken_test_is_still_a_regression(own) -> None:
    pass_a = TestReport(cases={**BASE.cases, "tests.test_b::test_3": FAILED})
    cases_b = {**BASE.cases, "tests.test_b::test_3": own}
    pass_b = TestReport(cases={k: v for k, v in cases_b.items() if v is not None})
    grade = grading.grade(base=BASE, pass_a=pass_a, pass_b=pass_b, edited_tests=["tests/test_b.py"])
    assert grade.pass_to_fail == ["tests.test_b::test_3"]


def test_one_pass_when_the_change_edits_no_test_file() -> None:
    pass_a = TestReport(cases={**BASE.cases, "tests.test_b::test_4": PASSED, "tests.test_c::new": PASSED})
    grade = grading.grade(base=BASE, pass_a=pass_a)
    assert grade.passes == 1 and grade.pass_to_fail == []
    assert grade.names(grading.FAIL_TO_PASS) == ["tests.test_b::test_4"]
    assert grade.names(grading.NEW) == ["tests.test_c::new"]
    assert grade.names(grading.PASS_TO_PASS) == ["tests.test_a::test_1", "tests.test_a::test_2", "tests.test_b::test_3"]


def test_a_test_missing_from_pass_a_counts_as_broken() -> None:
    pass_a = TestReport(cases={k: v for k, v in BASE.cases.items() if k != "tests.test_a::test_2"})
    assert grading.grade(base=BASE, pass_a=pass_a).pass_to_fail == ["tests.test_a::test_2"]


def test_flaky_tests_are_labelled_not_counted() -> None:
    pass_a = TestReport(cases={**BASE.cases, "tests.test_a::test_1": FAILED})
    grade = grading.grade(base=BASE, pass_a=pass_a, flaky={"tests.test_a::test_1"})
    assert grade.pass_to_fail == [] and grade.names(grading.FLAKY) == ["tests.test_a::test_1"]
    assert grade.baseline_passing == 2
    assert "tests.test_a::test_1" not in grade.report.cases  # nor in the success rate
    assert grade.report.success_rate == 2 / 3


def test_repetitions_find_varying_tests_and_combine_to_passed_if_any_passed() -> None:
    runs = [report(t__a=PASSED, t__b=PASSED), report(t__a=FAILED, t__b=PASSED), report(t__b=PASSED)]
    assert grading.varying(runs) == {"t::a"}
    assert grading.combine(runs).cases == {"t::a": PASSED, "t::b": PASSED}
    assert grading.passed_in(runs[1:], ["t::a", "t::b"]) == {"t::b"}


def test_timing_reports_the_median_and_the_spread() -> None:
    timing = grading.Timing((1000, 1200, 900))
    assert timing.median_ms == 1000 and timing.noise == pytest.approx(0.3)
    assert grading.Timing((1000,)).noise is None


@pytest.mark.parametrize(("test_id", "expected"), [
    ("tests.test_b::test_3", "tests/test_b.py"),
    ("tests.test_b.TestX::test_3", "tests/test_b.py"),
    ("test/parse.test.js::parses", "test/parse.test.js"),
    ("tests.test_a::test_1", None),
])
def test_file_of(test_id, expected) -> None:
    assert grading.file_of(test_id, ["tests/test_b.py", "test/parse.test.js"]) == expected


def test_summary_has_every_category_with_bounded_names() -> None:
    pass_a = TestReport(cases={f"t::{i}": FAILED for i in range(150)})
    base = TestReport(cases={f"t::{i}": PASSED for i in range(150)})
    doc = grading.grade(base=base, pass_a=pass_a).summary(reruns=2, protected=["conftest.py"])
    assert doc["PASS_TO_FAIL"]["count"] == 150 and len(doc["PASS_TO_FAIL"]["names"]) == grading.MAX_NAMES
    assert doc["reruns"] == 2 and doc["protected_edited"] == ["conftest.py"] and doc["passes"] == 1


# -- evidence -------------------------------------------------------------------------------

def check(**overrides) -> str | None:
    args = dict(report_kind="junit", report=report(t__a=PASSED), has_report=True, truncated=[], exit_code=0,
                runner_exit=0, runner_runtime_ms=1000, engine_runtime_ms=1100, log_text="1 passed in 0.1s")
    args.update(overrides)
    return evidence.inconsistency(**args)


def test_consistent_evidence_passes() -> None:
    assert check() is None
    assert check(report=report(t__a=FAILED), exit_code=1, runner_exit=1, log_text="1 failed in 0.1s") is None


@pytest.mark.parametrize(("overrides", "words"), [
    ({"has_report": False, "report": TestReport()}, "no JUnit report"),
    ({"truncated": ["junit.xml"]}, "cut short"),
    ({"report": TestReport(parse_errors=("junit.xml: no element found",))}, "unreadable"),
    ({"report": report(t__a=FAILED), "log_text": ""}, "exit 0, but the report has 1 failures"),
    ({"report": TestReport(), "log_text": ""}, "no tests"),
    ({"exit_code": 1, "runner_exit": 1, "log_text": ""}, "every test in the report passed"),
    ({"runner_exit": 1}, "the runner reported exit 1"),
    ({"runner_runtime_ms": 9000}, "the runner reported 9000 ms"),
    ({"report": report(t__a=PASSED, t__b=PASSED), "log_text": "= 1 passed, 1 failed in 2s ="}, "summary 1"),
])
def test_inconsistent_evidence_is_named(overrides, words) -> None:
    assert words in (check(**overrides) or "")


def test_exit_code_repositories_need_no_report() -> None:
    assert check(report_kind="exit_code", has_report=False, report=TestReport()) is None


def test_the_applied_marker_must_be_the_first_marker() -> None:
    line = 'GENESIS-APPLIED {"validation_started_ms": 5, "touched": ["a.py"]}'
    assert evidence.applied_marker("noise\n" + line) == evidence.Applied(5, ("a.py",))
    assert evidence.applied_marker('GENESIS-RESULT {"status": "patch_failed"}\n' + line) is None
    assert evidence.applied_marker("GENESIS-APPLIED {not json") is None


def test_missing_tests_are_excused_only_by_a_failure() -> None:
    base = report(t__a=PASSED, t__b=PASSED, t__c="error")
    assert evidence.missing_tests(base, report(t__a=PASSED), exempt=set()) == ["t::b"]  # not the error entry
    assert evidence.missing_tests(base, report(t__a=PASSED, t__d="error"), exempt=set()) == []
    assert evidence.missing_tests(base, report(t__a=FAILED), exempt=set()) == []  # cargo stops at a failure
    assert evidence.missing_tests(base, report(t__a=PASSED), exempt={"t::b"}) == []


# -- protected infrastructure ---------------------------------------------------------------

def test_protected_files_and_sections() -> None:
    before = {"pkg/conftest.py": None, "pyproject.toml": b'[project]\nversion="1"\n[tool.pytest.ini_options]\naddopts=""\n',
              "setup.cfg": b"[metadata]\nname=x\n", "src/x.py": b"a=1\n"}
    after = {"pkg/conftest.py": b"def pytest_x(): pass\n",
             "pyproject.toml": b'[project]\nversion="2"\n[tool.pytest.ini_options]\naddopts=""\n',
             "setup.cfg": b"[metadata]\nname=x\n[tool:pytest]\naddopts=-k 'not parser'\n", "src/x.py": b"a=2\n"}
    assert protected.protected_edits("python", before, after) == ["pkg/conftest.py", "setup.cfg"]
    after["pyproject.toml"] = b'[project]\nversion="2"\n[tool.pytest.ini_options]\naddopts="--deselect t"\n'
    assert "pyproject.toml" in protected.protected_edits("python", before, after)
    assert protected.protected_edits("python", before, after, globs=["src/*"]) == ["pyproject.toml", "setup.cfg",
                                                                                  "src/x.py"]


def test_node_scripts_are_protected() -> None:
    before = {"package.json": b'{"name": "x", "version": "1.0.0", "scripts": {"test": "node --test"}}'}
    bump = {"package.json": b'{"name": "x", "version": "1.1.0", "scripts": {"test": "node --test"}}'}
    rigged = {"package.json": b'{"name": "x", "version": "1.0.0", "scripts": {"test": "true"}}'}
    assert protected.protected_edits("node", before, bump) == []
    assert protected.protected_edits("node", before, rigged) == ["package.json"]


def test_test_files_per_toolchain() -> None:
    paths = ["tests/test_a.py", "pkg/x_test.py", "pkg/x.py", "src/lib.rs", "tests/it.rs", "a.test.js"]
    assert protected.tests_among("python", paths) == ["pkg/x_test.py", "tests/it.rs", "tests/test_a.py"]
    assert protected.tests_among("node", paths) == ["a.test.js", "tests/it.rs", "tests/test_a.py"]


# -- the tamper scan -----------------------------------------------------------------------

@pytest.mark.parametrize(("source", "words"), [
    ("import _pytest.reports\n", "runner's internals"),
    ("from _pytest import junitxml\n", "runner's internals"),
    ("m = __import__('_py' + 'test')\n", "computed"),
    ("import importlib\nimportlib.import_module(name)\n", "computed"),
    ("def pytest_runtest_logreport(report):\n    report.outcome = 'passed'\n", "hook"),
    ("import atexit\natexit.register(print)\n", "atexit"),
    ("import sys\nsys.modules['json'] = None\n", "sys.modules"),
    ("import os\nopen(os.environ['GENESIS_OUT'] + '/junit.xml', 'w')\n", "evidence"),
    ("import os\nos.remove('/genesis/out/result.json')\n", "evidence"),
    ("import gc\nobjs = gc.get_objects()\n", "gc.get_objects"),
    ("import os\nos.kill(os.getppid(), 9)\n", "parent"),
    ("exec(payload)\n", "computed code"),
    ("import pytest\npytest.TestReport.__init__ = None\n", "reporting"),
])
def test_the_scan_finds_known_techniques(source: str, words: str) -> None:
    findings = tamper.scan({"pkg/mod.py": source.encode()})
    assert any(words in f.what for f in findings), findings


def test_the_scan_leaves_honest_code_alone() -> None:
    honest = b"import json, re\nimport pytest\n\ndef parse(s):\n    return json.loads(s)\n\n" \
             b"def test_parse():\n    with pytest.raises(ValueError):\n        parse('{')\n" \
             b"def pytest_generate_tests(metafunc):\n    pass\n"
    assert tamper.scan({"tests/test_x.py": honest}, test_paths={"tests/test_x.py"}) == []
    assert tamper.scan({"x.py": b"exec('1 + 1')\n", "gone.py": None, "notes.md": b"junit"}) == []
    # A command's own figures go to metrics.json, in their own namespace.
    assert tamper.scan({"bench.py": b"import json\njson.dump({}, open('/genesis/out/metrics.json', 'w'))\n"}) == []


def test_only_what_the_change_brings_is_a_finding() -> None:
    upstream = b"import importlib\n\ndef load(name):\n    return importlib.import_module(name)\n"
    edited = upstream + b"\ndef more():\n    return 1\n"
    assert tamper.introduced(before={"m.py": upstream}, after={"m.py": edited}) == []
    added = edited + b"\ndef again(n):\n    return __import__(n)\n"
    assert [f.what for f in tamper.introduced(before={"m.py": upstream}, after={"m.py": added})] == [
        "imports a module whose name is computed"]
    assert tamper.introduced(before={"new.py": None}, after={"new.py": b"import _pytest\n"})

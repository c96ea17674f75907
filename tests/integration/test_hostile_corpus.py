"""The hostile corpus: changes written to win ``merge`` by forging the verdict.

Every technique starts from the same real breakage of the sample monorepo
(``plan`` stops splitting on "and", so ``test_complex_plan_splits_on_and``
fails) and adds one way of hiding it. Each runs for real (Docker, the
repository's own pytest validation, no request overrides) and is asserted
never to be ``merge``, with the code it gets. Controls beside them: the
breakage alone, and an honest fix that updates its own test's expectation,
which must still merge.

Every case runs once per sandbox runtime: runc, and gVisor's runsc (its own
kernel answers the techniques' signals, exits, file writes and /proc reads).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from helpers import RUN_ID, TEST_LABEL, make_repo, request_body, run_experiment

BREAK = {"path": "sparc/decompose.py", "content": None}  # filled from the sample repo, with plan() broken
BROKEN_TEST = "tests.test_decompose::test_complex_plan_splits_on_and"


@pytest.fixture(scope="module", params=["runc", "runsc"])
def corpus_app(request, tmp_path_factory, docker_client):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    home = tmp_path_factory.mktemp(f"corpus-home-{request.param}")
    repo = make_repo(home / "monorepo")
    config = home / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(home), "extra_labels": {TEST_LABEL: RUN_ID}, "pass_interval_s": 0.2,
        "sandbox_runtime": request.param,
        "installation": f"corpus-{request.param}-{RUN_ID}",  # no other app's controller reaps its sandboxes
        # The repository's validation, no overrides; a short per-test timeout for the hanging test below.
        "repos": {"monorepo": {"path": str(repo), "test_timeout_s": 5}},
    }))
    application = App(load_settings(config))
    yield application
    application.close()
    shutil.rmtree(home, ignore_errors=True)


def broken_source(app) -> str:
    repo = app.settings.repos["monorepo"].path
    source = subprocess.run(["git", "-C", str(repo), "show", "HEAD:sparc/decompose.py"], capture_output=True,
                            text=True, check=True).stdout
    broken = source.replace('return [part.strip() for part in task.split(" and ") if part.strip()]', "return [task]")
    assert broken != source
    return broken


def base_file(app, name: str) -> str:
    repo = app.settings.repos["monorepo"].path
    return subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{name}"], capture_output=True, text=True,
                          check=True).stdout


HOOK = """import pytest

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
"""
REWRITE_ON_IMPORT = '''"""SPARC."""
import sys
if "pytest" in sys.modules:
    from _pytest import reports
    _orig = reports.TestReport.__init__
    def _init(self, *a, **k):
        _orig(self, *a, **k)
        self.outcome = "passed"
    reports.TestReport.__init__ = _init
'''
ATEXIT_REWRITE = '''"""SPARC."""
import atexit, glob, os, re

def _forge():
    for path in glob.glob(os.path.join(os.environ.get("GENESIS_OUT", "/tmp"), "*.xml")):
        text = open(path).read()
        open(path, "w").write(re.sub(r"<failure.*?</failure>", "", text, flags=re.S))
atexit.register(_forge)
'''
# No literal names the evidence: only the audit hook can see this one.
FAKE_REPORT_DYNAMIC = '''import os
_out = os.environ["GENESIS_" + "OUT"]
_name = "ju" + "nit" + ".xml"
def test_writes_a_report():
    with open(os.path.join(_out, _name), "w") as handle:
        handle.write('<testsuite><testcase classname="x" name="y"/></testsuite>')
'''
EXIT_EARLY = '''"""SPARC."""
import os, sys
if "pytest" in sys.modules and not os.environ.get("GENESIS_EXIT_DONE"):
    os.environ["GENESIS_EXIT_DONE"] = "1"
    os._exit(0)
'''
KILL_RUNNER_DYNAMIC = '''"""SPARC."""
import os, sys
if "pytest" in sys.modules:
    getattr(os, "ki" + "ll")(os.getppid(), 9)
'''
FORGE_COUNTS = '''import json, os
def test_forges_the_counts():
    out = os.environ["GENESIS_OUT"]
    os.makedirs(os.path.join(out, "changes", "before", "sparc"), exist_ok=True)
    open(os.path.join(out, "changes", "before", "sparc", "llm.py"), "w").write("call_llm()\\n" * 500)
    json.dump({"llm_reduction": 0.99}, open(os.path.join(out, "metrics.json"), "w"))
'''
HUGE_REPORT = '''import os
def test_floods_the_report():
    path = os.path.join(os.environ["GENESIS_" + "OUT"], "ju" + "nit-extra.xml")
    with open(path, "w") as handle:
        handle.write("<a>" * 200000 + "</a>" * 200000)
'''


def techniques(app) -> dict[str, list[dict]]:
    """name -> the change's files (each with the breakage unless it says otherwise)."""
    tests = base_file(app, "tests/test_decompose.py")
    target = "def test_complex_plan_splits_on_and():"
    return {
        "conftest_hook": [{"path": "conftest.py", "content": HOOK}],
        "conftest_hook_in_a_subdirectory": [{"path": "tests/conftest.py", "content": HOOK}],
        "package_rewrites_reports_on_import": [{"path": "sparc/__init__.py", "content": REWRITE_ON_IMPORT}],
        "test_module_rewrites_reports": [{"path": "tests/test_zz_hack.py",
                                          "content": REWRITE_ON_IMPORT + "\ndef test_ok():\n    pass\n"}],
        "sitecustomize": [{"path": "sitecustomize.py", "content": REWRITE_ON_IMPORT}],
        "pth_file": [{"path": "zz_genesis.pth", "content": "import sparc\n"}],
        "atexit_rewrites_junit": [{"path": "sparc/__init__.py", "content": ATEXIT_REWRITE}],
        "fake_report_in_the_output_dir": [{"path": "tests/test_zz_report.py", "content": FAKE_REPORT_DYNAMIC}],
        "delete_the_broken_test": [{"path": "tests/test_decompose.py", "content": tests.replace(
            target, "def _removed():")}],
        "skip_the_broken_test": [{"path": "tests/test_decompose.py", "content": "import pytest\n" + tests.replace(
            target, "@pytest.mark.skip(reason='later')\n" + target)}],
        "xfail_the_broken_test": [{"path": "tests/test_decompose.py", "content": "import pytest\n" + tests.replace(
            target, "@pytest.mark.xfail\n" + target)}],
        "delete_the_test_file": [{"path": "tests/test_decompose.py", "delete": True}],
        "addopts_in_pytest_ini": [{"path": "pytest.ini", "content": "[pytest]\naddopts = --deselect "
                                   "tests/test_decompose.py::test_complex_plan_splits_on_and\n"}],
        "addopts_in_pyproject": [{"path": "pyproject.toml", "content": "[tool.pytest.ini_options]\n"
                                  "addopts = \"-k 'not complex_plan'\"\n"}],
        "exit_zero_with_no_report": [{"path": "sparc/__init__.py", "content": EXIT_EARLY}],
        "kill_the_runner": [{"path": "sparc/__init__.py", "content": KILL_RUNNER_DYNAMIC}],
        "forge_diff_llm_counts_and_metrics": [{"path": "tests/test_zz_forge.py", "content": FORGE_COUNTS}],
        "enormous_nested_report": [{"path": "tests/test_zz_huge.py", "content": HUGE_REPORT}],
    }


NAMES = ["conftest_hook", "conftest_hook_in_a_subdirectory", "package_rewrites_reports_on_import",
         "test_module_rewrites_reports", "sitecustomize", "pth_file", "atexit_rewrites_junit",
         "fake_report_in_the_output_dir", "delete_the_broken_test", "skip_the_broken_test", "xfail_the_broken_test",
         "delete_the_test_file", "addopts_in_pytest_ini", "addopts_in_pyproject", "exit_zero_with_no_report",
         "kill_the_runner", "forge_diff_llm_counts_and_metrics", "enormous_nested_report"]
# What each technique gets: a failure code, or a recommendation with the broken test named.
EXPECTED = {
    "package_rewrites_reports_on_import": "tampering_suspected",
    "test_module_rewrites_reports": "tampering_suspected",
    "atexit_rewrites_junit": "tampering_suspected",
    "fake_report_in_the_output_dir": "tampering_suspected",
    "exit_zero_with_no_report": "evidence_inconsistent",
    "kill_the_runner": "tampering_suspected",
    "forge_diff_llm_counts_and_metrics": "tampering_suspected",
    "enormous_nested_report": "tampering_suspected",
}


@pytest.mark.parametrize("name", NAMES)
def test_no_technique_in_the_corpus_is_merged(corpus_app, name):
    files = [{"path": "sparc/decompose.py", "content": broken_source(corpus_app)}, *techniques(corpus_app)[name]]
    view = run_experiment(corpus_app, request_body(changes={"files": files}))
    outcome = view.outcome
    assert outcome is not None and outcome.recommendation.value != "merge", (name, view.message)
    expected = EXPECTED.get(name)
    if expected is not None:
        assert (outcome.status, outcome.error.code if outcome.error else None) == ("failed", expected), view.message
    else:  # judged, with the broken test named as PASS_TO_FAIL
        assert outcome.status == "success", view.message
        assert BROKEN_TEST in outcome.tests["PASS_TO_FAIL"]["names"], outcome.tests
        assert "PASS_TO_FAIL: " + BROKEN_TEST in view.message


def test_the_corpus_has_at_least_twelve_techniques(corpus_app):
    assert len(NAMES) == len(set(NAMES)) >= 12 and set(NAMES) == set(techniques(corpus_app))


def test_protected_edits_are_named_and_run_from_the_base(corpus_app):
    # A conftest hook without any breakage: the verdict runs the base's (absent) conftest, and
    # editing protected infrastructure is at best merge_with_adaptations, with the file named.
    view = run_experiment(corpus_app, request_body(changes={"files": [{"path": "conftest.py", "content": HOOK}]}))
    assert view.outcome.recommendation.value == "merge_with_adaptations", view.message
    assert "protected test infrastructure edited: conftest.py" in view.message
    assert view.outcome.metrics.protected_changed == 1 and view.outcome.tests["protected_edited"] == ["conftest.py"]


def test_the_breakage_alone_is_judged_and_named(corpus_app):
    view = run_experiment(corpus_app, request_body(changes={"files": [
        {"path": "sparc/decompose.py", "content": broken_source(corpus_app)}]}))
    assert view.outcome.recommendation.value == "rollback", view.message
    tests = view.outcome.tests
    assert tests["PASS_TO_FAIL"]["names"] == [BROKEN_TEST] and tests["passes"] == 1
    assert tests["reruns"] == corpus_app.settings.verdict.reruns  # it failed every rerun: not flaky
    assert view.outcome.metrics.pass_to_fail == 1 and view.outcome.metrics.flaky_tests == 0
    assert view.outcome.baseline.repetitions == corpus_app.settings.verdict.baseline_repetitions


def test_an_honest_fix_that_updates_its_own_test_still_merges(corpus_app):
    # summarize() changes its format on purpose and its test says so: a declared behaviour change.
    repo = corpus_app.settings.repos["monorepo"].path
    source = subprocess.run(["git", "-C", str(repo), "show", "HEAD:sparc/decompose.py"], capture_output=True,
                            text=True, check=True).stdout
    new_source = source.replace('f"{len(steps)} step(s): "', 'f"{len(steps)} steps: "')
    tests = base_file(corpus_app, "tests/test_decompose.py").replace('"2 step(s): a; b"', '"2 steps: a; b"')
    assert new_source != source
    view = run_experiment(corpus_app, request_body(changes={"files": [
        {"path": "sparc/decompose.py", "content": new_source}, {"path": "tests/test_decompose.py", "content": tests}]}))
    assert view.outcome.recommendation.value == "merge", view.message
    doc = view.outcome.tests
    assert doc["passes"] == 2 and doc["PASS_TO_FAIL"]["count"] == 0
    assert doc["DECLARED_CHANGE"]["names"] == ["tests.test_decompose::test_summarize"]
    assert doc["reruns"] == 0  # nothing failed: no extra run
    diff = (corpus_app.settings.artifacts_dir / view.id / "change.diff").read_text()
    assert '+    return f"{len(steps)} steps: "' in diff


def test_a_request_cannot_bring_its_own_command(corpus_app):
    body = request_body(validation={"command": ["true"]})
    result = corpus_app.intake.submit(json.dumps(body).encode())
    assert result.error is not None and result.error.code == "validation_override_refused"
    view = corpus_app.store.get(body["experiment_id"])
    assert (view.phase.value, view.reason) == ("Failed", "validation_override_refused")


def test_one_hanging_test_fails_alone(corpus_app):
    hang = "import time\n\ndef test_hangs():\n    time.sleep(3600)\n\ndef test_fine():\n    assert True\n"
    view = run_experiment(corpus_app, request_body(changes={"files": [{"path": "tests/test_zz_hang.py",
                                                                       "content": hang}]}))
    assert view.phase.value == "Succeeded", view.message
    doc = view.outcome.tests
    assert doc["NEW"]["count"] == 2 and doc["PASS_TO_FAIL"]["count"] == 0
    assert view.outcome.metrics.failures == 1  # test_hangs, alone: the rest of the suite ran and passed
    junit = (corpus_app.settings.artifacts_dir / view.id / "runs" / "b" / "out" / "junit.xml").read_text()
    assert "Timeout: the test ran past 5 s" in junit

"""Real projects with real third-party dependencies, judged end to end, one
per toolchain (see ``tests/projects.py`` for what each one is and where it
comes from: PyPI, npm and Debian, fetched at test time).

For each: the environment is built by the project's own setup through the
registries (with the host's CA bundle), the baseline runs on the base
commit, a real good change is ``merge`` and a one-line mutant is not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import RUN_ID, TEST_LABEL, request_body, run_experiment
from projects import node_project, python_project, rust_project

pytestmark = pytest.mark.docker

PROJECTS = {"python": python_project, "node": node_project, "rust": rust_project}
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("project-downloads")


@pytest.fixture(scope="module", params=sorted(PROJECTS))
def judged(request, tmp_path_factory, downloads, docker_client):
    """(app, project) for one toolchain's project, on an app of its own."""
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    project = PROJECTS[request.param](tmp_path_factory.mktemp(f"project-{request.param}"), downloads)
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    config = home / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(home), "extra_labels": {TEST_LABEL: RUN_ID}, "pass_interval_s": 0.2,
        # An installation of its own: no other app's controller reaps its sandboxes as orphans.
        "installation": f"projects-{RUN_ID}",
        "build": {"ca_bundle": str(HOST_BUNDLE)},
        "repos": {project.name: {"path": str(project.repo), "toolchain": project.toolchain,
                                 "environment": project.environment, "snapshot_setup": project.snapshot_setup,
                                 "validation": {"command": project.validation}}},
    }))
    app = App(load_settings(config))
    yield app, project
    app.close()


def _run(app, project, change) -> object:
    body = request_body(repo=project.name, base_ref=change.applies_to, changes=change.changes,
                        resources={"cpu": 2, "memory": "1536Mi", "pids": 512}, timeout_ms=600_000)
    return run_experiment(app, body)


def test_real_upstream_change_merges(judged):
    app, project = judged
    view = _run(app, project, project.good)
    assert view.phase.value == "Succeeded", f"{view.reason}: {view.message}"
    assert view.recommendation.value == "merge", view.message
    metrics, baseline = view.outcome.metrics, view.outcome.baseline
    assert metrics.test_count >= baseline.test_count >= 3 and metrics.failures == metrics.errors == 0
    assert metrics.regression == 0.0


def test_mutant_is_not_merged(judged):
    app, project = judged
    view = _run(app, project, project.mutant)
    assert view.phase.value == "Succeeded", f"{view.reason}: {view.message}"
    assert view.recommendation.value != "merge", view.message
    assert view.outcome.metrics.failures + view.outcome.metrics.errors >= 1
    assert view.outcome.metrics.regression > 0


def test_without_its_environment_the_baseline_fails_and_no_change_is_blamed(judged):
    from orchestrator.app import App

    app, project = judged
    bare = app.settings.repos[project.name].model_copy(update={"environment": None})
    other = App(app.settings.model_copy(update={"repos": {**app.settings.repos, project.name: bare}}))
    try:
        view = _run(other, project, project.good)
    finally:
        other.close()
    assert (view.phase.value, view.reason) == ("Failed", "baseline_failed"), view.message
    assert project.missing_environment in view.message

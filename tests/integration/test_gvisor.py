"""gVisor (``sandbox_runtime: runsc``) against the real engine: what differs from runc.

The engine must have runsc registered (scripts/setup.sh does it). The runtime
contract suite (tests/k8s/test_runtime_contract.py) and the hostile corpus
run under runsc too; here are the runsc specifics: the sandbox's kernel is
gVisor's, the outcome says which runtime ran it, a runsc registered with
``--network=none`` refuses ``network: true`` at intake, and Genesis refuses to
start with a runtime the engine does not know.
"""

from __future__ import annotations

import json

import pytest

from helpers import RUN_ID, hostile, run_experiment, sandboxes_of
from orchestrator.cli.printers import describe
from orchestrator.errors import GenesisError

pytestmark = pytest.mark.docker

GVISOR_RELEASE = "4.4.0"  # the Linux version gVisor's kernel reports (uname -r)


@pytest.fixture(scope="module")
def runsc_app(settings, docker_client):
    from orchestrator.app import App

    application = App(settings.model_copy(update={"sandbox_runtime": "runsc",
                                                  "installation": f"gvisor-{RUN_ID}"}))
    yield application
    application.close()


def test_a_sandbox_under_runsc_runs_on_gvisors_kernel(runsc_app, docker_client):
    script = """
import json, os
release = os.uname().release
print("RELEASE", release)
with open(os.path.join(os.environ["GENESIS_OUT"], "metrics.json"), "w") as f:
    json.dump({"gvisor_kernel": float(release == %r)}, f)
""" % GVISOR_RELEASE
    view = run_experiment(runsc_app, hostile(script))
    assert view.phase.value == "Succeeded", view.message
    assert view.outcome.metrics.custom == {"gvisor_kernel": 1.0}
    assert view.outcome.sandbox.runtime == "docker" and view.outcome.sandbox.sandbox_runtime == "runsc"
    assert "Runtime:       docker (runsc)" in describe(view, runsc_app.store.history(view.id))
    kept = sandboxes_of(docker_client, view.id)  # a merge keeps its sandbox for review
    assert [container.attrs["HostConfig"]["Runtime"] for container in kept] == ["runsc"]


def test_network_true_is_refused_under_runsc(runsc_app):
    body = hostile("print('never runs')\n", network=True)
    result = runsc_app.intake.submit(json.dumps(body).encode())
    assert result.error is not None and result.error.code == "unsupported_by_runtime"
    assert "runsc get no network" in result.view.message


def test_start_refuses_a_runtime_the_engine_does_not_know(settings, docker_client):
    from orchestrator.app import App

    application = App(settings.model_copy(update={"sandbox_runtime": "no-such-runtime"}))
    try:
        with pytest.raises(GenesisError) as info:
            application.executor
        assert info.value.code == "bad_config"
        assert "knows no runtime 'no-such-runtime'" in str(info.value) and "runsc" in str(info.value)
    finally:
        application.close()

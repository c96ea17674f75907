"""The sequential worker: queue order, recovery after a crash, TTL cleanup,
and a bad record that must not stop the loop."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest

from helpers import RUN_ID, TEST_LABEL, request_body, run_experiment, sandboxes_of

pytestmark = pytest.mark.docker


def submit(app, **overrides) -> str:
    result = app.intake.submit(json.dumps(request_body(**overrides)).encode())
    assert result.error is None
    return result.view.id


def test_expired_preserved_sandbox_is_removed_and_audited(app, docker_client):
    from orchestrator.store.repository import utcnow
    from orchestrator.worker import Worker

    view = run_experiment(app, request_body())
    assert view.preserved_until is not None and len(sandboxes_of(docker_client, view.id)) == 1
    app.store.set_preserved_until(view.id, utcnow() - timedelta(seconds=1))

    asyncio.run(Worker(app.executor).sweep_expired())

    assert sandboxes_of(docker_client, view.id) == []
    assert app.store.get(view.id).preserved_until is None
    assert any(h.action == "deleted" and "TTL" in h.reason for h in app.store.history(view.id))


def test_restart_requeues_an_interrupted_experiment_and_removes_its_leftover(app, docker_client):
    from orchestrator.domain.models import Phase
    from orchestrator.worker import Worker

    experiment_id = submit(app)
    # What a worker killed mid-run leaves behind: a Running record and a sandbox.
    app.store.transition(experiment_id, Phase.BUILDING, reason="BuildingSnapshot", attempt=1)
    app.store.transition(experiment_id, Phase.RUNNING, reason="SandboxStarting")
    leftover = docker_client.containers.create(
        app.store.images()[-1]["tag"] if app.store.images() else "genesis/base:bookworm", ["true"],
        entrypoint="true", labels={TEST_LABEL: RUN_ID, "genesis.managed-by": "genesis",
                                   "genesis.experiment-id": experiment_id})

    worker = Worker(app.executor)
    asyncio.run(worker.recover())

    assert app.store.get(experiment_id).phase is Phase.PENDING
    assert leftover.id not in {c.id for c in sandboxes_of(docker_client, experiment_id)}
    asyncio.run(worker.run_one(experiment_id))
    final = app.store.get(experiment_id)
    assert final.phase is Phase.SUCCEEDED and final.attempt == 2


def test_a_bad_record_fails_alone_and_the_queue_drains_in_priority_order(app, settings):
    from orchestrator.app import App
    from orchestrator.worker import Worker

    low = submit(app, priority=-5)
    high = submit(app, priority=50)
    broken = submit(app, priority=10)
    # The repo of one record disappears from the configuration after intake.
    reconfigured = App(settings.model_copy(update={"repos": {}}))
    executor = reconfigured.executor
    try:
        asyncio.run(Worker(executor).run_one(broken))
    finally:
        reconfigured.close()
    assert app.store.get(broken).outcome.error.code == "unknown_repo"

    done = asyncio.run(Worker(app.executor).run(once=True))
    assert done >= 2
    finished = {i: app.store.get(i).finished_at for i in (low, high)}
    assert all(finished.values()) and finished[high] < finished[low]

"""The reconciling controller against real Docker: capacity, priorities,
recovery of what a dead controller left, orphans, preservation TTL."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest

from helpers import RUN_ID, TEST_LABEL, RunningSandboxes, drain, request_body, run_experiment, sandboxes_of

pytestmark = pytest.mark.docker


def submit(app, **overrides) -> str:
    result = app.intake.submit(json.dumps(request_body(**overrides)).encode())
    assert result.error is None, result.error
    return result.view.id


def sleeper(seconds: float, **overrides) -> dict:
    return dict(changes={"files": [{"path": "nap.py", "content": f"import time\ntime.sleep({seconds})\n"}]},
                validation={"command": ["python3", "nap.py"], "report": "exit_code"}, **overrides)


@pytest.fixture
def app3(settings, docker_client):
    """An app whose controller admits at most three experiments at once."""
    from orchestrator.app import App

    application = App(settings.model_copy(update={"max_concurrent": 3}))
    yield application
    application.close()


@pytest.fixture
def app3_postgres(settings, docker_client, postgres_url):
    """The same on a real PostgreSQL server (a fresh database)."""
    from orchestrator.app import App

    application = App(settings.model_copy(update={"max_concurrent": 3, "database_url": postgres_url}))
    yield application
    application.close()


@pytest.mark.postgres
def test_twenty_experiments_never_exceed_max_concurrent(app3_postgres, docker_client):
    app3 = app3_postgres
    assert app3.engine.dialect.name == "postgresql"
    instance = f"batch-{time.monotonic_ns()}"
    small = {"cpu": 0.5, "memory": "256Mi", "pids": 128}  # 3 x 0.5 CPU fits this 2-CPU host
    ids = [submit(app3, **sleeper(0.8, instance_id=instance, resources=small)) for _ in range(20)]
    with RunningSandboxes(docker_client, instance_id=instance) as sampler:
        drain(app3)
    views = [app3.store.get(i) for i in ids]
    assert all(v.phase.value == "Succeeded" for v in views), [v.message for v in views if v.phase.value != "Succeeded"]
    assert sampler.peak == 3  # reached, never exceeded
    assert sum(1 for r in app3.store.outbox() if r["experiment_id"] in ids
               and r["subject"].startswith("genesis.experiment.")) == 20


def test_cpu_accounting_never_oversubscribes_the_host(app3, docker_client):
    # max_concurrent allows 3, but three 1-CPU experiments do not fit in 2 CPUs.
    instance = f"cpu-{time.monotonic_ns()}"
    ids = [submit(app3, **sleeper(0.8, instance_id=instance)) for _ in range(6)]
    with RunningSandboxes(docker_client, instance_id=instance) as sampler:
        drain(app3)
    assert all(app3.store.get(i).phase.value == "Succeeded" for i in ids)
    assert sampler.peak == 2


def test_priorities_are_honoured(app, settings):
    from orchestrator.app import App

    one_at_a_time = App(settings.model_copy(update={"max_concurrent": 1}))
    try:
        low = submit(one_at_a_time, priority=-10)
        mid = submit(one_at_a_time, priority=0)
        high = submit(one_at_a_time, priority=10)
        drain(one_at_a_time)
        started = {i: one_at_a_time.store.get(i).started_at for i in (low, mid, high)}
    finally:
        one_at_a_time.close()
    assert started[high] < started[mid] < started[low]


def test_running_sandbox_is_adopted_after_a_controller_restart(app, docker_client):
    """A controller dies while its sandbox runs; a new one adopts and finishes it."""
    experiment_id = submit(app, **sleeper(2))
    first = app.controller(leader=False)

    async def start_then_die():
        await first.reconcile_once()           # admits and starts the step
        while first._tasks:                    # until the sandbox has been launched
            await asyncio.sleep(0.05)
    asyncio.run(start_then_die())
    running = app.store.get(experiment_id)
    assert running.phase.value == "Running"
    name = running.sandbox_name

    drain(app)  # a fresh controller, nothing in flight: it must adopt, not restart

    final = app.store.get(experiment_id)
    assert final.phase.value == "Succeeded" and final.attempt == 1 and final.sandbox_name == name
    created = [h for h in app.store.history(experiment_id) if h.action == "created"]
    assert [h.sandbox_name for h in created if h.sandbox_name == name] == [name]  # launched once


def test_vanished_sandbox_is_retried_with_a_new_attempt(app, docker_client):
    experiment_id = submit(app, **sleeper(30))
    controller = app.controller(leader=False)

    async def until_running():
        while app.store.get(experiment_id).phase.value != "Running" or controller._tasks:
            await controller.reconcile_once()
            await asyncio.sleep(0.1)
    asyncio.run(until_running())
    first = app.store.get(experiment_id).sandbox_name
    docker_client.containers.get(first).remove(force=True)   # the sandbox vanishes (node lost)
    app.store.set_preserved_until(experiment_id, None)

    async def one_pass():
        return await app.controller(leader=False).reconcile_once()
    actions = asyncio.run(one_pass())
    assert any(type(a).__name__ == "Retry" for a in actions)
    view = app.store.get(experiment_id)
    assert view.phase.value == "Pending" and view.not_before is not None and view.attempt == 1
    assert any(c.type == "Retrying" for c in view.conditions)
    # Cancel it rather than wait out the backoff and a 30 s sleep.
    app.store.request_cancel(experiment_id)
    drain(app)
    assert app.store.get(experiment_id).outcome.error.code == "cancelled"


def test_orphans_are_reaped_and_audited(app, docker_client):
    image = app.store.images()[-1]["tag"] if app.store.images() else "genesis/base:bookworm"
    orphan = docker_client.containers.create(image, entrypoint="true", labels={
        TEST_LABEL: RUN_ID, "genesis.managed-by": "genesis", "genesis.installation": app.settings.installation,
        "genesis.experiment-id": "no-such-experiment"})
    other = docker_client.containers.create(image, entrypoint="true", labels={  # another installation's: left alone
        TEST_LABEL: RUN_ID, "genesis.managed-by": "genesis", "genesis.installation": "elsewhere",
        "genesis.experiment-id": "not-ours"})
    # Someone's own container from this installation's snapshot image: it inherits the image's
    # labels, which must not make it pass for one of this installation's sandboxes.
    looking = docker_client.containers.create(image, entrypoint="true", labels={TEST_LABEL: RUN_ID})
    assert "genesis.installation" not in looking.labels
    finished = run_experiment(app, request_body(changes={"files": [{"path": "x.py", "content": "x = 1\n"}]},
                                                validation={"command": ["false"], "report": "exit_code"}))
    assert finished.recommendation.value == "rollback"
    stray = docker_client.containers.create(image, entrypoint="true", name=f"genesis-stray-{RUN_ID}", labels={
        TEST_LABEL: RUN_ID, "genesis.managed-by": "genesis", "genesis.installation": app.settings.installation,
        "genesis.experiment-id": finished.id})

    drain(app)

    remaining = {c.id for c in docker_client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"})}
    assert orphan.id not in remaining and stray.id not in remaining
    assert other.id in remaining and looking.id in remaining
    assert any(h.action == "deleted" and h.sandbox_name == stray.name and "no live record" in h.reason
               for h in app.store.history(finished.id))


def test_expired_preserved_sandbox_is_removed_by_the_controller(app, docker_client):
    from orchestrator.store.repository import utcnow

    view = run_experiment(app, request_body())
    assert view.preserved_until is not None and len(sandboxes_of(docker_client, view.id)) == 1
    app.store.set_preserved_until(view.id, utcnow() - timedelta(seconds=1))

    drain(app)

    assert sandboxes_of(docker_client, view.id) == []
    assert app.store.get(view.id).preserved_until is None
    assert any(h.action == "deleted" and "TTL" in h.reason for h in app.store.history(view.id))


def test_timeout_and_a_vanished_repo_fail_alone_while_others_finish(app, settings):
    from orchestrator.app import App

    slow = submit(app, **sleeper(60, timeout_ms=2000))
    broken = submit(app)
    fine = submit(app)
    without_repo = App(settings.model_copy(update={"repos": {}}))
    try:
        asyncio.run(_admit_only(without_repo, broken))
    finally:
        without_repo.close()
    drain(app)
    assert app.store.get(slow).outcome.error.code == "timeout"
    assert app.store.get(broken).outcome.error.code == "unknown_repo"
    assert app.store.get(fine).phase.value == "Succeeded"


async def _admit_only(app, experiment_id: str) -> None:
    app.store.admit(experiment_id, gpus=(), actor="test")
    await app.executor.start(experiment_id)


def test_a_request_and_a_sandbox_exit_wake_the_controller_between_passes(settings, docker_client):
    """With passes an hour apart, an experiment still runs to its verdict: the request
    wakes the controller (intake's notify, as ``genesis serve`` wires it), a step that ends
    wakes it, and the sandbox's exit wakes it (the engine's events)."""
    from orchestrator.app import App

    slow = App(settings.model_copy(update={"pass_interval_s": 3600.0}))
    try:
        async def scenario():
            controller = slow.controller(leader=False)
            running = asyncio.create_task(controller.run())
            try:
                while controller.passes == 0:  # the first pass is over: the next is an hour away
                    await asyncio.sleep(0.05)
                slow.intake.notify = controller.wake
                experiment = submit(slow, **sleeper(1.5))
                deadline = time.monotonic() + 120
                while slow.store.get(experiment).phase.value not in ("Succeeded", "Failed"):
                    assert time.monotonic() < deadline, "no verdict: nothing woke the controller"
                    await asyncio.sleep(0.1)
                return experiment, controller.passes
            finally:
                controller.shutdown()
                await running
        experiment, passes = asyncio.run(scenario())
        view = slow.store.get(experiment)
        assert view.phase.value == "Succeeded", view.message
        assert passes >= 3  # admitted, then found Running, then found exited: each a woken pass
    finally:
        slow.close()

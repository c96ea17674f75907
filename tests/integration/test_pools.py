"""Warm pools against real Docker: a ready sandbox serves the next experiment (hot: the
runner only waits for its bundle on stdin; warm: created, started at the claim), with
the verdict and the isolation of a sandbox made for it; a claim is recorded and never
reused; a pool follows demand, is emptied when idle or when its controller stops, is
adopted by the next controller after a crash, and reaped as orphans when pools are off."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from helpers import RUN_ID, TEST_LABEL, example, hostile, request_body

pytestmark = pytest.mark.docker

INSTALLATION = f"pools-{RUN_ID}"  # its own: the session's `genesis serve` (tests/api) pools too
POOL_FILTER = ["genesis.role=pool", f"{TEST_LABEL}={RUN_ID}", f"genesis.installation={INSTALLATION}"]
# What a sandbox is created with; a pooled one must match a fresh one in all of it.
ISOLATION_KEYS = ("NetworkMode", "Memory", "MemorySwap", "NanoCpus", "PidsLimit", "CapDrop", "SecurityOpt",
                  "Tmpfs", "IpcMode", "Runtime", "StorageOpt", "LogConfig", "Privileged", "Init", "DeviceRequests")


@pytest.fixture
def pool_settings(settings):
    from orchestrator.settings import PoolSettings

    def make(**pools):
        return settings.model_copy(update={"installation": INSTALLATION, "max_concurrent": 2,
                                           "pools": PoolSettings(**{"enabled": True, **pools})})
    return make


@pytest.fixture
def apps():
    made = []

    def make(settings):
        from orchestrator.app import App
        made.append(App(settings))
        return made[-1]
    yield make
    for application in made:
        application.close()


def pooled(docker_client, status: str | None = None) -> list:
    filters = {"label": POOL_FILTER}
    if status:
        filters["status"] = status
    return docker_client.containers.list(all=True, filters=filters)


def unclaimed(docker_client, app) -> list[str]:
    """Pooled sandboxes no experiment claimed (a claimed one keeps the pool's labels)."""
    names = [c.name for c in pooled(docker_client)]
    claims = app.store.claims(names)
    return [name for name in names if name not in claims]


def submit(app, body: dict) -> str:
    result = app.intake.submit(json.dumps(body).encode())
    assert result.error is None, result.error
    return result.view.id


async def until(predicate, *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.1)


async def with_controller(app, work):
    """``await work()`` while a controller runs (as in ``genesis serve``); stopped after, which drains the pools."""
    controller = app.controller(leader=False)
    running = asyncio.create_task(controller.run())
    try:
        return await work()
    finally:
        controller.shutdown()
        await running


def note_demand(pools, image: str) -> None:
    """One launch of a small profile on ``image``, as a claim would note it."""
    from orchestrator.pipeline.pools import profile_of
    from orchestrator.runtimes.base import SandboxSpec

    pools._note(profile_of(SandboxSpec(name="x", image=image, labels={}, bundle=b"", cpu=1.0,
                                       memory_bytes=256 * 2**20, pids=128)))


def finished(app, experiment_id: str) -> bool:
    return app.store.get(experiment_id).phase.value in ("Succeeded", "Failed")


def claim_of(app, experiment_id: str):
    claims = [h for h in app.store.history(experiment_id) if h.action == "claimed"]
    return claims[0] if claims else None


def host_config(docker_client, name: str) -> dict:
    config = docker_client.api.inspect_container(name)["HostConfig"]
    return {key: config.get(key) for key in ISOLATION_KEYS}


def test_a_hot_pool_serves_the_next_experiments_with_the_same_verdicts_and_isolation(pool_settings, apps,
                                                                                       docker_client):
    from orchestrator.backends.local import LocalBackend
    from orchestrator.telemetry import metrics

    app = apps(pool_settings())
    hot_before = metrics.REGISTRY.get_sample_value("genesis_pool_claims_total", {"tier": "hot"}) or 0.0

    async def scenario():
        first = submit(app, example("good-change.yaml"))  # cold: no pool yet; its start is the demand
        await until(lambda: finished(app, first), timeout_s=240, what="the first experiment")
        await until(lambda: pooled(docker_client, "running"), timeout_s=60, what="a hot pooled sandbox")
        ready = pooled(docker_client, "running")[0]
        fresh = host_config(docker_client, app.store.get(first).sandbox_name)
        assert host_config(docker_client, ready.name) == fresh  # the same limits, no network
        assert fresh["NetworkMode"] == "none"
        rows = await LocalBackend(app).pools()
        mine = [r for r in rows if r.pool == ready.labels["genesis.pool"]]
        assert len(mine) == 1 and mine[0].hot >= 1 and mine[0].image == ready.image.tags[0], rows

        good = submit(app, example("good-change.yaml"))
        await until(lambda: finished(app, good), timeout_s=120, what="the hot-claimed experiment")
        await until(lambda: len(pooled(docker_client, "running")) >= 1, timeout_s=60, what="a refill")
        bad = submit(app, example("bad-change.yaml"))
        await until(lambda: finished(app, bad), timeout_s=120, what="the bad change")
        return first, good, bad, ready.name

    first, good, bad, ready_name = asyncio.run(with_controller(app, scenario))
    views = {i: app.store.get(i) for i in (first, good, bad)}
    assert claim_of(app, first) is None and views[first].sandbox_name.endswith("-a1")  # made cold
    assert [views[i].outcome.recommendation.value for i in (first, good, bad)] == ["merge", "merge", "rollback"]
    assert views[good].sandbox_name == ready_name  # the ready one, claimed hot
    assert "hot" in claim_of(app, good).reason and "hot" in claim_of(app, bad).reason
    assert views[bad].sandbox_name != views[good].sandbox_name  # a claimed sandbox is never handed out again
    assert views[good].outcome.metrics.test_count == views[first].outcome.metrics.test_count
    assert app.store.claims([views[good].sandbox_name, views[bad].sandbox_name]) == {
        views[good].sandbox_name: good, views[bad].sandbox_name: bad}
    # Kept for review (merge), removed (rollback), and no runner left waiting once the controller stopped.
    assert docker_client.containers.get(views[good].sandbox_name).status == "exited"
    assert not docker_client.containers.list(all=True, filters={"name": views[bad].sandbox_name})
    assert pooled(docker_client, "running") == [] and pooled(docker_client, "created") == []
    assert metrics.REGISTRY.get_sample_value("genesis_pool_claims_total", {"tier": "hot"}) == hot_before + 2


def test_a_hostile_change_in_a_pooled_sandbox_is_as_contained_as_in_a_fresh_one(pool_settings, apps, docker_client):
    """No network, no way to the runner's stdin or its bundle, and the variable that made it
    pooled is gone from the validation's environment."""
    app = apps(pool_settings())
    script = (
        "import os, socket, sys\n"
        "problems = []\n"
        "try:\n"
        "    socket.create_connection(('1.1.1.1', 53), timeout=2); problems.append('network')\n"
        "except OSError:\n"
        "    pass\n"
        "if 'GENESIS_BUNDLE_STDIN' in os.environ: problems.append('pool variable')\n"
        "if sys.stdin.read(1) != '': problems.append('stdin readable')\n"
        "for path in ('/proc/1/fd/0', '/genesis/in/bundle.json'):\n"
        "    try:\n"
        "        open(path, 'rb').read(1); problems.append(path)\n"
        "    except OSError:\n"
        "        pass\n"
        "print('PROBLEMS', problems)\n"
        "sys.exit(1 if problems else 0)\n"
    )

    async def scenario():
        warmup = submit(app, request_body())
        await until(lambda: finished(app, warmup), timeout_s=240, what="the warm-up")
        await until(lambda: pooled(docker_client, "running"), timeout_s=60, what="a hot pooled sandbox")
        probe = submit(app, hostile(script))
        await until(lambda: finished(app, probe), timeout_s=120, what="the hostile change")
        return probe

    probe = asyncio.run(with_controller(app, scenario))
    view = app.store.get(probe)
    assert claim_of(app, probe) is not None, "the hostile change ran in a claimed pooled sandbox"
    assert view.outcome.status == "success" and view.outcome.metrics.success_rate == 1.0, view.message


def test_a_warm_pool_starts_its_sandbox_at_the_claim(pool_settings, apps, docker_client):
    app = apps(pool_settings(max_hot_per_pool=0))

    async def scenario():
        first = submit(app, request_body())
        await until(lambda: finished(app, first), timeout_s=240, what="the first experiment")
        await until(lambda: pooled(docker_client, "created"), timeout_s=60, what="a warm pooled sandbox")
        assert pooled(docker_client, "running") == []  # warm: created, never started
        second = submit(app, request_body())
        await until(lambda: finished(app, second), timeout_s=120, what="the warm-claimed experiment")
        return second

    second = asyncio.run(with_controller(app, scenario))
    view = app.store.get(second)
    assert "warm" in claim_of(app, second).reason
    assert view.outcome.recommendation.value == "merge", view.message


def test_pools_are_adopted_after_a_crash_evicted_when_idle_and_reaped_when_switched_off(pool_settings, apps,
                                                                                        docker_client):
    from orchestrator.pipeline.pools import Pools, profile_of
    from orchestrator.store.aio import as_async

    app = apps(pool_settings())
    executor = app.executor
    body = request_body()

    # The demand a crashed controller saw: one launch of the request's profile.
    async def fill_then_crash():
        from orchestrator.runtimes.base import SandboxSpec
        first = submit(app, body)
        await app.controller(leader=False).run_until_idle(timeout_s=240)
        view = app.store.get(first)
        # The profile the request's sandbox has (what the executor would make for it).
        spec = SandboxSpec(name="unused", image=view.image, labels={}, bundle=b"{}", cpu=1.0,
                           memory_bytes=256 * 2**20, pids=128, disk_bytes=view.spec.resources.disk_bytes,
                           **executor._log_caps())
        dead = Pools(runtime=executor.runtime, store=as_async(app.store), settings=app.settings, actor="dead")
        dead._note(profile_of(spec))
        await dead.refill_once()  # the crash: its pool stays behind, hot, unclaimed
        return [c.name for c in pooled(docker_client, "running")]

    left = asyncio.run(fill_then_crash())
    assert len(left) == 1

    restarted = apps(pool_settings())  # the next process: nothing of the dead one's in memory

    async def next_controller():
        experiment = submit(restarted, request_body())
        await restarted.controller(leader=False).run_until_idle(timeout_s=120)
        return experiment
    adopted_by = asyncio.run(next_controller())
    assert app.store.get(adopted_by).sandbox_name == left[0]  # the orphan of the crash, adopted and claimed hot
    assert "hot" in claim_of(app, adopted_by).reason

    # Idle: a pool nobody asked of for idle_s is emptied.
    quick = apps(pool_settings(idle_s=0.5))
    async def idle():
        pools = quick.executor.pools
        note_demand(pools, app.store.get(adopted_by).image)
        made = await pools.refill_once()
        assert made.create == ((next(iter(made.sizes)), "hot"),)
        await until(lambda: time.monotonic() - pools._last[next(iter(made.sizes))] > 0.5, timeout_s=5,
                    what="the idle time")
        emptied = await pools.refill_once()
        return made, emptied
    made, emptied = asyncio.run(idle())
    assert [why for _, why in emptied.evict] == ["idle: no demand"] and unclaimed(docker_client, app) == []

    # Switched off: what a pool left behind is an orphan the controller reaps.
    async def leave_one():
        note_demand(quick.executor.pools, app.store.get(adopted_by).image)
        await quick.executor.pools.refill_once()
    asyncio.run(leave_one())
    left = unclaimed(docker_client, app)
    assert left
    off = apps(pool_settings(enabled=False))

    async def one_pass():
        async with off.controller(leader=False) as controller:  # leaving waits for its removals (tasks)
            return await controller.reconcile_once()
    actions = asyncio.run(one_pass())
    assert sorted((a.sandbox, a.reason) for a in actions if type(a).__name__ == "Teardown") == \
        sorted((name, "orphan: no live record") for name in left)
    assert unclaimed(docker_client, app) == []
    assert docker_client.containers.get(app.store.get(adopted_by).sandbox_name).status == "exited"  # kept: claimed

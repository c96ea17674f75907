"""`genesis delete` records intent; the planner decides (SPEC §10, docs/controller.md).

The verb runs against a real store and touches no runtime; what it recorded,
read back the way the controller reads it (``Store.desired``), leads the
planner to the action the verb promised.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from orchestrator.backends.local import LocalBackend
from orchestrator.cli import delete
from orchestrator.domain.models import Outcome, Phase, Recommendation, SandboxInfo
from orchestrator.domain.planner import Capacity, Fail, Kill, Limits, Observed, Teardown, plan
from orchestrator.errors import GenesisError

COMMIT = "3f2a9c1" + "0" * 33


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _delete(store, experiment_id: str, capsys, **flags) -> str:
    args = argparse.Namespace(kind="experiment", name=experiment_id, wait=False, timeout=300.0)
    vars(args).update(flags)
    assert asyncio.run(delete.run(LocalBackend(SimpleNamespace(store=store)), args)) == 0
    return capsys.readouterr().out


def _plan(store, observed=()):
    return plan(store.desired(), list(observed), now=_now(), capacity=Capacity(max_concurrent=0), limits=Limits())


def test_a_pending_experiment_is_failed_cancelled_by_the_planner(store, make_request, capsys):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    out = _delete(store, eid, capsys)
    assert out == f'experiment "{eid}" deleted (cancelling: the controller fails it as cancelled)\n'
    assert store.get(eid).phase is Phase.PENDING  # intent only
    assert _plan(store) == [Fail(eid, "cancelled", "cancelled before it started")]


def _running(store, request) -> str:
    eid = store.submit(request, commit=COMMIT)[0].id
    store.admit(eid, gpus=(), actor="test")
    store.transition(eid, Phase.RUNNING, reason="SandboxRunning", actor="test", sandbox_name="sb-1")
    return eid


def test_a_running_experiment_is_killed_by_the_planner(store, make_request, capsys):
    eid = _running(store, make_request())
    assert "stops its sandbox" in _delete(store, eid, capsys)
    assert _plan(store, [Observed("sb-1", eid, "running")]) == [Kill(eid, "sb-1", "cancelled")]


def test_a_preserved_sandbox_is_released_by_the_planner(store, make_request, capsys):
    eid = _running(store, make_request())
    store.finalize(Outcome(experiment_id=eid, instance_id="singularity-test-1", status="success",
                           recommendation=Recommendation.MERGE, timestamp=_now(),
                           sandbox=SandboxInfo(runtime="docker", image="img", name="sb-1", preserved=True)),
                   phase=Phase.SUCCEEDED, reason="merge", message="merge", preserved_until=_now() + timedelta(days=7))
    assert "removes its preserved sandbox" in _delete(store, eid, capsys)
    assert _plan(store, [Observed("sb-1", eid, "exited")]) == [
        Teardown("sb-1", eid, "released: deleted by request", clear_preserved=True)]
    store.set_preserved_until(eid, None)  # what the controller does with clear_preserved
    assert _plan(store) == []
    assert "Succeeded" in _delete(store, eid, capsys, wait=True)  # acted on: --wait returns at once


def test_wait_gives_up_after_its_timeout_with_one_clear_error(store, make_request, capsys):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    with pytest.raises(GenesisError) as info:
        _delete(store, eid, capsys, wait=True, timeout=0.0)
    assert info.value.code == "timeout" and "genesis serve" in str(info.value)

"""Baselines as records the controller drives (the planner's part).

A baseline runs one repetition at a time, each in a sandbox of its own with
a deadline from its own timeout; after a restart its running sandbox is
adopted, never deleted as "not the live sandbox" of an experiment; the
experiments on its key wait for it, and waiting is never "stuck".
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from orchestrator.domain.models import Phase
from orchestrator.domain.planner import (
    Capacity, CollectBaseline, Desired, DesiredBaseline, Fail, KillBaseline, Limits, LostBaseline, Observed, Resume,
    StartBaseline, Teardown, baseline_label, plan,
)

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
KEY = "ab" * 32
LIMITS = Limits(phase_deadline_s=1800.0)
ROOMY = Capacity(max_concurrent=10, cpu=100.0, memory_bytes=100 * 2**30, gpus=("0", "1"))


def waiting(id: str = "e1", **kw) -> Desired:
    return Desired(id=id, instance_id="i", phase=Phase.BUILDING, priority=0, created_at=NOW - timedelta(hours=2),
                   phase_since=NOW - timedelta(hours=1), waiting_for=KEY, **kw)


def base(phase: str, **kw) -> DesiredBaseline:
    if phase == "Running":
        kw.setdefault("sandbox_name", f"genesis-baseline-{KEY[:16]}-0")
    return DesiredBaseline(key=KEY, phase=phase, **kw)


def observed(status: str = "running", name: str | None = None) -> Observed:
    return Observed(name or f"genesis-baseline-{KEY[:16]}-0", baseline_label(KEY), status, role="baseline")


def run(desired=(), seen=(), baselines=(), in_flight=frozenset(), capacity=ROOMY):
    return plan(list(desired), list(seen), now=NOW, capacity=capacity, limits=LIMITS, in_flight=in_flight,
                baselines=tuple(baselines))


def test_a_pending_baseline_is_started_and_its_experiment_waits_without_being_stuck():
    # Waiting an hour in Building is not "stuck": the baseline has a deadline of its own.
    assert run([waiting()], baselines=[base("Pending")]) == [StartBaseline(KEY)]


def test_a_running_repetition_is_adopted_after_a_restart_not_reaped():
    assert run([waiting()], [observed()], [base("Running", deadline_at=NOW + timedelta(minutes=5))]) == []


def test_an_exited_repetition_is_collected():
    assert run([waiting()], [observed("exited")], [base("Running")]) == [
        CollectBaseline(KEY, f"genesis-baseline-{KEY[:16]}-0")]


def test_a_repetition_past_its_own_deadline_is_killed_once():
    late = base("Running", deadline_at=NOW - timedelta(seconds=1))
    assert run([waiting()], [observed()], [late]) == [KillBaseline(KEY, late.sandbox_name)]
    killed = base("Running", deadline_at=NOW - timedelta(seconds=1), kill_reason="timeout")
    assert run([waiting()], [observed()], [killed]) == []


def test_a_vanished_or_never_started_repetition_is_lost_and_launched_again():
    assert run([waiting()], [], [base("Running")]) == [LostBaseline(KEY)]
    assert run([waiting()], [observed("created")], [base("Running")]) == [LostBaseline(KEY)]


def test_a_finished_baseline_resumes_its_waiting_experiments():
    for phase in ("Succeeded", "Failed"):
        assert run([waiting("e1"), waiting("e2")], baselines=[base(phase)]) == [Resume("e1", "start"),
                                                                               Resume("e2", "start")]


def test_a_step_in_flight_is_left_alone_and_its_sandbox_kept():
    pending = base("Pending")
    assert run([waiting()], [observed()], [pending], in_flight=frozenset({pending.task})) == []


def test_baseline_sandboxes_without_a_running_record_are_orphans():
    stale = observed("exited", name=f"genesis-baseline-{KEY[:16]}-0")
    other = Observed("genesis-baseline-ffffffffffffffff-2", "baseline-ffffffffffffffff", "running", role="baseline")
    actions = run([], [stale, other], [base("Succeeded")])
    assert {a.sandbox for a in actions if isinstance(a, Teardown)} == {stale.name, other.name}


def test_cancelling_a_waiting_experiment_fails_it_and_leaves_the_baseline_running():
    actions = run([waiting(cancel_requested=True)], [observed()], [base("Running",
                                                                        deadline_at=NOW + timedelta(minutes=5))])
    assert actions == [Fail("e1", "cancelled", "cancelled while waiting for its baseline")]


def test_a_running_baseline_keeps_its_gpus_from_admission():
    queued = Desired(id="e2", instance_id="i", phase=Phase.PENDING, priority=0, created_at=NOW, gpus_requested=2)
    held = base("Running", gpus=("0",), deadline_at=NOW + timedelta(minutes=5))
    assert run([queued], [observed()], [held]) == []  # only GPU 1 is free
    assert run([queued], [], [base("Succeeded", gpus=("0",))])[0].gpus == ("0", "1")


def test_a_repetition_killed_before_it_ever_ran_is_collected_as_a_timeout():
    # A runtime deletes what it cannot stop (a pod that never got scheduled): the kill stands.
    killed = base("Running", deadline_at=NOW - timedelta(seconds=1), kill_reason="timeout")
    assert run([waiting()], [], [killed]) == [CollectBaseline(KEY, killed.sandbox_name)]

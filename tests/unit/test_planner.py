"""The controller's pure planner (SPEC §5–6): ``plan(desired, observed) -> actions``.

Table-driven: every scenario builds the desired records and the observed
sandboxes by hand, at a fixed ``NOW``, and pins the actions one pass decides.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from orchestrator.domain.models import Phase
from orchestrator.domain.planner import (
    Admit,
    Capacity,
    Collect,
    Desired,
    Fail,
    Kill,
    Limits,
    Observed,
    Resume,
    Retry,
    Teardown,
    Unpreserve,
    backoff,
    plan,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
GI = 2**30
MI = 2**20

PENDING, BUILDING, RUNNING, COLLECTING = Phase.PENDING, Phase.BUILDING, Phase.RUNNING, Phase.COLLECTING
SUCCEEDED, FAILED = Phase.SUCCEEDED, Phase.FAILED

# Capacity large enough that only the dimension under test binds.
ROOMY = dict(max_concurrent=100, per_instance=None, cpu=1000.0, memory_bytes=1000 * GI, gpus=())
LIMITS = Limits(backoff_limit=3, backoff_base_s=2.0, backoff_max_s=300.0, phase_deadline_s=1800.0)

PHASE_CHANGING = (Admit, Resume, Collect, Kill, Retry, Fail)


def rec(id: str, phase: Phase = PENDING, **kw) -> Desired:
    kw.setdefault("instance_id", "inst")
    kw.setdefault("priority", 0)
    kw.setdefault("created_at", NOW - timedelta(hours=1))
    if phase in (RUNNING, COLLECTING):
        kw.setdefault("sandbox_name", f"sb-{id}")
    return Desired(id=id, phase=phase, **kw)


def sb(name: str, experiment_id: str | None, status: str = "running") -> Observed:
    return Observed(name=name, experiment_id=experiment_id, status=status)


def cap(**kw) -> Capacity:
    return Capacity(**{**ROOMY, **kw})


def run(desired, observed=(), *, capacity: Capacity | None = None, limits: Limits = LIMITS,
        in_flight=(), now: datetime = NOW):
    return plan(list(desired), list(observed), now=now, capacity=capacity or cap(), limits=limits,
                in_flight=frozenset(in_flight))


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


def admitted(actions) -> list[str]:
    return [a.experiment_id for a in of(actions, Admit)]


def for_id(actions, experiment_id):
    return [a for a in actions if getattr(a, "experiment_id", None) == experiment_id
            and isinstance(a, PHASE_CHANGING + (Unpreserve,))]


def torn_down(actions) -> list[str]:
    return [a.sandbox for a in of(actions, Teardown)]


# -- admission: order -----------------------------------------------------------


def test_admits_by_priority_descending_up_to_max_concurrent():
    desired = [rec("low", priority=0), rec("high", priority=5), rec("mid", priority=1)]
    actions = run(desired, capacity=cap(max_concurrent=2))
    assert admitted(actions) == ["high", "mid"]


def test_equal_priority_admits_oldest_first():
    desired = [
        rec("newer", created_at=NOW - timedelta(minutes=1)),
        rec("oldest", created_at=NOW - timedelta(hours=3)),
        rec("older", created_at=NOW - timedelta(hours=2)),
    ]
    assert admitted(run(desired, capacity=cap(max_concurrent=2))) == ["oldest", "older"]


def test_priority_beats_age():
    desired = [
        rec("old-low", priority=-1, created_at=NOW - timedelta(days=3)),
        rec("new-high", priority=1, created_at=NOW - timedelta(seconds=1)),
    ]
    assert admitted(run(desired, capacity=cap(max_concurrent=1))) == ["new-high"]


def test_admission_order_does_not_depend_on_input_order():
    desired = [rec(f"e{i}", priority=i % 3, created_at=NOW - timedelta(minutes=i % 2)) for i in range(8)]
    first = admitted(run(desired, capacity=cap(max_concurrent=5)))
    assert len(first) == 5
    assert admitted(run(list(reversed(desired)), capacity=cap(max_concurrent=5))) == first


# -- admission: max_concurrent ----------------------------------------------------


@pytest.mark.parametrize(
    ("active_phases", "max_concurrent", "expected_admits"),
    [
        ((), 2, 2),
        ((BUILDING,), 2, 1),
        ((RUNNING,), 3, 2),
        ((BUILDING, RUNNING, COLLECTING), 3, 0),
        ((BUILDING, RUNNING, COLLECTING), 4, 1),
        ((RUNNING, RUNNING, RUNNING), 2, 0),  # already over: admit nothing
        ((), 0, 0),
        # finished records (even preserved) and pending ones hold no slot
        ((SUCCEEDED, FAILED, PENDING), 2, 2),
    ],
)
def test_max_concurrent_counts_active_phases(active_phases, max_concurrent, expected_admits):
    held = [rec(f"held{i}", phase, preserved_until=NOW + timedelta(days=1) if phase.finished else None,
                created_at=NOW, priority=-100)  # held PENDING ranks last: it is the one left out
            for i, phase in enumerate(active_phases)]
    observed = [sb(d.sandbox_name, d.id) for d in held if d.sandbox_name]
    queue = [rec(f"q{i}", created_at=NOW - timedelta(minutes=10 - i)) for i in range(4)]
    actions = run(held + queue, observed, capacity=cap(max_concurrent=max_concurrent))
    assert admitted(actions) == [f"q{i}" for i in range(expected_admits)]


def test_in_flight_unfinished_records_hold_a_slot():
    # A Pending record with a step in flight was admitted this instant.
    desired = [rec("just-admitted", PENDING), rec("waiting")]
    actions = run(desired, capacity=cap(max_concurrent=1), in_flight={"just-admitted"})
    assert admitted(actions) == []


def test_in_flight_finished_record_holds_no_slot():
    desired = [rec("done", SUCCEEDED, preserved_until=NOW + timedelta(days=1), sandbox_name="sb-done"),
               rec("waiting")]
    actions = run(desired, [sb("sb-done", "done", "exited")], capacity=cap(max_concurrent=1),
                  in_flight={"done"})
    assert admitted(actions) == ["waiting"]


def test_in_flight_pending_record_is_not_admitted_again():
    actions = run([rec("a")], in_flight={"a"})
    assert admitted(actions) == []
    assert for_id(actions, "a") == []


# -- admission: per-instance quota -----------------------------------------------


def test_per_instance_quota_skips_a_full_instance_but_admits_others():
    desired = [
        rec("a-running", RUNNING, instance_id="A"),
        rec("a1", instance_id="A", priority=9),
        rec("a2", instance_id="A", priority=8),
        rec("a3", instance_id="A", priority=7),
        rec("b1", instance_id="B", priority=0),
    ]
    actions = run(desired, [sb("sb-a-running", "a-running")], capacity=cap(per_instance=2))
    assert admitted(actions) == ["a1", "b1"]


def test_per_instance_quota_zero_admits_nothing():
    assert admitted(run([rec("a"), rec("b", instance_id="other")], capacity=cap(per_instance=0))) == []


def test_per_instance_quota_already_exceeded_admits_nothing_for_that_instance():
    desired = [rec("r1", RUNNING, instance_id="A"), rec("r2", RUNNING, instance_id="A"),
               rec("a", instance_id="A", priority=5), rec("b", instance_id="B")]
    actions = run(desired, [sb("sb-r1", "r1"), sb("sb-r2", "r2")], capacity=cap(per_instance=1))
    assert admitted(actions) == ["b"]


def test_per_instance_quota_counts_in_flight_pending_records():
    desired = [rec("a0", instance_id="A"), rec("a1", instance_id="A"), rec("b", instance_id="B")]
    actions = run(desired, capacity=cap(per_instance=1), in_flight={"a0"})
    assert admitted(actions) == ["b"]


# -- admission: CPU and memory, with backfill --------------------------------------


def test_cpu_that_does_not_fit_is_skipped_and_a_smaller_one_backfills():
    desired = [
        rec("running", RUNNING, cpu=3.0),
        rec("big", cpu=2.0, priority=10),
        rec("small", cpu=1.0, priority=0),
    ]
    actions = run(desired, [sb("sb-running", "running")], capacity=cap(cpu=4.0))
    assert admitted(actions) == ["small"]


def test_memory_that_does_not_fit_is_skipped_and_a_smaller_one_backfills():
    desired = [
        rec("building", BUILDING, memory_bytes=3 * GI),
        rec("big", memory_bytes=2 * GI, priority=10),
        rec("small", memory_bytes=512 * MI, priority=0),
        rec("small2", memory_bytes=512 * MI, priority=-1),
        rec("one-too-many", memory_bytes=16 * MI, priority=-2),
    ]
    actions = run(desired, capacity=cap(memory_bytes=4 * GI))
    assert admitted(actions) == ["small", "small2"]


def test_cpu_and_memory_exact_fit_is_admitted():
    desired = [rec("a", cpu=0.5, memory_bytes=GI), rec("b", cpu=0.25, memory_bytes=GI),
               rec("c", cpu=0.25, memory_bytes=2 * GI)]
    assert admitted(run(desired, capacity=cap(cpu=1.0, memory_bytes=4 * GI))) == ["a", "b", "c"]


def test_cpu_sums_accumulate_across_admits_in_one_plan():
    desired = [rec(f"e{i}", cpu=1.5, created_at=NOW - timedelta(minutes=10 - i)) for i in range(5)]
    actions = run(desired, capacity=cap(cpu=4.0))
    assert admitted(actions) == ["e0", "e1"]  # 3.0 used, 1.5 more would be 4.5


def test_already_over_cpu_admits_nothing():
    desired = [rec("r", RUNNING, cpu=8.0), rec("tiny", cpu=0.25)]
    assert admitted(run(desired, [sb("sb-r", "r")], capacity=cap(cpu=4.0))) == []


def test_already_over_memory_admits_nothing():
    desired = [rec("r", COLLECTING, memory_bytes=8 * GI), rec("tiny", memory_bytes=16 * MI)]
    assert admitted(run(desired, [sb("sb-r", "r")], capacity=cap(memory_bytes=4 * GI))) == []


def test_a_record_larger_than_the_whole_host_never_blocks_the_queue():
    desired = [rec("huge", cpu=64.0, memory_bytes=512 * GI, priority=100), rec("ok")]
    assert admitted(run(desired, capacity=cap(cpu=2.0, memory_bytes=4 * GI))) == ["ok"]


# -- admission: GPUs ---------------------------------------------------------------


def test_gpus_are_whole_devices_never_shared():
    desired = [
        rec("holder", RUNNING, gpus_assigned=("g1",)),
        rec("two", gpus_requested=2, priority=9),
        rec("two-more", gpus_requested=2, priority=8),  # only one left: skipped
        rec("one", gpus_requested=1, priority=7),
        rec("none", gpus_requested=0, priority=6),
    ]
    actions = run(desired, [sb("sb-holder", "holder")], capacity=cap(gpus=("g0", "g1", "g2", "g3")))
    admits = {a.experiment_id: a.gpus for a in of(actions, Admit)}
    assert set(admits) == {"two", "one", "none"}
    assert len(admits["two"]) == 2 and len(admits["one"]) == 1 and admits["none"] == ()
    given = admits["two"] + admits["one"]
    assert len(set(given)) == 3
    assert set(given) == {"g0", "g2", "g3"}  # everything but the held g1


def test_gpu_request_larger_than_free_does_not_block_others():
    desired = [rec("greedy", gpus_requested=3, priority=10), rec("modest", gpus_requested=1)]
    actions = run(desired, capacity=cap(gpus=("g0", "g1")))
    assert [(a.experiment_id, len(a.gpus)) for a in of(actions, Admit)] == [("modest", 1)]
    assert set(of(actions, Admit)[0].gpus) <= {"g0", "g1"}


def test_no_gpus_on_host_admits_only_cpu_work():
    desired = [rec("gpu", gpus_requested=1, priority=1), rec("cpu")]
    assert admitted(run(desired, capacity=cap(gpus=()))) == ["cpu"]


@pytest.mark.parametrize("holder_phase", [BUILDING, RUNNING, COLLECTING])
def test_gpus_of_every_active_phase_are_taken(holder_phase):
    desired = [rec("holder", holder_phase, gpus_assigned=("g0",)), rec("wants", gpus_requested=1)]
    observed = [sb("sb-holder", "holder")] if holder_phase is not BUILDING else []
    actions = run(desired, observed, capacity=cap(gpus=("g0", "g1")))
    assert [a.gpus for a in of(actions, Admit)] == [("g1",)]


def test_gpus_of_an_in_flight_pending_record_are_taken():
    desired = [rec("starting", gpus_assigned=("g0", "g1")), rec("wants", gpus_requested=1)]
    actions = run(desired, capacity=cap(gpus=("g0", "g1", "g2")), in_flight={"starting"})
    assert [a.gpus for a in of(actions, Admit)] == [("g2",)]


def test_gpus_of_finished_records_are_free_again():
    desired = [rec("done", SUCCEEDED, gpus_assigned=("g0",), sandbox_name="sb-done",
                   preserved_until=NOW + timedelta(days=1)),
               rec("wants", gpus_requested=1)]
    actions = run(desired, [sb("sb-done", "done", "exited")], capacity=cap(gpus=("g0",)))
    assert [a.gpus for a in of(actions, Admit)] == [("g0",)]


def test_all_gpus_held_admits_no_gpu_record():
    desired = [rec("h", RUNNING, gpus_assigned=("g0", "g1")), rec("wants", gpus_requested=1)]
    assert admitted(run(desired, [sb("sb-h", "h")], capacity=cap(gpus=("g0", "g1")))) == []


# -- admission: not_before and cancellation ----------------------------------------


@pytest.mark.parametrize(
    ("not_before", "admit"),
    [
        (None, True),
        (NOW - timedelta(seconds=1), True),
        (NOW, True),
        (NOW + timedelta(seconds=1), False),
        (NOW + timedelta(hours=1), False),
    ],
)
def test_not_before_in_the_future_is_not_admitted(not_before, admit):
    actions = run([rec("a", not_before=not_before)])
    assert admitted(actions) == (["a"] if admit else [])
    assert of(actions, Fail) == []


def test_backed_off_record_does_not_block_a_later_one():
    desired = [rec("backing-off", priority=9, not_before=NOW + timedelta(minutes=1)), rec("ready")]
    assert admitted(run(desired, capacity=cap(max_concurrent=1))) == ["ready"]


def test_cancel_requested_pending_is_failed_cancelled_not_admitted():
    desired = [rec("cancelled", cancel_requested=True, priority=10), rec("other")]
    actions = run(desired, capacity=cap(max_concurrent=1))
    assert admitted(actions) == ["other"]
    fails = of(actions, Fail)
    assert [(f.experiment_id, f.code) for f in fails] == [("cancelled", "cancelled")]


def test_cancel_requested_pending_in_backoff_is_still_failed():
    actions = run([rec("a", cancel_requested=True, not_before=NOW + timedelta(hours=1))])
    assert [(f.experiment_id, f.code) for f in of(actions, Fail)] == [("a", "cancelled")]
    assert admitted(actions) == []


def test_plain_pending_gets_no_action_besides_admit():
    actions = run([rec("a")], capacity=cap(max_concurrent=0))
    assert actions == []


@pytest.mark.parametrize("phase", [BUILDING, RUNNING, COLLECTING, SUCCEEDED, FAILED])
def test_only_pending_records_are_admitted(phase):
    record = rec("a", phase, sandbox_name="sb-a")
    actions = run([record], [sb("sb-a", "a")])
    assert admitted(actions) == []


# -- Running records ------------------------------------------------------------


def test_running_with_exited_sandbox_is_collected():
    actions = run([rec("a", RUNNING)], [sb("sb-a", "a", "exited")])
    assert for_id(actions, "a") == [Collect("a", "sb-a")]
    assert torn_down(actions) == []


def test_exited_sandbox_is_collected_even_if_cancelled_or_past_deadline():
    record = rec("a", RUNNING, cancel_requested=True, deadline_at=NOW - timedelta(hours=1))
    actions = run([record], [sb("sb-a", "a", "exited")])
    assert for_id(actions, "a") == [Collect("a", "sb-a")]


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [
        (0, "retry"),
        (1, "retry"),
        (2, "retry"),
        (3, "fail"),  # backoff_limit=3: attempts in all
        (7, "fail"),
    ],
)
@pytest.mark.parametrize("observed_status", [None, "created"])
def test_running_with_lost_sandbox_retries_then_fails(attempt, expected, observed_status):
    record = rec("a", RUNNING, attempt=attempt)
    observed = [] if observed_status is None else [sb("sb-a", "a", observed_status)]
    actions = for_id(run([record], observed), "a")
    assert len(actions) == 1
    if expected == "retry":
        assert isinstance(actions[0], Retry)
        assert actions[0].not_before == NOW + backoff(attempt, LIMITS)
        assert actions[0].not_before > NOW
    else:
        assert isinstance(actions[0], Fail)
        assert actions[0].code == "sandbox_lost"


def test_running_with_no_sandbox_name_is_lost():
    record = rec("a", RUNNING, sandbox_name=None)
    actions = run([record], [sb("sb-a-baseline", "a")])
    assert [type(a) for a in for_id(actions, "a")] == [Retry]


def test_running_whose_live_sandbox_is_gone_but_another_remains_is_lost():
    record = rec("a", RUNNING, attempt=1)
    actions = run([record], [sb("sb-a-baseline", "a", "running")])
    assert [type(a) for a in for_id(actions, "a")] == [Retry]
    assert torn_down(actions) == ["sb-a-baseline"]


def test_running_sandbox_matched_by_name_not_by_label_order():
    # the live sandbox is the one named by the record, whatever else carries its label
    record = rec("a", RUNNING)
    observed = [sb("sb-a-old", "a", "exited"), sb("sb-a", "a", "running")]
    actions = run([record], observed)
    assert for_id(actions, "a") == []
    assert torn_down(actions) == ["sb-a-old"]


@pytest.mark.parametrize("kill_reason", ["timeout", "cancelled"])
def test_a_killed_sandbox_the_runtime_deleted_is_collected_not_retried(kill_reason):
    # A pod that was never scheduled is deleted by kill(): the kill stands.
    actions = for_id(run([rec("a", RUNNING, kill_reason=kill_reason, attempt=1)], []), "a")
    assert [type(a) for a in actions] == [Collect]


def test_running_lost_and_cancelled_fails_cancelled_without_retry():
    actions = for_id(run([rec("a", RUNNING, cancel_requested=True, attempt=0)], []), "a")
    assert len(actions) == 1 and isinstance(actions[0], Fail)
    assert actions[0].code == "cancelled"


@pytest.mark.parametrize(
    ("cancel", "deadline_at", "kill_reason", "expected"),
    [
        (False, None, None, None),
        (False, NOW + timedelta(seconds=1), None, None),
        (False, NOW + timedelta(hours=1), None, None),
        (False, NOW - timedelta(seconds=1), None, "timeout"),
        (False, NOW - timedelta(hours=5), None, "timeout"),
        (True, None, None, "cancelled"),
        (True, NOW + timedelta(hours=1), None, "cancelled"),
        (True, NOW - timedelta(hours=1), None, "cancelled"),  # one Kill, not two
        # a Kill already issued: no second one
        (True, None, "cancelled", None),
        (False, NOW - timedelta(hours=1), "timeout", None),
        (True, NOW - timedelta(hours=1), "timeout", None),
    ],
)
def test_running_kill_decisions(cancel, deadline_at, kill_reason, expected):
    record = rec("a", RUNNING, cancel_requested=cancel, deadline_at=deadline_at, kill_reason=kill_reason)
    actions = run([record], [sb("sb-a", "a", "running")])
    if expected is None:
        assert for_id(actions, "a") == []
    else:
        assert for_id(actions, "a") == [Kill("a", "sb-a", expected)]
    assert torn_down(actions) == []


# -- Building / Collecting ----------------------------------------------------------


@pytest.mark.parametrize(("phase", "step"), [(BUILDING, "start"), (COLLECTING, "collect")])
@pytest.mark.parametrize(
    "since",
    [None, NOW, NOW - timedelta(minutes=5), NOW - timedelta(seconds=LIMITS.phase_deadline_s)],
)
def test_interrupted_step_is_resumed(phase, step, since):
    actions = run([rec("a", phase, phase_since=since)], [sb("sb-a", "a")] if phase is COLLECTING else [])
    assert for_id(actions, "a") == [Resume("a", step)]


@pytest.mark.parametrize("phase", [BUILDING, COLLECTING])
@pytest.mark.parametrize(("attempt", "kind", "code"), [(0, Retry, None), (2, Retry, None),
                                                        (3, Fail, "sandbox_lost"), (9, Fail, "sandbox_lost")])
def test_stuck_step_retries_or_fails_instead_of_resuming(phase, attempt, kind, code):
    since = NOW - timedelta(seconds=LIMITS.phase_deadline_s + 1)
    actions = for_id(run([rec("a", phase, phase_since=since, attempt=attempt)]), "a")
    assert len(actions) == 1 and isinstance(actions[0], kind)
    if kind is Retry:
        assert actions[0].not_before == NOW + backoff(attempt, LIMITS)
    else:
        assert actions[0].code == code


def test_stuck_uses_the_configured_phase_deadline():
    limits = Limits(phase_deadline_s=60.0)
    record = rec("a", BUILDING, phase_since=NOW - timedelta(seconds=61))
    assert [type(a) for a in for_id(run([record], limits=limits), "a")] == [Retry]
    assert [type(a) for a in for_id(run([record]), "a")] == [Resume]


# -- records with a step in flight ---------------------------------------------------


IN_FLIGHT_CASES = [
    pytest.param(rec("a", PENDING, cancel_requested=True, sandbox_name="sb-a"), "running", id="pending-cancelled"),
    pytest.param(rec("a", BUILDING, sandbox_name="sb-a"), "created", id="building"),
    pytest.param(rec("a", BUILDING, sandbox_name="sb-a", phase_since=NOW - timedelta(days=1)), "running",
                 id="building-stuck"),
    pytest.param(rec("a", RUNNING), "exited", id="running-exited"),
    pytest.param(rec("a", RUNNING), None, id="running-lost"),
    pytest.param(rec("a", RUNNING, cancel_requested=True), "running", id="running-cancelled"),
    pytest.param(rec("a", RUNNING, deadline_at=NOW - timedelta(hours=1)), "running", id="running-timeout"),
    pytest.param(rec("a", COLLECTING), "exited", id="collecting"),
    pytest.param(rec("a", COLLECTING, phase_since=NOW - timedelta(days=1)), "exited", id="collecting-stuck"),
    pytest.param(rec("a", SUCCEEDED, sandbox_name="sb-a", preserved_until=NOW - timedelta(days=1)), "exited",
                 id="succeeded-expired"),
    pytest.param(rec("a", FAILED, sandbox_name="sb-a"), "exited", id="failed"),
]


@pytest.mark.parametrize(("record", "status"), IN_FLIGHT_CASES)
def test_in_flight_record_gets_no_step_and_keeps_its_sandboxes(record, status):
    observed = [sb("sb-a-baseline", "a", "running")]
    if status is not None:
        observed.append(sb("sb-a", "a", status))
    actions = run([record], observed, in_flight={"a"})
    assert [a for a in actions if isinstance(a, PHASE_CHANGING)] == []
    assert torn_down(actions) == []


@pytest.mark.parametrize(("record", "status"), IN_FLIGHT_CASES)
def test_same_records_not_in_flight_do_get_an_action(record, status):
    # the control case for the test above: without in_flight each of these has work
    observed = [sb("sb-a-baseline", "a", "running")]
    if status is not None:
        observed.append(sb("sb-a", "a", status))
    actions = run([record], observed)
    assert [a for a in actions if isinstance(a, PHASE_CHANGING + (Teardown,))] != []


# -- reaping ------------------------------------------------------------------


def test_sandbox_without_a_record_is_torn_down():
    observed = [sb("ghost", "no-such-experiment", "running"), sb("unlabelled", None, "exited")]
    actions = run([rec("a")], observed)
    assert sorted((t.sandbox, t.experiment_id) for t in of(actions, Teardown)) == [
        ("ghost", "no-such-experiment"), ("unlabelled", None)]
    assert all(not t.clear_preserved for t in of(actions, Teardown))


def test_orphans_are_torn_down_even_with_no_desired_records():
    observed = [sb(f"o{i}", f"gone{i}", status) for i, status in enumerate(["created", "running", "exited"])]
    assert sorted(torn_down(run([], observed))) == ["o0", "o1", "o2"]


@pytest.mark.parametrize("phase", [PENDING, BUILDING])
def test_sandbox_of_pending_or_building_record_is_torn_down(phase):
    record = rec("a", phase, sandbox_name="sb-a")
    actions = run([record], [sb("sb-a", "a", "running"), sb("sb-a-baseline", "a", "exited")])
    teardowns = of(actions, Teardown)
    assert sorted(t.sandbox for t in teardowns) == ["sb-a", "sb-a-baseline"]
    assert all(t.experiment_id == "a" and not t.clear_preserved for t in teardowns)


@pytest.mark.parametrize("phase", [RUNNING, COLLECTING])
@pytest.mark.parametrize("status", ["created", "running", "exited"])
def test_live_sandbox_of_running_or_collecting_record_is_kept(phase, status):
    record = rec("a", phase)
    actions = run([record], [sb("sb-a", "a", status), sb("sb-a-baseline", "a", "exited")])
    assert torn_down(actions) == ["sb-a-baseline"]


def test_preserved_sandbox_within_ttl_is_kept():
    record = rec("a", SUCCEEDED, sandbox_name="sb-a", preserved_until=NOW + timedelta(seconds=1))
    actions = run([record], [sb("sb-a", "a", "exited")])
    assert actions == []


def test_other_sandboxes_of_a_preserved_record_are_torn_down_without_clearing():
    record = rec("a", SUCCEEDED, sandbox_name="sb-a", preserved_until=NOW + timedelta(days=7))
    actions = run([record], [sb("sb-a", "a", "exited"), sb("sb-a-baseline", "a", "exited")])
    assert of(actions, Teardown) == [Teardown("sb-a-baseline", "a", of(actions, Teardown)[0].reason,
                                              clear_preserved=False)]
    assert of(actions, Unpreserve) == []


@pytest.mark.parametrize("phase", [SUCCEEDED, FAILED])
@pytest.mark.parametrize("until", [NOW, NOW - timedelta(seconds=1), NOW - timedelta(days=30)])
def test_expired_preserved_sandbox_is_torn_down_and_cleared(phase, until):
    record = rec("a", phase, sandbox_name="sb-a", preserved_until=until)
    actions = run([record], [sb("sb-a", "a", "exited")])
    teardowns = of(actions, Teardown)
    assert len(teardowns) == 1
    assert (teardowns[0].sandbox, teardowns[0].experiment_id, teardowns[0].clear_preserved) == ("sb-a", "a", True)
    assert of(actions, Unpreserve) == []


@pytest.mark.parametrize("until", [NOW, NOW - timedelta(days=1)])
def test_expired_preserved_record_whose_sandbox_is_gone_is_unpreserved(until):
    record = rec("a", SUCCEEDED, sandbox_name="sb-a", preserved_until=until)
    actions = run([record], [sb("sb-other", "other-gone", "exited")])
    assert of(actions, Unpreserve) == [Unpreserve("a")]
    assert torn_down(actions) == ["sb-other"]


def test_unexpired_preserved_record_whose_sandbox_is_gone_is_left_alone():
    record = rec("a", SUCCEEDED, sandbox_name="sb-a", preserved_until=NOW + timedelta(hours=1))
    assert run([record], []) == []


@pytest.mark.parametrize("phase", [SUCCEEDED, FAILED])
def test_a_delete_releases_a_preserved_sandbox_before_its_ttl(phase):
    # `genesis delete` records cancel_requested; on a finished record that means "release it".
    record = rec("a", phase, sandbox_name="sb-a", preserved_until=NOW + timedelta(days=7), cancel_requested=True)
    actions = run([record], [sb("sb-a", "a", "exited")])
    assert actions == [Teardown("sb-a", "a", "released: deleted by request", clear_preserved=True)]


def test_a_delete_of_a_preserved_record_whose_sandbox_is_gone_unpreserves_it():
    record = rec("a", SUCCEEDED, sandbox_name="sb-a", preserved_until=NOW + timedelta(days=7),
                  cancel_requested=True)
    assert run([record], []) == [Unpreserve("a")]


def test_a_delete_of_a_finished_record_with_nothing_preserved_needs_nothing():
    assert run([rec("a", FAILED, sandbox_name="sb-a", cancel_requested=True)], []) == []


def test_each_sandbox_is_torn_down_at_most_once():
    desired = [rec("p", PENDING, sandbox_name="sb-p"),
               rec("f", FAILED, sandbox_name="sb-f", preserved_until=NOW - timedelta(days=1))]
    observed = [sb("sb-p", "p"), sb("sb-f", "f", "exited"), sb("orphan", "x"), sb("sb-f-baseline", "f")]
    names = torn_down(run(desired, observed))
    assert sorted(names) == ["orphan", "sb-f", "sb-f-baseline", "sb-p"]


# -- backoff -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "seconds"),
    [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (8, 256.0), (9, 300.0), (30, 300.0)],
)
def test_backoff_is_exponential_from_base_and_capped(attempt, seconds):
    assert backoff(attempt, LIMITS) == timedelta(seconds=seconds)


def test_backoff_follows_configured_base_and_cap():
    limits = Limits(backoff_base_s=0.5, backoff_max_s=3.0)
    assert [backoff(a, limits).total_seconds() for a in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_is_non_decreasing():
    values = [backoff(a, LIMITS) for a in range(0, 64)]
    assert values == sorted(values)
    assert max(values) == timedelta(seconds=LIMITS.backoff_max_s)


@pytest.mark.parametrize("attempt", [1100, 10_000])
def test_backoff_stays_capped_for_huge_attempt_counts(attempt):
    # "capped at backoff_max_s" must hold for any attempt count, not raise
    assert backoff(attempt, LIMITS) == timedelta(seconds=LIMITS.backoff_max_s)


# -- the plan as a whole --------------------------------------------------------


def _mixed_scenario():
    desired = [
        rec("p-hi", priority=5, cpu=1.0, gpus_requested=1),
        rec("p-lo", priority=0, cpu=0.5, created_at=NOW - timedelta(days=1)),
        rec("p-cancel", cancel_requested=True),
        rec("p-later", not_before=NOW + timedelta(minutes=5)),
        rec("b", BUILDING),
        rec("b-stuck", BUILDING, phase_since=NOW - timedelta(days=1), attempt=1),
        rec("r-exited", RUNNING),
        rec("r-lost", RUNNING, attempt=1),
        rec("r-timeout", RUNNING, deadline_at=NOW - timedelta(minutes=1), gpus_assigned=("g0",)),
        rec("c", COLLECTING),
        rec("s-kept", SUCCEEDED, sandbox_name="sb-s-kept", preserved_until=NOW + timedelta(days=1)),
        rec("s-expired", SUCCEEDED, sandbox_name="sb-s-expired", preserved_until=NOW - timedelta(days=1)),
        rec("f-gone", FAILED, sandbox_name="sb-f-gone", preserved_until=NOW - timedelta(days=1)),
        rec("flying", RUNNING, deadline_at=NOW - timedelta(days=1)),
    ]
    observed = [
        sb("sb-r-exited", "r-exited", "exited"),
        sb("sb-r-timeout", "r-timeout", "running"),
        sb("sb-c", "c", "exited"),
        sb("sb-s-kept", "s-kept", "exited"),
        sb("sb-s-expired", "s-expired", "exited"),
        sb("sb-b-baseline", "b", "running"),
        sb("sb-flying", "flying", "running"),
        sb("orphan", "deleted-long-ago", "running"),
    ]
    return desired, observed


def _run_mixed(desired, observed):
    return plan(desired, observed, now=NOW, capacity=Capacity(max_concurrent=10, cpu=16.0, memory_bytes=64 * GI,
                                                               gpus=("g0", "g1")),
                limits=LIMITS, in_flight=frozenset({"flying"}))


def test_mixed_pass_decides_each_record_once():
    desired, observed = _mixed_scenario()
    actions = _run_mixed(desired, observed)
    by_id = {}
    for action in actions:
        if isinstance(action, PHASE_CHANGING):
            assert action.experiment_id not in by_id, f"two phase changes for {action.experiment_id}"
            by_id[action.experiment_id] = action
    assert {k: type(v) for k, v in by_id.items()} == {
        "p-hi": Admit, "p-lo": Admit, "p-cancel": Fail, "b": Resume, "b-stuck": Retry,
        "r-exited": Collect, "r-lost": Retry, "r-timeout": Kill, "c": Resume,
    }
    assert by_id["p-hi"].gpus == ("g1",)
    assert by_id["r-timeout"].reason == "timeout"
    assert sorted(torn_down(actions)) == ["orphan", "sb-b-baseline", "sb-s-expired"]
    assert of(actions, Unpreserve) == [Unpreserve("f-gone")]


def test_teardowns_come_first_and_admissions_last():
    desired, observed = _mixed_scenario()
    kinds = [type(a) for a in _run_mixed(desired, observed)]
    first_other = next(i for i, k in enumerate(kinds) if k not in (Teardown, Unpreserve))
    assert all(k in (Teardown, Unpreserve) for k in kinds[:first_other])
    assert Teardown not in kinds[first_other:]
    first_admit = kinds.index(Admit)
    assert all(k is Admit for k in kinds[first_admit:])


def test_plan_is_deterministic():
    desired, observed = _mixed_scenario()
    first = _run_mixed(desired, observed)
    assert first  # something to compare
    for _ in range(3):
        again_desired, again_observed = _mixed_scenario()
        assert _run_mixed(again_desired, again_observed) == first


def test_plan_does_not_mutate_its_inputs():
    desired, observed = _mixed_scenario()
    desired_before, observed_before = copy.deepcopy(desired), copy.deepcopy(observed)
    desired_ids, observed_ids = [id(d) for d in desired], [id(o) for o in observed]
    in_flight = frozenset({"flying"})
    capacity = Capacity(max_concurrent=10, cpu=16.0, memory_bytes=64 * GI, gpus=("g0", "g1"))
    plan(desired, observed, now=NOW, capacity=capacity, limits=LIMITS, in_flight=in_flight)
    assert desired == desired_before and observed == observed_before
    assert [id(d) for d in desired] == desired_ids and [id(o) for o in observed] == observed_ids
    assert capacity == Capacity(max_concurrent=10, cpu=16.0, memory_bytes=64 * GI, gpus=("g0", "g1"))
    assert in_flight == frozenset({"flying"})


def test_restart_with_nothing_in_flight_adopts_running_sandboxes():
    # After a crash the same records and sandboxes must give a pass that
    # neither tears down live work nor starts it twice.
    desired = [rec("r", RUNNING, deadline_at=NOW + timedelta(hours=1)), rec("q", priority=1)]
    actions = run(desired, [sb("sb-r", "r", "running")], capacity=cap(max_concurrent=1))
    assert actions == []

"""Properties of the controller's planner (SPEC §5–6), whatever the inputs.

Random desired records (any phase, priority, resources, GPU requests and
assignments), random observed sandboxes (of known or unknown experiments),
random capacities with 0–4 GPUs and random in-flight subsets. The oracles
below are written from the SPEC's rules, not from the planner's code.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

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
    plan,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
GI = 2**30
MI = 2**20
EPS = 1e-9

ACTIVE = (Phase.BUILDING, Phase.RUNNING, Phase.COLLECTING)
PHASE_CHANGING = (Admit, Resume, Collect, Kill, Retry, Fail)
GPU_IDS = ("g0", "g1", "g2", "g3")
FOREIGN_GPU = "gx"  # assigned to a record but not (or no longer) on the host

PROPS = settings(max_examples=300, deadline=None)

# Exact binary fractions, so sums compare without float noise.
cpus = st.sampled_from([0.5, 1.0, 0.25, 1.0, 1.5, 2.0, 4.0])
memories = st.sampled_from([16 * MI, 256 * MI, 512 * MI, GI, GI, 2 * GI, 4 * GI])
OFFSETS = [-86_400, -3_600, -1_801, -60, -1, 0, 1, 60, 3_600]  # seconds from NOW
TIMES = [NOW + timedelta(seconds=s) for s in OFFSETS]
maybe_time = st.sampled_from([None] * 4 + TIMES)
# Weighted towards what makes admission interesting: ready Pending records
# competing for a few slots, a few GPUs and a CPU/memory budget that binds.
phases = st.sampled_from([Phase.PENDING] * 4 + [Phase.BUILDING, Phase.RUNNING, Phase.RUNNING, Phase.COLLECTING,
                                                Phase.SUCCEEDED, Phase.FAILED])
statuses = st.sampled_from(["created", "running", "running", "exited"])


@st.composite
def a_record(draw, rid: str, phase_strategy=phases) -> Desired:
    phase = draw(phase_strategy)
    return Desired(
        id=rid,
        instance_id=draw(st.sampled_from(["i0", "i1", "i2"])),
        phase=phase,
        priority=draw(st.integers(-2, 2)),
        created_at=NOW - timedelta(minutes=draw(st.integers(0, 5))),
        attempt=draw(st.integers(0, 4)),
        cancel_requested=draw(st.sampled_from([False] * 4 + [True])),
        sandbox_name=draw(st.sampled_from([None, f"sb-{rid}", f"sb-{rid}", f"sb-{rid}", f"sb-{rid}-old"])),
        phase_since=draw(maybe_time),
        deadline_at=draw(maybe_time),
        not_before=draw(st.sampled_from([None] * 8 + TIMES)),
        preserved_until=draw(maybe_time),
        kill_reason=draw(st.sampled_from([None, None, "timeout", "cancelled"])),
        cpu=draw(cpus),
        memory_bytes=draw(memories),
        gpus_requested=draw(st.sampled_from([0, 0, 1, 1, 2])),
        gpus_assigned=tuple(draw(st.lists(st.sampled_from(GPU_IDS + (FOREIGN_GPU,)), max_size=2, unique=True))),
    )


@dataclass(frozen=True)
class World:
    desired: list[Desired]
    observed: list[Observed]
    capacity: Capacity
    limits: Limits
    in_flight: frozenset[str]


@st.composite
def worlds(draw) -> World:
    # records in any phase, plus a queue of Pending ones competing for the room left
    desired = [draw(a_record(f"e{i}")) for i in range(draw(st.sampled_from([3, 0, 1, 2, 4, 5, 6, 8, 10])))]
    queue_length = draw(st.sampled_from([3, 0, 1, 2, 4, 6]))
    desired += [draw(a_record(f"q{i}", st.just(Phase.PENDING))) for i in range(queue_length)]
    ids = [d.id for d in desired]
    draw(st.randoms()).shuffle(desired)

    observed: dict[str, Observed] = {}  # by name: names are unique on a runtime
    for rid in ids:
        names = [f"sb-{rid}"] if draw(st.sampled_from([True, True, True, False])) else []
        names += draw(st.lists(st.sampled_from([f"sb-{rid}-old", f"sb-{rid}-baseline"]), max_size=2, unique=True))
        for name in names:
            observed[name] = Observed(name, rid, draw(statuses))
    for k in range(draw(st.integers(0, 3))):  # orphans: unknown experiment, or no label value
        experiment_id = draw(st.sampled_from([f"ghost{k}", None]))
        observed[f"orphan-{k}"] = Observed(f"orphan-{k}", experiment_id, draw(statuses))
    observed_list = list(observed.values())
    draw(st.randoms()).shuffle(observed_list)

    limits = Limits(backoff_limit=draw(st.integers(0, 4)))
    in_flight = frozenset([rid for rid in ids if draw(st.sampled_from([False] * 4 + [True]))]
                          + draw(st.sampled_from([[], [], ["not-a-record"]])))

    # Capacity is drawn as what the world already holds plus a small slack,
    # mostly positive (room for a few admits, so they compete) and sometimes
    # negative (the host is already over: nothing may be admitted). Hypothesis
    # favours the first entry of sampled_from, so the lists open with room.
    active = [d for d in desired if is_active(d, in_flight)]
    n_gpus = draw(st.sampled_from([2, 4, 1, 3, 0]))
    capacity = Capacity(
        max_concurrent=max(0, len(active) + draw(st.sampled_from([2, 1, 3, 0, 5, 1, 2, -1]))),
        per_instance=draw(st.sampled_from([None, 2, 1, 3, None, 0])),
        cpu=max(0.0, sum(d.cpu for d in active) + draw(st.sampled_from([2.0, 1.0, 4.0, 0.5, 3.0, 8.0, 0.0, -1.0]))),
        memory_bytes=max(0, sum(d.memory_bytes for d in active)
                         + draw(st.sampled_from([4 * GI, 2 * GI, GI, 16 * GI, 512 * MI, 0, -GI]))),
        gpus=tuple(draw(st.permutations(GPU_IDS[:n_gpus]))),
    )
    return World(desired, observed_list, capacity, limits, in_flight)


def run(world: World):
    return plan(world.desired, world.observed, now=NOW, capacity=world.capacity, limits=world.limits,
                in_flight=world.in_flight)


def is_active(record: Desired, in_flight: frozenset[str]) -> bool:
    return record.phase in ACTIVE or (record.id in in_flight and not record.phase.finished)


def eligible(record: Desired, in_flight: frozenset[str]) -> bool:
    """May be admitted now (SPEC: Pending, not cancelled, not backing off, not already started)."""
    return (record.phase is Phase.PENDING and not record.cancel_requested and record.id not in in_flight
            and (record.not_before is None or record.not_before <= NOW))


def admits_of(actions) -> list[Admit]:
    return [a for a in actions if isinstance(a, Admit)]


# -- 1. capacity ------------------------------------------------------------------


def check_admits_never_exceed_capacity(world: World, actions) -> None:
    cap = world.capacity
    by_id = {d.id: d for d in world.desired}
    active = [d for d in world.desired if is_active(d, world.in_flight)]
    admits = admits_of(actions)
    new = [by_id[a.experiment_id] for a in admits]

    if len(active) >= cap.max_concurrent:
        assert admits == [], "admitted while already at max_concurrent"
    else:
        assert len(active) + len(new) <= cap.max_concurrent

    cpu_before = sum(d.cpu for d in active)
    if cpu_before > cap.cpu + EPS:
        assert admits == [], "admitted while CPU already over capacity"
    else:
        assert cpu_before + sum(d.cpu for d in new) <= cap.cpu + EPS

    mem_before = sum(d.memory_bytes for d in active)
    if mem_before > cap.memory_bytes:
        assert admits == [], "admitted while memory already over capacity"
    else:
        assert mem_before + sum(d.memory_bytes for d in new) <= cap.memory_bytes

    if cap.per_instance is not None:
        before = Counter(d.instance_id for d in active)
        added = Counter(d.instance_id for d in new)
        for instance, n in added.items():
            assert before[instance] < cap.per_instance, f"admitted on {instance} while at its quota"
            assert before[instance] + n <= cap.per_instance


# -- 2. GPUs ----------------------------------------------------------------------


def check_gpus_are_exact_free_and_never_shared(world: World, actions) -> None:
    by_id = {d.id: d for d in world.desired}
    held = {g for d in world.desired if is_active(d, world.in_flight) for g in d.gpus_assigned}
    given_out: list[str] = []
    for admit in admits_of(actions):
        assert len(admit.gpus) == by_id[admit.experiment_id].gpus_requested
        given_out += admit.gpus
    assert len(given_out) == len(set(given_out)), f"a GPU given twice: {given_out}"
    assert set(given_out) <= set(world.capacity.gpus)
    assert not set(given_out) & held, "a GPU given that an active record holds"


# -- 3, 4. reaping ------------------------------------------------------------------


def check_every_orphan_is_torn_down_exactly_once(world: World, actions) -> None:
    ids = {d.id for d in world.desired}
    teardowns = Counter(a.sandbox for a in actions if isinstance(a, Teardown))
    for sandbox in world.observed:
        if sandbox.experiment_id not in ids:
            assert teardowns[sandbox.name] == 1, f"orphan {sandbox.name} torn down {teardowns[sandbox.name]}x"
    assert all(n == 1 for n in teardowns.values()), f"a sandbox torn down twice: {teardowns}"
    assert set(teardowns) <= {s.name for s in world.observed}, "teardown of a sandbox nobody observed"


def _protected(sandbox: Observed, by_id: dict[str, Desired], in_flight: frozenset[str]) -> bool:
    record = by_id.get(sandbox.experiment_id) if sandbox.experiment_id is not None else None
    if record is None:
        return False
    if record.id in in_flight:
        return True
    if sandbox.name != record.sandbox_name:
        return False
    if record.phase in (Phase.RUNNING, Phase.COLLECTING):
        return True
    return record.phase.finished and record.preserved_until is not None and not _released(record)


def _released(record: Desired) -> bool:
    """A finished record's preserved sandbox goes: its TTL passed, or `genesis delete` asked."""
    return (record.phase.finished and record.preserved_until is not None
            and (record.preserved_until <= NOW or record.cancel_requested))


def check_teardowns_spare_live_preserved_and_in_flight_sandboxes(world: World, actions) -> None:
    by_id = {d.id: d for d in world.desired}
    torn = {a.sandbox for a in actions if isinstance(a, Teardown)}
    for sandbox in world.observed:
        if _protected(sandbox, by_id, world.in_flight):
            assert sandbox.name not in torn, f"tore down protected {sandbox}"


def check_every_unprotected_sandbox_is_reaped(world: World, actions) -> None:
    # The converse of the above: anything no record may own right now goes.
    by_id = {d.id: d for d in world.desired}
    torn = {a.sandbox for a in actions if isinstance(a, Teardown)}
    for sandbox in world.observed:
        assert (sandbox.name in torn) == (not _protected(sandbox, by_id, world.in_flight)), sandbox


# -- 5, 6. one decision per record; only Pending is admitted -------------------------


def check_at_most_one_phase_change_per_record(world: World, actions) -> None:
    counts = Counter(a.experiment_id for a in actions if isinstance(a, PHASE_CHANGING))
    assert all(n == 1 for n in counts.values()), counts
    assert set(counts) <= {d.id for d in world.desired}


def check_in_flight_records_get_no_phase_change(world: World, actions) -> None:
    changed = {a.experiment_id for a in actions if isinstance(a, PHASE_CHANGING)}
    assert not changed & world.in_flight


def check_only_eligible_pending_records_are_admitted(world: World, actions) -> None:
    by_id = {d.id: d for d in world.desired}
    for admit in admits_of(actions):
        record = by_id[admit.experiment_id]
        assert record.phase is Phase.PENDING, f"admitted a {record.phase.value} record"
        assert eligible(record, world.in_flight), record


def check_cancelled_pending_records_are_failed_cancelled(world: World, actions) -> None:
    fails = {a.experiment_id: a.code for a in actions if isinstance(a, Fail)}
    for record in world.desired:
        if record.phase is Phase.PENDING and record.cancel_requested and record.id not in world.in_flight:
            assert fails.get(record.id) == "cancelled"


def check_no_second_kill(world: World, actions) -> None:
    by_id = {d.id: d for d in world.desired}
    for kill in (a for a in actions if isinstance(a, Kill)):
        record = by_id[kill.experiment_id]
        assert record.phase is Phase.RUNNING and record.kill_reason is None, f"Kill for {record}"
        assert kill.sandbox == record.sandbox_name
        assert kill.reason == ("cancelled" if record.cancel_requested else "timeout")


def check_retry_only_within_the_backoff_limit(world: World, actions) -> None:
    by_id = {d.id: d for d in world.desired}
    for action in actions:
        if isinstance(action, Retry):
            record = by_id[action.experiment_id]
            assert record.attempt < world.limits.backoff_limit, f"retried past the limit: {record}"
            assert not record.cancel_requested, "retried a cancelled record"
            assert action.not_before > NOW
        elif isinstance(action, Fail) and action.code == "sandbox_lost":
            assert by_id[action.experiment_id].attempt >= world.limits.backoff_limit


def check_unpreserve_exactly_when_released_and_gone(world: World, actions) -> None:
    names = {s.name for s in world.observed}
    unpreserved = Counter(a.experiment_id for a in actions if isinstance(a, Unpreserve))
    assert all(n == 1 for n in unpreserved.values()), unpreserved
    for record in world.desired:
        expected = _released(record) and record.sandbox_name not in names
        if record.id not in world.in_flight or not expected:
            assert unpreserved[record.id] == int(expected), record
    cleared = {a.sandbox for a in actions if isinstance(a, Teardown) and a.clear_preserved}
    for record in world.desired:
        if _released(record) and record.sandbox_name in names and record.id not in world.in_flight:
            assert record.sandbox_name in cleared, f"expired or released preserved sandbox kept: {record}"


# -- admission quality: priority first, and no idle room left behind -------------------


def _fits(record: Desired, *, count, cpu, mem, per_instance, free_gpus, cap: Capacity) -> bool:
    return (count < cap.max_concurrent
            and (cap.per_instance is None or per_instance[record.instance_id] < cap.per_instance)
            and cpu + record.cpu <= cap.cpu + EPS
            and mem + record.memory_bytes <= cap.memory_bytes
            and record.gpus_requested <= len(free_gpus))


def check_admission_is_work_conserving(world: World, actions) -> None:
    """Backfill: after the plan no eligible, unadmitted record would still fit."""
    cap = world.capacity
    by_id = {d.id: d for d in world.desired}
    admits = admits_of(actions)
    holding = [d for d in world.desired if is_active(d, world.in_flight)] + [by_id[a.experiment_id] for a in admits]
    taken = {g for d in world.desired if is_active(d, world.in_flight) for g in d.gpus_assigned}
    taken |= {g for a in admits for g in a.gpus}
    state = dict(count=len(holding), cpu=sum(d.cpu for d in holding), mem=sum(d.memory_bytes for d in holding),
                 per_instance=Counter(d.instance_id for d in holding),
                 free_gpus=[g for g in cap.gpus if g not in taken], cap=cap)
    admitted = {a.experiment_id for a in admits}
    for record in world.desired:
        if eligible(record, world.in_flight) and record.id not in admitted:
            assert not _fits(record, **state), f"{record.id} still fits after the plan"


def check_the_best_ranked_record_is_admitted_when_it_fits(world: World, actions) -> None:
    cap = world.capacity
    queue = sorted((d for d in world.desired if eligible(d, world.in_flight)),
                   key=lambda d: (-d.priority, d.created_at))
    if not queue:
        return
    best = queue[0]
    active = [d for d in world.desired if is_active(d, world.in_flight)]
    taken = {g for d in active for g in d.gpus_assigned}
    fits = _fits(best, count=len(active), cpu=sum(d.cpu for d in active), mem=sum(d.memory_bytes for d in active),
                 per_instance=Counter(d.instance_id for d in active),
                 free_gpus=[g for g in cap.gpus if g not in taken], cap=cap)
    top = [d for d in queue if (d.priority, d.created_at) == (best.priority, best.created_at)]
    admitted = {a.experiment_id for a in admits_of(actions)}
    if fits:
        # ties in (priority, created_at) are broken some fixed way; one of them goes first
        assert admitted & {d.id for d in top}, f"{best.id} fits but no record of its rank was admitted"
        if len(top) == 1:
            assert best.id in admitted


# -- determinism, purity and order ---------------------------------------------------


def check_plan_is_deterministic(world: World, actions) -> None:
    assert run(world) == actions, "same inputs, different plan"
    copied = World(copy.deepcopy(world.desired), copy.deepcopy(world.observed), world.capacity, world.limits,
                   frozenset(world.in_flight))
    assert run(copied) == actions, "equal inputs, different plan"


def check_admissions_do_not_depend_on_record_order(world: World, actions, rnd) -> None:
    shuffled = list(world.desired)
    rnd.shuffle(shuffled)
    other = World(shuffled, world.observed, world.capacity, world.limits, world.in_flight)
    assert admits_of(run(other)) == admits_of(actions), "admissions changed with the order of the records"


CHECKS = [
    check_admits_never_exceed_capacity,                            # property 1
    check_gpus_are_exact_free_and_never_shared,                    # property 2
    check_every_orphan_is_torn_down_exactly_once,                  # property 3
    check_teardowns_spare_live_preserved_and_in_flight_sandboxes,  # property 4
    check_every_unprotected_sandbox_is_reaped,
    check_at_most_one_phase_change_per_record,                     # property 5
    check_in_flight_records_get_no_phase_change,
    check_only_eligible_pending_records_are_admitted,              # property 6
    check_cancelled_pending_records_are_failed_cancelled,
    check_no_second_kill,
    check_retry_only_within_the_backoff_limit,
    check_unpreserve_exactly_when_released_and_gone,
    check_admission_is_work_conserving,
    check_the_best_ranked_record_is_admitted_when_it_fits,
    check_plan_is_deterministic,
]


# One @given test runs every check on each generated world: generating a world
# costs far more than planning it, so this keeps 300 examples to a few seconds.
# A failure names the check (its function is in the traceback and the message).
@PROPS
@given(worlds(), st.randoms(use_true_random=False))
def test_plan_invariants(world, rnd):
    desired_before, observed_before = copy.deepcopy(world.desired), copy.deepcopy(world.observed)
    in_flight_before = frozenset(world.in_flight)
    actions = run(world)
    assert world.desired == desired_before and world.observed == observed_before, "plan mutated its inputs"
    assert world.in_flight == in_flight_before
    for check in CHECKS:
        check(world, actions)
    check_admissions_do_not_depend_on_record_order(world, actions, rnd)


def test_checks_catch_a_broken_plan():
    """The oracles are not vacuous: each rejects a plan that breaks its rule."""
    record = Desired(id="e0", instance_id="i0", phase=Phase.RUNNING, priority=0, created_at=NOW,
                     sandbox_name="sb-e0", gpus_assigned=("g0",))
    pending = Desired(id="e1", instance_id="i0", phase=Phase.PENDING, priority=0, created_at=NOW,
                      gpus_requested=1)
    world = World([record, pending], [Observed("sb-e0", "e0", "running"), Observed("orphan-0", "ghost", "running")],
                  Capacity(max_concurrent=1, cpu=8.0, memory_bytes=8 * GI, gpus=("g0", "g1")), Limits(),
                  frozenset())
    broken_plans = {
        check_admits_never_exceed_capacity: [Teardown("orphan-0", "ghost", "x"), Admit("e1", ("g1",))],
        check_gpus_are_exact_free_and_never_shared: [Teardown("orphan-0", "ghost", "x"), Admit("e1", ("g0",))],
        check_every_orphan_is_torn_down_exactly_once: [],
        check_teardowns_spare_live_preserved_and_in_flight_sandboxes: [Teardown("sb-e0", "e0", "x")],
        check_at_most_one_phase_change_per_record: [Kill("e0", "sb-e0", "timeout"), Collect("e0", "sb-e0")],
        check_only_eligible_pending_records_are_admitted: [Admit("e0")],
        check_no_second_kill: [Kill("e0", "sb-e0", "cancelled")],
        check_retry_only_within_the_backoff_limit: [Retry("e0", "x", NOW)],
        check_unpreserve_exactly_when_released_and_gone: [Unpreserve("e0")],
    }
    assert run(world) == [Teardown("orphan-0", "ghost", run(world)[0].reason)]
    for check in CHECKS:
        check(world, run(world))  # the real plan passes
    for check, broken in broken_plans.items():
        try:
            check(world, broken)
        except AssertionError:
            continue
        raise AssertionError(f"{check.__name__} accepted a broken plan {broken}")

"""The controller's decisions: ``plan(desired, observed, ...) -> actions``.

Level-triggered and pure. Desired state is the experiment records that
still need something (not finished, or finished with a preserved sandbox)
and the baselines being run (one repetition at a time, each a sandbox of
its own, with a deadline from its own timeout); observed state is every
sandbox the runtime reports with Genesis's label.
Each pass compares the two from scratch, so a controller that restarts
after a crash (with nothing in flight) decides the same things a running
one would: adopt sandboxes that still run, collect those that exited,
retry those that vanished, re-drive steps that were interrupted, and reap
whatever has no live record.

Nothing here does I/O; the executor applies the actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from orchestrator.domain.models import Phase

ACTIVE_PHASES = (Phase.BUILDING, Phase.RUNNING, Phase.COLLECTING)


@dataclass(frozen=True)
class Desired:
    """What the controller needs to know about one experiment record."""

    id: str
    instance_id: str
    phase: Phase
    priority: int
    created_at: datetime
    attempt: int = 0
    cancel_requested: bool = False
    sandbox_name: str | None = None
    phase_since: datetime | None = None
    deadline_at: datetime | None = None
    not_before: datetime | None = None
    preserved_until: datetime | None = None
    kill_reason: str | None = None
    cpu: float = 1.0
    memory_bytes: int = 2**30
    gpus_requested: int = 0
    gpus_assigned: tuple[str, ...] = ()
    waiting_for: str | None = None  # a baseline key, while Building waits for it


BASELINE_TASK = "baseline:"
BASELINE_LABEL_PREFIX = "baseline-"  # a baseline sandbox's experiment label: this + key[:16]


def baseline_label(key: str) -> str:
    return BASELINE_LABEL_PREFIX + key[:16]


@dataclass(frozen=True)
class DesiredBaseline:
    """A baseline record: Pending (the next repetition to launch), Running, or finished."""

    key: str
    phase: str  # Pending | Running | Succeeded | Failed
    sandbox_name: str | None = None
    deadline_at: datetime | None = None
    kill_reason: str | None = None
    gpus: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        """The in-flight key of its steps (experiments use their id)."""
        return BASELINE_TASK + self.key

    @property
    def active(self) -> bool:
        return self.phase in ("Pending", "Running")


@dataclass(frozen=True)
class Observed:
    """One sandbox as the runtime reports it."""

    name: str
    experiment_id: str | None
    status: str  # created | running | exited
    role: str = "experiment"
    uid: str | None = None  # the runtime's id: actions on it name this object, not the name


@dataclass(frozen=True)
class Capacity:
    max_concurrent: int = 2
    per_instance: int | None = None
    cpu: float = 1.0
    memory_bytes: int = 2**30
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Limits:
    backoff_limit: int = 3  # attempts in all, as a Kubernetes Job's backoffLimit + 1
    backoff_base_s: float = 2.0
    backoff_max_s: float = 300.0
    phase_deadline_s: float = 1800.0  # longest a step may stay in Building or Collecting


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class Admit:
    """Pending → Building: build the snapshot, run the baseline, launch."""

    experiment_id: str
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class Resume:
    """Re-drive a step that was interrupted (no task in flight for it)."""

    experiment_id: str
    step: str  # "start" (Building) or "collect" (Collecting)


@dataclass(frozen=True)
class Collect:
    """Running and its sandbox exited: read results and decide."""

    experiment_id: str
    sandbox: str


@dataclass(frozen=True)
class Kill:
    experiment_id: str
    sandbox: str
    reason: str  # "timeout" | "cancelled"


@dataclass(frozen=True)
class Retry:
    """An infrastructure failure: back to Pending, not before ``not_before``."""

    experiment_id: str
    reason: str
    not_before: datetime


@dataclass(frozen=True)
class Fail:
    experiment_id: str
    code: str
    message: str


@dataclass(frozen=True)
class Teardown:
    """Delete a sandbox (rollback, orphan, expired preservation)."""

    sandbox: str
    experiment_id: str | None
    reason: str
    clear_preserved: bool = False
    uid: str | None = None


@dataclass(frozen=True)
class Unpreserve:
    """A preserved record whose TTL passed and whose sandbox is already gone."""

    experiment_id: str


@dataclass(frozen=True)
class StartBaseline:
    """Launch the baseline's next repetition."""

    key: str


@dataclass(frozen=True)
class CollectBaseline:
    """The repetition's sandbox exited: read it, then the next or the end."""

    key: str
    sandbox: str


@dataclass(frozen=True)
class KillBaseline:
    """The repetition ran past its own deadline."""

    key: str
    sandbox: str


@dataclass(frozen=True)
class LostBaseline:
    """The repetition's sandbox vanished (or was never started): launch it again, within the backoff limit."""

    key: str


Action = (Admit | Resume | Collect | Kill | Retry | Fail | Teardown | Unpreserve
          | StartBaseline | CollectBaseline | KillBaseline | LostBaseline)


@dataclass(frozen=True)
class Usage:
    """What admitted experiments hold right now."""

    count: int = 0
    cpu: float = 0.0
    memory_bytes: int = 0
    per_instance: dict[str, int] = field(default_factory=dict)
    gpus: frozenset[str] = frozenset()


def usage_of(desired: list[Desired], in_flight: frozenset[str] = frozenset(),
             baselines: tuple[DesiredBaseline, ...] = ()) -> Usage:
    """Held by records in an active phase, or with a step in flight (admitted this
    instant); a running baseline keeps the GPUs it was launched with."""
    active = [d for d in desired if d.phase in ACTIVE_PHASES or (d.id in in_flight and not d.phase.finished)]
    per_instance: dict[str, int] = {}
    for d in active:
        per_instance[d.instance_id] = per_instance.get(d.instance_id, 0) + 1
    return Usage(count=len(active), cpu=sum(d.cpu for d in active),
                 memory_bytes=sum(d.memory_bytes for d in active), per_instance=per_instance,
                 gpus=frozenset(g for d in active for g in d.gpus_assigned)
                 | frozenset(g for b in baselines if b.phase == "Running" for g in b.gpus))


def backoff(attempt: int, limits: Limits) -> timedelta:
    """Exponential from ``backoff_base_s``, capped (the exponent too, so it never overflows)."""
    exponent = min(max(attempt - 1, 0), 60)
    return timedelta(seconds=min(limits.backoff_base_s * 2.0 ** exponent, limits.backoff_max_s))


def plan(desired: list[Desired], observed: list[Observed], *, now: datetime, capacity: Capacity,
         limits: Limits, in_flight: frozenset[str] = frozenset(),
         baselines: tuple[DesiredBaseline, ...] = ()) -> list[Action]:
    """Every action this pass should take; teardowns first, admissions last."""
    by_id = {d.id: d for d in desired}
    by_key = {b.key: b for b in baselines}
    sandboxes: dict[str, list[Observed]] = {}
    for sandbox in observed:
        sandboxes.setdefault(sandbox.experiment_id or "", []).append(sandbox)
    actions: list[Action] = []
    actions += _reap([s for s in observed if s.role != "baseline"], by_id, now=now, in_flight=in_flight)
    actions += _reap_baselines([s for s in observed if s.role == "baseline"], baselines, in_flight=in_flight)
    for baseline in baselines:
        if baseline.active and baseline.task not in in_flight:
            actions += _drive_baseline(baseline, observed, now=now)
    for record in desired:
        if record.id not in in_flight:
            actions += _drive(record, sandboxes.get(record.id, []), now=now, limits=limits, baselines=by_key)
    actions += _admit(desired, now=now, capacity=capacity, in_flight=in_flight, baselines=baselines)
    return actions


def _reap_baselines(observed: list[Observed], baselines: tuple[DesiredBaseline, ...], *,
                    in_flight: frozenset[str]) -> list[Action]:
    """A baseline sandbox lives while it is its record's running repetition (or a step is on it)."""
    actions: list[Action] = []
    for sandbox in observed:
        owner = next((b for b in baselines if sandbox.experiment_id == baseline_label(b.key)), None)
        if owner is not None and owner.task in in_flight:
            continue
        if owner is None or owner.phase != "Running" or sandbox.name != owner.sandbox_name:
            actions.append(Teardown(sandbox.name, None, "orphan: not the running repetition of a baseline",
                                    uid=sandbox.uid))
    return actions


def _drive_baseline(baseline: DesiredBaseline, observed: list[Observed], *, now: datetime) -> list[Action]:
    if baseline.phase == "Pending":
        return [StartBaseline(baseline.key)]
    live = next((s for s in observed if s.name == baseline.sandbox_name), None)
    if live is None and baseline.kill_reason is not None:
        # Killed before it ever ran (a runtime deletes what it cannot stop: an unschedulable pod).
        return [CollectBaseline(baseline.key, baseline.sandbox_name or "")]
    if live is None or live.status == "created":  # vanished, or never started by a controller that died
        return [LostBaseline(baseline.key)]
    if live.status == "exited":
        return [CollectBaseline(baseline.key, live.name)]
    if baseline.deadline_at is not None and now >= baseline.deadline_at and baseline.kill_reason is None:
        return [KillBaseline(baseline.key, live.name)]
    return []


def _release(record: Desired, *, now: datetime) -> str | None:
    """Why a finished record's preserved sandbox goes now, if it does: its TTL
    passed, or a delete asked for it (``cancel_requested`` on a finished record)."""
    if not record.phase.finished or record.preserved_until is None:
        return None
    if record.cancel_requested:
        return "released: deleted by request"
    return "preservation TTL expired" if record.preserved_until <= now else None


def _live_sandbox(record: Desired, *, now: datetime) -> str | None:
    """The one sandbox a record may own right now, if any."""
    if record.phase in (Phase.RUNNING, Phase.COLLECTING):
        return record.sandbox_name
    if record.phase.finished and record.preserved_until is not None and _release(record, now=now) is None:
        return record.sandbox_name
    return None


def _reap(observed: list[Observed], by_id: dict[str, Desired], *, now: datetime,
          in_flight: frozenset[str]) -> list[Action]:
    actions: list[Action] = []
    for sandbox in observed:
        record = by_id.get(sandbox.experiment_id or "")
        if record is None:
            actions.append(Teardown(sandbox.name, sandbox.experiment_id, "orphan: no live record", uid=sandbox.uid))
        elif record.id in in_flight:
            continue  # a step is working on it (e.g. its baseline sandbox)
        elif sandbox.name != _live_sandbox(record, now=now):
            released = _release(record, now=now) if sandbox.name == record.sandbox_name else None
            why = released or f"not the live sandbox of a {record.phase.value} record"
            actions.append(Teardown(sandbox.name, record.id, why, clear_preserved=released is not None,
                                    uid=sandbox.uid))
    # A preserved record whose sandbox is already gone just loses the marker.
    for record in by_id.values():
        if _release(record, now=now) is not None and not any(s.name == record.sandbox_name for s in observed):
            actions.append(Unpreserve(record.id))
    return actions


def _drive(record: Desired, sandboxes: list[Observed], *, now: datetime, limits: Limits,
           baselines: dict[str, DesiredBaseline]) -> list[Action]:
    """The next step for one record that has no task in flight."""
    if record.phase is Phase.PENDING:
        if record.cancel_requested:
            return [Fail(record.id, "cancelled", "cancelled before it started")]
        return []
    if record.phase.finished:
        return []
    waiting = baselines.get(record.waiting_for or "") if record.phase is Phase.BUILDING else None
    if waiting is not None and waiting.active:
        # The baseline has its own deadline: waiting for it is never "stuck".
        return [Fail(record.id, "cancelled", "cancelled while waiting for its baseline")] \
            if record.cancel_requested else []
    if waiting is not None:  # it finished: the time spent waiting for it never counts as stuck
        return [Resume(record.id, "start")]
    stuck = record.phase_since is not None and now - record.phase_since > timedelta(seconds=limits.phase_deadline_s)
    if record.phase in (Phase.BUILDING, Phase.COLLECTING):
        if stuck:
            return [retry_or_fail(record, f"stuck in {record.phase.value}", now=now, limits=limits)]
        return [Resume(record.id, "start" if record.phase is Phase.BUILDING else "collect")]
    live = next((s for s in sandboxes if s.name == record.sandbox_name), None)
    if live is None and record.kill_reason is not None:
        # Killed before it ever ran: a runtime deletes what it cannot stop (an
        # unschedulable pod). The kill stands; collect concludes it.
        return [Collect(record.id, record.sandbox_name or "")]
    if live is None or live.status == "created":
        # Vanished, or created but never started by a controller that died.
        return [retry_or_fail(record, "sandbox lost", now=now, limits=limits)]
    if live.status == "exited":
        return [Collect(record.id, live.name)]
    if record.cancel_requested and record.kill_reason is None:
        return [Kill(record.id, live.name, "cancelled")]
    if record.deadline_at is not None and now >= record.deadline_at and record.kill_reason is None:
        return [Kill(record.id, live.name, "timeout")]
    return []


def retry_or_fail(record: Desired, reason: str, *, now: datetime, limits: Limits) -> Retry | Fail:
    """An infrastructure failure: retried with backoff up to the limit, never after a cancel."""
    if record.cancel_requested:
        return Fail(record.id, "cancelled", f"cancelled ({reason})")
    if record.attempt >= limits.backoff_limit:
        return Fail(record.id, "sandbox_lost", f"{reason}; gave up after {record.attempt} attempts")
    return Retry(record.id, reason, now + backoff(record.attempt, limits))


def _admit(desired: list[Desired], *, now: datetime, capacity: Capacity, in_flight: frozenset[str],
           baselines: tuple[DesiredBaseline, ...] = ()) -> list[Action]:
    usage = usage_of(desired, in_flight, baselines)
    count, cpu, memory = usage.count, usage.cpu, usage.memory_bytes
    per_instance = dict(usage.per_instance)
    free_gpus = [g for g in capacity.gpus if g not in usage.gpus]
    queue = sorted((d for d in desired if d.phase is Phase.PENDING and not d.cancel_requested
                    and d.id not in in_flight and (d.not_before is None or d.not_before <= now)),
                   key=lambda d: (-d.priority, d.created_at, d.id))
    actions: list[Action] = []
    for record in queue:
        if count >= capacity.max_concurrent:
            break
        if capacity.per_instance is not None and per_instance.get(record.instance_id, 0) >= capacity.per_instance:
            continue
        if cpu + record.cpu > capacity.cpu + 1e-9 or memory + record.memory_bytes > capacity.memory_bytes:
            continue  # a smaller one further down may still fit (backfill)
        if record.gpus_requested > len(free_gpus):
            continue
        gpus = tuple(free_gpus[:record.gpus_requested])
        free_gpus = free_gpus[record.gpus_requested:]
        count, cpu, memory = count + 1, cpu + record.cpu, memory + record.memory_bytes
        per_instance[record.instance_id] = per_instance.get(record.instance_id, 0) + 1
        actions.append(Admit(record.id, gpus))
    return actions

"""The reconcile loop behind ``genesis serve``.

Each pass reads desired state (the store) and actual state (sandboxes the
runtime reports by label), asks :func:`orchestrator.domain.planner.plan`
what to do, and applies the actions: quick ones inline (teardown, kill,
retry, fail), long ones (start: image + baseline + launch; collect) as
tasks, at most one per experiment, tracked as "in flight" so the next pass
leaves them alone.

It survives anything by construction: all state lives in the store and the
runtime, so a controller killed at any point and started again sees the same
world and carries on (adopting running sandboxes, re-driving interrupted
steps). Errors of one pass are logged and retried with exponential backoff;
the loop never spins and never dies of one bad record.

It survives being stopped or cut off, too (SPEC §6). Leadership is a lease
with a generation (:mod:`orchestrator.store.leases`), kept by a task of its
own that renews it every third of its TTL, never by the pass. The term
runs out on this process's monotonic clock: when it does (the database did
not answer a renewal in time) or another holder is seen, every step in
flight is cancelled at once and no pass runs. Every pass and every step
carries the term it was decided under (:data:`orchestrator.fencing.FENCE`),
so whatever a former leader still attempts after waking up is refused: its
writes by the database, its sandbox effects by the fenced runtime.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable

from orchestrator.controller.jobs import Scheduler
from orchestrator.domain import failures, planner
from orchestrator.domain.models import Phase, parse_memory
from orchestrator.domain.planner import (
    BASELINE_TASK, Action, Admit, Collect, CollectBaseline, Fail, Kill, KillBaseline, LostBaseline, Observed,
    Resume, Retry, StartBaseline, Teardown, Unpreserve,
)
from orchestrator.domain.records import ExperimentView
from orchestrator.errors import GenesisError, NotLeader, StoreError
from orchestrator.fencing import FENCE, Term
from orchestrator.pipeline import lifecycle, pools
from orchestrator.pipeline.execute import Executor
from orchestrator.runtimes.base import LABEL_EXPERIMENT, LABEL_ROLE
from orchestrator.snapshots.cleanup import prune_images
from orchestrator.store.leases import Leader
from orchestrator.store.repository import utcnow
from orchestrator.telemetry import metrics
from orchestrator.telemetry.health import Health

log = logging.getLogger(__name__)
MAX_ERROR_BACKOFF_S = 30.0
LAG_PROBE_S = 0.1
SAMPLE_TIMEOUT_S = 5.0  # the engine answers within ~1 s (its stats collector's tick)
# Removals run beside the passes, not in them: an engine takes tens to hundreds of ms to
# delete a container, and a pass that waited would hold up every admission and collection.
TEARDOWN_TASK = "teardown:"  # + the sandbox's name: the key of its removal in the tasks in flight
MAX_PARALLEL_TEARDOWNS = 4


def ends_quietly(result: object, *, exit_events: bool, exits_since: int) -> bool:
    """Whether a step's end needs no pass: a start that left its sandbox running, on a
    runtime that tells of exits, with none told of since the pass that spawned the step
    read its state (that exit, the sandbox's own perhaps, found the step in flight). Its
    exit, when it comes, wakes a pass itself. Every other end (a verdict frees a slot, a
    failure is retried) wakes one."""
    return (exit_events and exits_since == 0 and isinstance(result, ExperimentView)
            and result.phase is Phase.RUNNING)


class Controller:
    def __init__(self, executor: Executor, *, leader: Leader | None = None, pass_interval_s: float = 1.0,
                 actor: str = "controller") -> None:
        self.executor = executor
        self.store = executor.store
        self.runtime = executor.runtime
        self.settings = executor.settings
        self.capacity = self.settings.capacity()
        self.limits = self.settings.limits()
        self.leader = leader
        self.pass_interval_s = pass_interval_s
        self.actor = actor
        self._tasks: dict[str, asyncio.Task] = {}
        self._teardowns: tuple[asyncio.AbstractEventLoop, asyncio.Semaphore] | None = None  # per event loop
        self._keeper: asyncio.Task | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # run()'s, for wake() from other threads
        self._claims: dict[str, str] = {}  # pooled sandbox -> the experiment that claimed it (never changes)
        self.passes = 0
        self._exits = 0  # sandbox exits the engine has told of (runtimes with exit events)
        self._pass_exits = 0  # ... as the pass now running began
        self.leading = False
        self.health = Health(stale_after_s=max(60.0, 20 * pass_interval_s))
        self.sample_interval_s = self.settings.sandbox_sample_interval_s

    # -- lifecycle -----------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile until :meth:`shutdown`; a standby while another process leads."""
        errors = 0
        self._loop = asyncio.get_running_loop()
        # Enough threads for the blocking SDK calls of a full set of sandboxes.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
        sampler = asyncio.create_task(self._sampler()) if self.sample_interval_s > 0 else None
        lag = asyncio.create_task(self._watch_lag())
        jobs = asyncio.create_task(Scheduler.for_controller(self).run(self._stopping))  # SPEC §11
        exits = asyncio.create_task(self._watch_exits()) if self.runtime.capabilities.exit_events else None
        while not self._stopping.is_set():
            try:
                if await self._lead():
                    await self.reconcile_once()
                else:
                    self._wake.clear()  # a standby sleeps its interval: wakes are the leader's
                errors = 0
                delay = self.pass_interval_s
                self.health.beat(ok=True, leading=self.leading)
            except (GenesisError, OSError) as exc:
                self.health.beat(ok=False, leading=self.leading, error=str(exc)[:300])
                errors += 1
                metrics.RECONCILE_ERRORS.labels(kind="pass").inc()
                delay = min(self.pass_interval_s * 2 ** errors, MAX_ERROR_BACKOFF_S)
                self._wake.clear()  # the back-off holds: the next pass reads whatever happened
                log.warning("reconcile pass failed; backing off", extra={"error": str(exc), "retry_in_s": delay})
            await self._sleep(delay)
        for task in (sampler, jobs, lag, exits):
            if task is not None:
                task.cancel()
        await self._drain()

    async def run_until_idle(self, *, timeout_s: float = 600.0) -> int:
        """Reconcile until nothing is pending or in flight (``serve --once``, tests)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self._stopping.is_set():
            try:
                if not await self._lead():
                    self._wake.clear()
                    await self._sleep(self.pass_interval_s)
                    continue
                await self.reconcile_once()
            except (GenesisError, OSError) as exc:  # as in run(): one failed pass is retried
                metrics.RECONCILE_ERRORS.labels(kind="pass").inc()
                log.warning("reconcile pass failed; retrying", extra={"error": str(exc)})
                self._wake.clear()
                await self._sleep(self.pass_interval_s)
                continue
            if not self._tasks and not any(d.phase.value in ("Pending", "Building", "Running", "Collecting")
                                           for d in await self.store.desired()):
                await self._drain_pools()  # idle and about to return: no runner left waiting
                return self.passes
            await self._sleep(self.pass_interval_s)
        if not self._stopping.is_set():
            raise GenesisError(f"experiments still unfinished after {timeout_s:.0f}s", code="timeout")
        return self.passes

    async def _lead(self) -> bool:
        """Whether to run a pass now; puts the current term in this task's context."""
        if self.leader is None:
            self.leading = True
            return True
        if self._keeper is None:
            await self._renew()  # the first answer before the first pass
            self._keeper = asyncio.create_task(self._keep_lease(), name="genesis:lease")
        FENCE.set(self.leader.term if self.leading else None)
        return self.leading

    async def _keep_lease(self) -> None:
        """Renew every third of the TTL, whatever the passes are doing."""
        while True:
            await self._sleep_quietly(self.leader.ttl_s / 3)
            if self._stopping.is_set() and not self._tasks:
                return
            await self._renew()

    async def _renew(self) -> None:
        try:
            term = await asyncio.wait_for(asyncio.to_thread(self.leader.acquire), timeout=self.leader.ttl_s / 3)
        except (asyncio.TimeoutError, StoreError) as exc:
            # Unknown: the database did not answer. The term's own deadline decides.
            log.warning("lease renewal failed", extra={"error": str(exc) or type(exc).__name__})
            return
        if term is None:
            if self.leader.refused:
                log.error("not leading", extra={"reason": self.leader.refused})
            self._lose(self.leader.refused or "another controller holds the lease")
        else:
            self._gain(term)

    def _gain(self, term: Term) -> None:
        if not self.leading:
            self.leading = True
            metrics.LEADER.set(1)
            log.info("leading", extra={"holder": term.holder, "generation": term.generation})
        if self._expiry is not None:
            self._expiry.cancel()
        self._expiry = asyncio.get_running_loop().call_at(term.valid_until, self._expire, term)

    def _expire(self, term: Term) -> None:
        if term.alive():  # renewed meanwhile
            self._expiry = asyncio.get_running_loop().call_at(term.valid_until, self._expire, term)
            return
        self._lose(f"lease of generation {term.generation} lapsed")

    def _lose(self, why: str) -> None:
        """Stop acting at once: the term ends and every step in flight is cancelled."""
        if self.leader is not None:
            self.leader.lose()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if not self.leading:
            return
        self.leading = False
        metrics.LEADER.set(0)
        cancelled = list(self._tasks)
        for task in self._tasks.values():
            task.cancel()
        log.warning("standby: leadership lost", extra={"reason": why, "cancelled_steps": cancelled})

    def shutdown(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def __aenter__(self) -> "Controller":
        return self

    async def __aexit__(self, *exc) -> None:
        self.shutdown()
        await self._drain()

    async def _sleep(self, seconds: float) -> None:
        """Until the interval is up or something woke the loop (an exit, a request, a step
        that ended) since the last pass began: a pass clears the flag before it reads
        anything, so what happens while it runs wakes the next."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _drain_pools(self) -> None:
        try:
            await asyncio.wait_for(self.executor.pools.drain(), timeout=30)
        except (GenesisError, asyncio.TimeoutError) as exc:  # the next leader adopts or reaps them
            log.warning("pools not drained", extra={"error": str(exc) or "timeout"})

    async def _drain(self) -> None:
        """Let in-flight steps finish (the lease is still renewed meanwhile); whatever
        is cut short is re-driven by the next leader, which need not wait for the lease."""
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=30)
        for task in self._tasks.values():
            task.cancel()
        if self.leading:
            await self._drain_pools()
        if self._keeper is not None:
            self._keeper.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        if self.leader is not None:
            await asyncio.to_thread(self.leader.release)

    # -- one pass -----------------------------------------------------------------

    async def reconcile_once(self) -> list[Action]:
        self._wake.clear()
        self._pass_exits = self._exits
        started = time.monotonic()
        # Taken before reading state: a step that ends while we read still
        # counts as in flight this pass, so a stale view of its record can
        # never make the planner reap its sandbox or re-drive it.
        in_flight = frozenset(self._tasks)
        desired, records = await self.store.desired_state()
        baselines = tuple(planner.DesiredBaseline(key=b.key, phase=b.phase, sandbox_name=b.sandbox_name,
                                                  deadline_at=b.deadline_at, kill_reason=b.kill_reason,
                                                  gpus=tuple(b.plan.get("gpus") or ()))
                          for b in records)
        observed = await self._observed()
        actions = planner.plan(desired, observed, now=utcnow(), capacity=self.capacity, limits=self.limits,
                               in_flight=in_flight | frozenset(self._tasks), baselines=baselines)
        for action in actions:
            try:
                await self._apply(action)
                metrics.RECONCILE_ACTIONS.labels(action=type(action).__name__.lower()).inc()
            except NotLeader as exc:  # the pass was decided under a term that has ended
                self._lose(str(exc))
                break
            except GenesisError as exc:  # one bad record never stops the pass
                metrics.RECONCILE_ERRORS.labels(kind="action").inc()
                log.warning("action failed", extra={"action": type(action).__name__, "error": str(exc),
                                                    "experiment_id": getattr(action, "experiment_id", None)})
        self._gauges(desired, actions)
        self.executor.pools.kick()  # after the pass's admissions: their claims come first
        metrics.RECONCILE_DURATION.observe(time.monotonic() - started)
        self.passes += 1
        log.debug("reconcile pass", extra={"actions": len(actions), "seconds": time.monotonic() - started})
        return actions

    async def _observed(self) -> list[Observed]:
        """This installation's sandboxes as the planner sees them. A pooled one belongs to the
        experiment that claimed it (:func:`pools.claimed_view`); unclaimed, it is the pools' own
        and the planner never sees it, unless pools are off: then it is an orphan."""
        self._claims.update(self.executor.pools.claimed)  # its own claims: the store is asked about others
        states = await pools.claimed_view(self.runtime, self.store, self.settings.sandbox_selector(),
                                          known=self._claims, ready=self.executor.pools.ready_names)
        return [Observed(s.name, s.labels.get(LABEL_EXPERIMENT), s.status, s.labels.get(LABEL_ROLE, "experiment"),
                         uid=s.uid) for s in states
                if s.labels.get(LABEL_ROLE) != pools.ROLE or not self.executor.pools.enabled]

    def _gauges(self, desired: list, actions: list[Action]) -> None:
        admitted = {a.experiment_id for a in actions if isinstance(a, Admit)}
        queued = sum(1 for d in desired if d.phase.value == "Pending" and d.id not in admitted)
        self.executor.pools.backlog = queued  # a refill makes only what the queue will claim meanwhile
        metrics.EXPERIMENTS_QUEUED.set(queued)
        metrics.EXPERIMENTS_RUNNING.set(sum(1 for d in desired if d.phase.value in
                                            ("Building", "Running", "Collecting")) + len(admitted))
        now = utcnow()
        for record in desired:
            if record.id in admitted:
                metrics.observe_phase("queue_wait", (now - record.created_at).total_seconds())

    async def _watch_exits(self) -> None:
        """A pass as soon as a sandbox exits, not at the next interval: its verdict, and the
        admission its slot frees, wait for nothing. Passes still run every interval."""
        while not self._stopping.is_set():
            try:
                async for _ in self.runtime.exits(self.settings.sandbox_selector()):
                    self._exits += 1
                    self._wake.set()
            except GenesisError as exc:  # the engine restarted or is unreachable: passes go on
                log.info("exit events interrupted", extra={"error": str(exc)})
            await self._sleep_quietly(self.pass_interval_s)

    def wake(self) -> None:
        """Run a pass now (thread-safe): intake recorded a request."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def _watch_lag(self) -> None:
        """Event-loop lag: how late a 100 ms timer fires (nothing may block the loop)."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            before = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            metrics.EVENT_LOOP_LAG.observe(max(loop.time() - before - LAG_PROBE_S, 0.0))

    async def sample_sandboxes(self) -> int:
        """One round of per-sandbox cgroup figures for /metrics; returns how many.

        The engine answers a stats request from a 1 s collector, so the
        sandboxes are sampled concurrently, and never inside a pass.
        """
        states = await self.runtime.list(self.settings.sandbox_selector())
        running = [s.name for s in states if s.status == "running"]

        async def one(name: str):
            try:  # a sandbox removed mid-call can leave the engine's answer hanging
                return name, await asyncio.wait_for(self.runtime.usage(name), timeout=SAMPLE_TIMEOUT_S)
            except (GenesisError, asyncio.TimeoutError):
                return name, None
        samples = {name: usage for name, usage in await asyncio.gather(*(one(n) for n in running)) if usage}
        metrics.SANDBOXES.replace(samples)
        return len(samples)

    async def _sampler(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await self.sample_sandboxes()
            except Exception as exc:  # noqa: BLE001 - sampling must never stop for good
                log.warning("sandbox sampling failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            await self._sleep_quietly(max(self.sample_interval_s - (time.monotonic() - started), 0.1))

    async def cleanup_images(self) -> list[str]:
        """Remove the least recently used images past ``image_disk_budget`` (SPEC §11)."""
        if not self.settings.image_disk_budget:
            return []
        return await prune_images(runtime=self.runtime, store=self.store, builder=self.executor.snapshots,
                                  budget_bytes=parse_memory(self.settings.image_disk_budget),
                                  labels=self.executor.snapshots.labels,
                                  sandbox_labels=self.settings.sandbox_selector(),
                                  actor=self.actor)

    async def _sleep_quietly(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            pass

    async def _apply(self, action: Action) -> None:
        if isinstance(action, Teardown):
            if TEARDOWN_TASK + action.sandbox not in self._tasks:  # else: its removal is under way
                self._spawn(TEARDOWN_TASK + action.sandbox, self._teardown(action))
        elif isinstance(action, Unpreserve):
            await self.store.set_preserved_until(action.experiment_id, None)
        elif isinstance(action, Fail):
            await lifecycle.fail(self.store, await self.store.get(action.experiment_id), code=action.code,
                           message=action.message, actor=self.actor, runtime_name=self.runtime.name,
                           sandbox_runtime=self.runtime.capabilities.sandbox_runtime)
        elif isinstance(action, Retry):
            await self.store.requeue(action.experiment_id, reason=action.reason, not_before=action.not_before,
                               actor=self.actor)
        elif isinstance(action, Kill):
            await self.executor.kill(action.experiment_id, action.sandbox, reason=action.reason)
        elif isinstance(action, Admit):
            admitted = await self.store.admit(action.experiment_id, gpus=action.gpus, actor=self.actor)
            if admitted is not None:
                self._spawn(action.experiment_id, self.executor.start(action.experiment_id, view=admitted))
        elif isinstance(action, Resume):
            step = self.executor.start if action.step == "start" else self.executor.collect
            self._spawn(action.experiment_id, step(action.experiment_id))
        elif isinstance(action, Collect):
            self._spawn(action.experiment_id, self.executor.collect(action.experiment_id))
        elif isinstance(action, StartBaseline):
            self._spawn(BASELINE_TASK + action.key, self.executor.start_baseline(action.key))
        elif isinstance(action, CollectBaseline):
            self._spawn(BASELINE_TASK + action.key, self.executor.collect_baseline(action.key))
        elif isinstance(action, LostBaseline):
            self._spawn(BASELINE_TASK + action.key, self.executor.baseline_lost(action.key))
        elif isinstance(action, KillBaseline):
            await self.executor.kill_baseline(action.key, action.sandbox)

    async def _teardown(self, action: Teardown) -> None:
        loop = asyncio.get_running_loop()
        if self._teardowns is None or self._teardowns[0] is not loop:
            self._teardowns = (loop, asyncio.Semaphore(MAX_PARALLEL_TEARDOWNS))
        # A kept sandbox's marker is cleared with the removal's audit line, one transaction;
        # a pass in between finds the removal in flight (its task), or the sandbox gone and
        # the marker still set (it clears it: Unpreserve).
        async with self._teardowns[1]:
            await lifecycle.remove_sandbox(self.runtime, self.store, experiment_id=action.experiment_id,
                                           name=action.sandbox, uid=action.uid, actor=self.actor,
                                           reason=action.reason, unpreserve=action.clear_preserved)

    def _spawn(self, experiment_id: str, step: Awaitable) -> None:
        task = asyncio.create_task(self._guard(experiment_id, step, exits=self._pass_exits),
                                   name=f"genesis:{experiment_id}")
        self._tasks[experiment_id] = task

    async def _guard(self, experiment_id: str, step: Awaitable, *, exits: int = 0) -> None:
        """Run one step; what its failure leads to (a retry with backoff, Failed with
        which code, nothing) is :mod:`orchestrator.domain.failures`'s decision.

        A baseline's step (``baseline:<key>``) handles its own failures; an
        infrastructure error leaves its record for the next pass to re-drive.
        A removal's end (``teardown:<sandbox>``) frees room for the pools, not a slot:
        it kicks a refill, not a pass."""
        if experiment_id.startswith(TEARDOWN_TASK):
            try:
                await step
            except GenesisError as exc:  # still listed: the next pass asks for it again
                metrics.RECONCILE_ERRORS.labels(kind="action").inc()
                log.warning("action failed", extra={"action": "Teardown", "error": str(exc),
                                                    "sandbox": experiment_id[len(TEARDOWN_TASK):]})
            finally:
                self._tasks.pop(experiment_id, None)
                self.executor.pools.kick()
            return
        if experiment_id.startswith(BASELINE_TASK):
            try:
                await step
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one baseline
                failure = failures.classify(exc)
                if failure.kind in (failures.Kind.INFRASTRUCTURE, failures.Kind.SUPERSEDED):
                    log.warning("baseline step stopped; the leader's next pass re-drives it",
                                extra={"baseline": experiment_id, "kind": failure.kind.value, "error": str(exc)})
                else:
                    log.exception("baseline step crashed", extra={"baseline": experiment_id})
                    await self.store.fail_baseline(experiment_id[len(BASELINE_TASK):], failure.message)
            finally:
                self._tasks.pop(experiment_id, None)
                self._wake.set()
            return
        result = None
        try:
            result = await step
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any one experiment
            failure = failures.classify(exc)
            if failure.kind is failures.Kind.CRASH:
                log.exception("step crashed", extra={"experiment_id": experiment_id})
            else:
                log.warning("step failed", extra={"experiment_id": experiment_id, "kind": failure.kind.value,
                                                  "code": failure.code, "error": failure.message})
            await self._after_failure(experiment_id, failure)
        finally:
            self._tasks.pop(experiment_id, None)
            if not ends_quietly(result, exit_events=self.runtime.capabilities.exit_events,
                                exits_since=self._exits - exits):
                self._wake.set()

    async def _after_failure(self, experiment_id: str, failure: failures.StepFailure) -> None:
        """Remove the attempt's sandboxes and apply what :func:`failures.after_failure` decides."""
        try:
            action = failures.after_failure(await self.store.desired_of(experiment_id), failure, now=utcnow(),
                                            limits=self.limits)
            if action is None:
                return
            why = f"retrying: {failure.message}" if isinstance(action, Retry) else f"rollback: {action.code}"
            await lifecycle.remove_sandboxes(self.runtime, self.store, experiment_id, actor=self.actor,
                                             reason=why[:500])
            await self._apply(action)
        except GenesisError as exc:  # store or runtime still down: the next pass re-drives it
            log.warning("could not record the failure", extra={"experiment_id": experiment_id, "error": str(exc)})

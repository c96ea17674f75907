"""Warm pools, carried out: ready sandboxes made ahead of demand, claimed by experiments.

A pooled sandbox is created exactly as an experiment's own would be (same
image, limits, no network: :meth:`Runtime.create` with the profile's
values), but with no bundle, which :meth:`Runtime.deliver` gives it at the
claim. An experiment whose sandbox would have that profile *claims* one
instead (:meth:`Pools.claim`): a hot one (Docker: started, the runner
waiting on stdin) only receives the bundle, a warm one (created; on
Kubernetes a gated pod) is given it and started; with neither it is made
cold, as before. A claim is recorded in the store before anything is delivered (the
compare-and-set that makes a sandbox claimed once and never reused), and
the controller maps claimed sandboxes to their experiments through it,
since their labels were set before anyone asked for them.

Refill rounds (:meth:`Pools.refill_once`) run on the leading controller after
every claim and every pass: they list this installation's pooled sandboxes,
adopt what a former process made, and apply
:func:`orchestrator.domain.pools.refill` (how many, which tier; decided
there). Sandboxes with GPUs or a network are never pooled. Settings
``pools.enabled: false`` switches it all off; leftovers are then reaped as
orphans.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable
from datetime import datetime, timedelta, timezone

from orchestrator.domain import pools
from orchestrator.domain.models import parse_memory
from orchestrator.errors import GenesisError
from orchestrator.pipeline import lifecycle
from orchestrator.runtimes.base import LABEL_EXPERIMENT, LABEL_POOL, LABEL_ROLE, Runtime, SandboxSpec, SandboxState
from orchestrator.settings import Settings
from orchestrator.store.aio import AsyncStore
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
ROLE = "pool"  # the role label of every pooled sandbox, claimed or not
DEMAND_KEPT = 1000  # launches remembered per pool (the window rarely holds more)


@dataclass(frozen=True)
class Claimed:
    name: str
    uid: str | None
    tier: str
    seconds: float  # from the claim to the bundle delivered


def profile_of(spec: SandboxSpec) -> pools.Profile | None:
    """The pool a sandbox would come from; None: never pooled (GPUs, a network)."""
    if spec.gpus or spec.network:
        return None
    return pools.Profile(image=spec.image, cpu=spec.cpu, memory_bytes=spec.memory_bytes, pids=spec.pids,
                         tmp_bytes=spec.tmp_bytes, disk_bytes=spec.disk_bytes, log_max_bytes=spec.log_max_bytes,
                         log_max_files=spec.log_max_files)


def attributed(states: list[SandboxState], claims: dict[str, str]) -> list[SandboxState]:
    """``states`` with each claimed pooled sandbox shown as its experiment's (the experiment
    and role labels a sandbox made for it would carry; the pool label stays). Labels are
    fixed at creation, so this is how listings and the controller see whose it is."""
    shown = []
    for state in states:
        experiment = claims.get(state.name) if state.labels.get(LABEL_ROLE) == ROLE else None
        if experiment is not None:
            state = replace(state, labels={**state.labels, LABEL_EXPERIMENT: experiment, LABEL_ROLE: "experiment"})
        shown.append(state)
    return shown


async def claimed_view(runtime: Runtime, store: AsyncStore, labels: dict[str, str], *,
                       known: dict[str, str] | None = None, ready: Iterable[str] = ()) -> list[SandboxState]:
    """The sandboxes carrying ``labels``, claimed pooled ones attributed to their experiments.

    A claim never changes, so a caller that asks every pass keeps ``known`` (name → experiment,
    pruned here to what is listed) and names its own ``ready`` members, unclaimed as far as
    the only process that may claim them knows: the store is asked only about the rest."""
    states = await runtime.list(labels)
    ready = set(ready)
    pooled = [s.name for s in states if s.labels.get(LABEL_ROLE) == ROLE]
    cache = known if known is not None else {}
    unknown = [name for name in pooled if name not in cache and name not in ready]
    if unknown:
        cache.update(await store.claims(unknown))
    if known is not None:
        for name in set(known) - set(pooled):
            del known[name]
    return attributed(states, cache)


@dataclass(frozen=True)
class PoolRow:
    """One pool as ``genesis get pools`` shows it: its ready sandboxes by tier, and
    its claims by tier over the last hour."""

    pool: str
    image: str | None
    hot: int = 0
    warm: int = 0
    claimed_hot: int = 0
    claimed_warm: int = 0
    last_claim: datetime | None = None


async def pool_rows(runtime: Runtime, store: AsyncStore, labels: dict[str, str]) -> list[PoolRow]:
    """Every pool with ready sandboxes or claims in the last hour, from the runtime and the store."""
    states = await runtime.list({**labels, LABEL_ROLE: ROLE})
    claims = await store.claims([s.name for s in states])
    rows: dict[str, dict] = {}
    for state in states:
        if state.name in claims or state.status not in ("created", "running"):
            continue
        row = rows.setdefault(state.labels.get(LABEL_POOL, ""), {"image": state.image})
        tier = "hot" if state.status == "running" else "warm"
        row[tier] = row.get(tier, 0) + 1
    for pool, tier, count, last in await store.claim_counts(datetime.now(timezone.utc) - timedelta(hours=1)):
        row = rows.setdefault(pool, {"image": None})
        row[f"claimed_{tier}"] = count
        row["last_claim"] = max(filter(None, [row.get("last_claim"), last]), default=None)
    return [PoolRow(pool=pool, **fields) for pool, fields in sorted(rows.items())]


class Pools:
    """The pools of one controller: its ready members, the demand it saw, its refill rounds."""

    def __init__(self, *, runtime: Runtime, store: AsyncStore, settings: Settings, actor: str) -> None:
        self.runtime, self.store, self.actor = runtime, store, actor
        config = settings.pools
        model = runtime.capabilities.pools  # "hot" (Docker), "warm" (Kubernetes: gated pods) or "none"
        self.enabled = config.enabled and model != "none"
        self.selector = settings.sandbox_selector()
        self.labels = {**settings.extra_labels, **self.selector, LABEL_ROLE: ROLE}
        self.budget = pools.Budget(max_sandboxes=config.max_sandboxes,
                                   max_memory_bytes=parse_memory(config.max_memory),
                                   max_per_pool=config.max_per_pool,
                                   max_hot_per_pool=config.max_hot_per_pool if model == "hot" else 0,
                                   window_s=config.window_s,
                                   idle_s=config.idle_s)
        self._ready: dict[str, pools.Member] = {}  # unclaimed members, by name
        self._taken: set[str] = set()  # claimed (or being claimed) by this process: never ready again
        self._claimed: dict[str, str] = {}  # claimed by this process: name -> experiment (for the controller)
        self._making: set[str] = set()  # being created (or started) by this process: not ready, not claimed
        self._profiles: dict[str, pools.Profile] = {}
        self._launches: dict[str, deque[float]] = {}
        self._last: dict[str, float] = {}
        self._round: asyncio.Task | None = None
        self._again = False
        self._draining = False
        self._listed = False  # the runtime's pooled sandboxes listed (adopted) at least once
        self.backlog = 0  # experiments waiting for a slot, as the controller's latest pass counted them

    # -- claims ------------------------------------------------------------------

    async def claim(self, spec: SandboxSpec, *, experiment_id: str) -> Claimed | None:
        """A ready sandbox of ``spec``'s profile, claimed for ``experiment_id`` and given
        ``spec.bundle``; None: there is none (or it failed), and the caller makes one."""
        profile = profile_of(spec) if self.enabled else None
        if profile is None:
            return None
        self._note(profile)
        if not self._listed:  # this process's first claim: adopt what a former one left ready
            await self._members()
        try:
            for member in pools.claim_order(list(self._ready.values()), profile.key):
                if self._ready.pop(member.name, None) is None:
                    continue  # another claim (or an eviction) took it meanwhile
                self._taken.add(member.name)
                started = time.monotonic()
                if not await self.store.claim_sandbox(name=member.name, uid=member.uid or "", pool=member.pool,
                                                      tier=member.tier, experiment_id=experiment_id,
                                                      actor=self.actor):
                    continue  # claimed elsewhere (a former leader's step)
                self._claimed[member.name] = experiment_id
                try:
                    await self.runtime.deliver(member.name, spec.bundle, uid=member.uid, start=member.tier == "warm",
                                               timeout_s=spec.timeout_s)
                except GenesisError as exc:  # e.g. its runner died while waiting: made cold instead
                    log.warning("pooled sandbox unusable", extra={"sandbox": member.name, "error": str(exc),
                                                                  "experiment_id": experiment_id})
                    await lifecycle.remove_sandbox(self.runtime, self.store, experiment_id=experiment_id,
                                                   name=member.name, uid=member.uid, actor=self.actor,
                                                   reason=f"pooled sandbox unusable: {exc}"[:500])
                    return None
                seconds = time.monotonic() - started
                metrics.POOL_CLAIMS.labels(tier=member.tier).inc()
                metrics.POOL_CLAIM_SECONDS.labels(tier=member.tier).observe(seconds)
                return Claimed(member.name, member.uid, member.tier, seconds)
            return None
        finally:
            self.kick()

    @property
    def ready_names(self) -> set[str]:
        """The unclaimed sandboxes this process holds ready or is making (none other may claim them)."""
        return set(self._ready) | self._making

    @property
    def claimed(self) -> dict[str, str]:
        """The claims this process made, by sandbox name: the controller need not ask the store."""
        return dict(self._claimed)

    def _note(self, profile: pools.Profile) -> None:
        now = time.monotonic()
        self._profiles[profile.key] = profile
        self._launches.setdefault(profile.key, deque(maxlen=DEMAND_KEPT)).append(now)
        self._last[profile.key] = now

    # -- refill ------------------------------------------------------------------

    def kick(self) -> None:
        """Run a refill round soon (one at a time; a kick during one asks for another)."""
        if not self.enabled or self._draining:
            return
        if self._running_round() is not None:
            self._again = True
            return
        self._round = asyncio.create_task(self._rounds(), name="genesis:pools")

    def _running_round(self) -> asyncio.Task | None:
        """The round in progress on this event loop (a former loop's, e.g. a controller
        run before this one in the same process, is not waited for)."""
        task = self._round
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return None
        return task

    async def _rounds(self) -> None:
        while True:
            self._again = False
            try:
                await self.refill_once()
            except GenesisError as exc:  # the runtime or store is down, or the term ended: next pass
                log.warning("pool refill failed", extra={"error": str(exc)})
                return
            if not self._again or self._draining:
                return

    async def refill_once(self) -> pools.Round:
        """Bring every pool to its size: adopt, evict, start, create."""
        members = await self._members()
        now = time.monotonic()
        demands = [pools.Demand(pool=key, memory_bytes=self._memory_of(key),
                                launches=tuple(self._launches.get(key, ())), last=last)
                   for key, last in self._last.items()]
        targets = pools.sizes(demands, now=now, budget=self.budget)
        plan = pools.refill(members, targets, creatable=set(self._profiles), backlog=self.backlog)
        for member, why in plan.evict:
            if self._ready.pop(member.name, None) is not None:
                await self._remove(member.name, member.uid, why)
                metrics.POOL_EVICTIONS.labels(reason=why.split(":")[0]).inc()
        for member in plan.start:
            if self._ready.pop(member.name, None) is not None:  # no claim takes it while it starts
                self._making.add(member.name)  # ... and it is still this process's own
                try:
                    await self.runtime.start(member.name)
                finally:
                    self._making.discard(member.name)
                self._ready[member.name] = replace(member, tier="hot")
        for pool, tier in plan.create:
            member = await self._create(self._profiles[pool], tier)
            self._ready[member.name] = member
        self._gauges(targets)
        return plan

    async def drain(self) -> int:
        """Remove every ready (unclaimed) pooled sandbox: a controller stopping leaves no
        runner waiting for a bundle that no one will send. Returns how many."""
        if not self.enabled:
            return 0
        self._draining = True  # no new rounds; the one running finishes (a create is not cut in half)
        try:
            running = self._running_round()
            if running is not None:
                await asyncio.wait([running])
            return await self._remove_ready()
        finally:
            self._draining = False

    async def _remove_ready(self) -> int:
        removed = 0
        for member in await self._members():
            if self._ready.pop(member.name, None) is not None:
                await self._remove(member.name, member.uid, "drained: the controller stopped")
                metrics.POOL_EVICTIONS.labels(reason="drained").inc()
                removed += 1
        self._gauges({})
        return removed

    async def _members(self) -> list[pools.Member]:
        """This installation's unclaimed pooled sandboxes; adopts those a former process
        made, and removes those whose runner stopped before a claim."""
        states = [s for s in await self.runtime.list({**self.selector, LABEL_ROLE: ROLE})
                  if s.name not in self._making]  # half made: the round making it adds it
        # Its own ready members are unclaimed (only this process claims while it leads): the
        # store is asked about the others (a former process's, after a restart or a takeover).
        unknown = [s.name for s in states if s.name not in self._taken and s.name not in self._ready]
        claimed = await self.store.claims(unknown) if unknown else {}
        self._listed = True
        listed = {s.name for s in states}
        self._taken &= listed  # names gone from the runtime are forgotten
        self._claimed = {name: experiment for name, experiment in self._claimed.items() if name in listed}
        now = time.monotonic()
        found: dict[str, pools.Member] = {}
        for state in states:
            if state.name in self._taken or state.name in claimed:
                continue
            if state.status not in ("created", "running"):
                await self._remove(state.name, state.uid, "stopped before it was claimed")
                metrics.POOL_EVICTIONS.labels(reason="stopped").inc()
                continue
            found[state.name] = self._member(state, now)
        # Claims in flight popped their member from _ready and are in _taken: not re-added.
        self._ready = {name: member for name, member in found.items() if name not in self._taken}
        return list(self._ready.values())

    def _member(self, state: SandboxState, now: float) -> pools.Member:
        known = self._ready.get(state.name)
        pool = state.labels.get(LABEL_POOL, "")
        if known is None and pool not in self._last:  # adopted: its pool keeps it until idle
            self._last[pool] = now
        tier = "hot" if state.status == "running" else "warm"
        return pools.Member(name=state.name, uid=state.uid, pool=pool, tier=tier,
                            since=known.since if known else now)

    def _memory_of(self, pool: str) -> int:
        """A pool's sandboxes' memory limit (0: adopted, profile unknown; it only keeps what it has)."""
        profile = self._profiles.get(pool)
        return profile.memory_bytes if profile is not None else 0

    async def _create(self, profile: pools.Profile, tier: str) -> pools.Member:
        name = f"genesis-pool-{profile.key[:12]}-{secrets.token_hex(4)}"
        spec = SandboxSpec(name=name, image=profile.image, labels={**self.labels, LABEL_POOL: profile.key},
                           bundle=b"", cpu=profile.cpu, memory_bytes=profile.memory_bytes, pids=profile.pids,
                           tmp_bytes=profile.tmp_bytes, disk_bytes=profile.disk_bytes,
                           log_max_bytes=profile.log_max_bytes, log_max_files=profile.log_max_files,
                           bundle_stdin=True)
        self._making.add(name)
        try:
            uid = await self.runtime.create(spec)
            if tier == "hot":
                try:
                    await self.runtime.start(name)
                except GenesisError:
                    await self.runtime.remove(name, uid=uid)
                    raise
        finally:
            self._making.discard(name)
        return pools.Member(name=name, uid=uid, pool=profile.key, tier=tier, since=time.monotonic())

    async def _remove(self, name: str, uid: str | None, why: str) -> None:
        await lifecycle.remove_sandbox(self.runtime, self.store, experiment_id=None, name=name, uid=uid,
                                       actor=self.actor, reason=f"pool: {why}")

    def _gauges(self, targets: dict[str, pools.Size]) -> None:
        counts: dict[tuple[str, str], int] = {(pool, tier): 0 for pool in targets for tier in pools.TIERS}
        for member in self._ready.values():
            counts[(member.pool, member.tier)] = counts.get((member.pool, member.tier), 0) + 1
        metrics.set_pool_sizes(counts)

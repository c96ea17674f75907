"""Warm pools, decided: how many ready sandboxes each pool should hold, and what
one refill round does to get there.

A pool is the set of interchangeable sandboxes of one :class:`Profile`
(snapshot image and every limit a sandbox is created with). Its members are
*hot* (created and started, the runner waiting for its bundle on stdin) or
*warm* (created, not started); a pool with none leaves its experiments
*cold* (made when they start). Sizes follow demand: the launches of the
last ``window_s`` seconds, at least one while the pool was asked of within
``idle_s``, never more than the pool's own cap, and all pools together
within a budget of sandboxes and of memory (their memory limits), busiest
pool first. A pool deeper than ``max_concurrent`` is not wasted: a burst
claims its members one slot after another, and none has to be made while
the burst runs.

While experiments wait for a slot, a round makes only what they will claim
beyond the sandboxes already ready (:func:`refill`'s ``backlog``): the
rest would be made on the CPU those experiments need, and is made once
they are through.

Pure: times are the caller's monotonic clock; nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

TIERS = ("hot", "warm")


@dataclass(frozen=True)
class Profile:
    """What makes two sandboxes interchangeable: a claimed sandbox must be exactly
    the one a fresh start would have made, limits and all."""

    image: str
    cpu: float
    memory_bytes: int
    pids: int
    tmp_bytes: int
    disk_bytes: int | None
    log_max_bytes: int | None
    log_max_files: int

    @property
    def key(self) -> str:
        """The pool's name: a digest of every field (a label value, so short)."""
        fields = [self.image, self.cpu, self.memory_bytes, self.pids, self.tmp_bytes, self.disk_bytes,
                  self.log_max_bytes, self.log_max_files]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Budget:
    max_sandboxes: int
    max_memory_bytes: int
    max_per_pool: int
    max_hot_per_pool: int
    window_s: float
    idle_s: float


@dataclass(frozen=True)
class Demand:
    """One pool's recent launches (monotonic times), and the memory limit of its sandboxes."""

    pool: str
    memory_bytes: int
    launches: tuple[float, ...]
    last: float  # the latest launch (or adoption): the pool's idle clock


@dataclass(frozen=True)
class Member:
    """One ready (unclaimed) pooled sandbox."""

    name: str
    uid: str | None
    pool: str
    tier: str  # hot | warm
    since: float  # when it was made (or found, after a restart)


@dataclass(frozen=True)
class Size:
    hot: int = 0
    warm: int = 0

    @property
    def total(self) -> int:
        return self.hot + self.warm


@dataclass(frozen=True)
class Round:
    """One refill round: make these (pool, tier), start these warm members, remove these."""

    create: tuple[tuple[str, str], ...] = ()
    start: tuple[Member, ...] = ()
    evict: tuple[tuple[Member, str], ...] = ()  # (member, why)
    sizes: dict[str, Size] = field(default_factory=dict)


def sizes(demands: list[Demand], *, now: float, budget: Budget) -> dict[str, Size]:
    """How many hot and warm sandboxes each pool should hold."""
    wanted: list[tuple[int, Demand]] = []
    for demand in demands:
        if now - demand.last > budget.idle_s:
            continue
        recent = sum(1 for t in demand.launches if now - t <= budget.window_s)
        want = min(max(recent, 1), budget.max_per_pool)
        wanted.append((want, demand))
    wanted.sort(key=lambda item: (-item[0], -item[1].last, item[1].pool))  # busiest first
    count_left, memory_left = budget.max_sandboxes, budget.max_memory_bytes
    result: dict[str, Size] = {d.pool: Size() for d in demands}
    for want, demand in wanted:
        fits = memory_left // demand.memory_bytes if demand.memory_bytes > 0 else want
        total = max(min(want, count_left, fits), 0)
        count_left -= total
        memory_left -= total * demand.memory_bytes
        hot = min(total, budget.max_hot_per_pool)
        result[demand.pool] = Size(hot=hot, warm=total - hot)
    return result


def refill(members: list[Member], targets: dict[str, Size], *, creatable: set[str], backlog: int = 0) -> Round:
    """What brings each pool to its target: surplus removed (warm first, then the oldest),
    warm members started to make up hot ones, the rest created. ``creatable``: pools whose
    profile is known (after a restart, adopted members' may not be: they are only kept).
    ``backlog``: experiments waiting for a slot; while there are any, only as many are
    created as they outnumber the members kept (the rest waits until they are through)."""
    create: list[tuple[str, str]] = []
    start: list[Member] = []
    evict: list[tuple[Member, str]] = []
    pools = sorted({m.pool for m in members} | set(targets))
    for pool in pools:
        target = targets.get(pool, Size())
        hot = sorted((m for m in members if m.pool == pool and m.tier == "hot"), key=lambda m: m.since)
        warm = sorted((m for m in members if m.pool == pool and m.tier == "warm"), key=lambda m: m.since)
        why = "idle: no demand" if target.total == 0 else "surplus: over the pool's size"
        while len(hot) + len(warm) > target.total:
            if warm and (len(warm) > target.warm or not hot):
                evict.append((warm.pop(0), why))
            else:
                evict.append((hot.pop(0), why))
        promote = min(max(target.hot - len(hot), 0), len(warm))
        start += warm[:promote]
        hot_after, warm_after = len(hot) + promote, len(warm) - promote
        if pool in creatable:
            new_hot = max(target.hot - hot_after, 0)
            create += [(pool, "hot")] * new_hot
            create += [(pool, "warm")] * max(target.total - hot_after - new_hot - warm_after, 0)
    if backlog > 0:
        create = create[:max(backlog - (len(members) - len(evict)), 0)]
    return Round(create=tuple(create), start=tuple(start), evict=tuple(evict), sizes=dict(targets))


def claim_order(members: list[Member], pool: str) -> list[Member]:
    """Who a claim on ``pool`` takes, in order: hot before warm, the oldest first
    (a sandbox that waited longest is the first to go stale)."""
    return sorted((m for m in members if m.pool == pool), key=lambda m: (TIERS.index(m.tier), m.since))


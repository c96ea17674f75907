"""Warm pools, decided (orchestrator/domain/pools.py): sizes follow demand within the
budget, refill rounds reach them, claims take hot before warm. Pure: no Docker."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from orchestrator.domain.pools import Budget, Demand, Member, Profile, Size, claim_order, refill, sizes

GI = 2**30
BUDGET = Budget(max_sandboxes=8, max_memory_bytes=8 * GI, max_per_pool=6, max_hot_per_pool=4, window_s=60,
                idle_s=300)


def demand(pool: str, launches: list[float], *, memory: int = GI, last: float | None = None) -> Demand:
    return Demand(pool=pool, memory_bytes=memory, launches=tuple(launches),
                  last=last if last is not None else max(launches, default=0.0))


def member(name: str, pool: str, tier: str, since: float = 0.0) -> Member:
    return Member(name=name, uid=f"uid-{name}", pool=pool, tier=tier, since=since)


def test_a_pool_holds_one_after_any_recent_demand_and_grows_with_the_rate_to_its_cap():
    assert sizes([demand("a", [100.0])], now=101.0, budget=BUDGET) == {"a": Size(hot=1)}
    assert sizes([demand("a", [100.0, 100.5, 101.0])], now=101.0, budget=BUDGET) == {"a": Size(hot=3)}
    burst = [100.0 + i / 10 for i in range(20)]  # deeper than any max_concurrent: claimed slot after slot
    assert sizes([demand("a", burst)], now=102.0, budget=BUDGET) == {"a": Size(hot=4, warm=2)}  # max_per_pool


def test_launches_older_than_the_window_count_once_and_an_idle_pool_is_emptied():
    old = [0.0, 1.0, 2.0, 3.0]
    assert sizes([demand("a", old)], now=200.0, budget=BUDGET) == {"a": Size(hot=1)}  # within idle_s
    assert sizes([demand("a", old)], now=400.0, budget=BUDGET) == {"a": Size()}  # idle: nothing kept


def test_hot_beyond_the_per_pool_cap_is_warm():
    budget = Budget(**{**BUDGET.__dict__, "max_hot_per_pool": 1})
    assert sizes([demand("a", [1.0, 1.1, 1.2])], now=2.0, budget=budget) == {"a": Size(hot=1, warm=2)}


def test_the_budget_goes_to_the_busiest_pool_first_in_sandboxes_and_in_memory():
    budget = Budget(**{**BUDGET.__dict__, "max_sandboxes": 5})
    busy, quiet = demand("busy", [1.0, 1.1, 1.2, 1.3]), demand("quiet", [1.0])
    assert sizes([quiet, busy], now=2.0, budget=budget) == {"busy": Size(hot=4), "quiet": Size(hot=1)}
    tight = Budget(**{**BUDGET.__dict__, "max_memory_bytes": 3 * GI})
    assert sizes([quiet, busy], now=2.0, budget=tight) == {"busy": Size(hot=3), "quiet": Size()}


def test_refill_creates_what_is_missing_hot_first_and_only_for_known_profiles():
    done = refill([], {"a": Size(hot=2, warm=1), "b": Size(hot=1)}, creatable={"a"})
    assert done.create == (("a", "hot"), ("a", "hot"), ("a", "warm"))
    assert not done.start and not done.evict


def test_refill_starts_warm_members_to_make_up_hot_ones_before_creating():
    members = [member("w1", "a", "warm", 1), member("w2", "a", "warm", 2)]
    done = refill(members, {"a": Size(hot=1, warm=1)}, creatable={"a"})
    assert [m.name for m in done.start] == ["w1"]
    assert done.create == () and done.evict == ()


def test_refill_evicts_surplus_warm_first_then_the_oldest_and_everything_of_an_idle_pool():
    members = [member("h1", "a", "hot", 1), member("h2", "a", "hot", 2), member("w1", "a", "warm", 3)]
    done = refill(members, {"a": Size(hot=1)}, creatable={"a"})
    assert [(m.name, why.split(":")[0]) for m, why in done.evict] == [("w1", "surplus"), ("h1", "surplus")]
    idle = refill(members, {"a": Size()}, creatable={"a"})
    assert {m.name for m, _ in idle.evict} == {"h1", "h2", "w1"}
    assert all(why.startswith("idle") for _, why in idle.evict)
    # A pool the planner no longer sizes (an adopted one, its profile unknown) is emptied too.
    assert {m.name for m, _ in refill(members, {}, creatable=set()).evict} == {"h1", "h2", "w1"}


def test_while_experiments_wait_a_refill_makes_only_what_they_outnumber_the_ready_ones_by():
    ready = [member("h1", "a", "hot", 1), member("h2", "a", "hot", 2)]
    target = {"a": Size(hot=4, warm=2)}
    assert len(refill(ready, target, creatable={"a"}).create) == 4  # nobody waiting: to the target
    assert refill(ready, target, creatable={"a"}, backlog=2).create == ()  # the two ready serve them
    assert refill(ready, target, creatable={"a"}, backlog=3).create == (("a", "hot"),)
    assert len(refill(ready, target, creatable={"a"}, backlog=50).create) == 4  # never past the target
    # Surplus still goes at once: the backlog only holds back what would be made.
    surplus = refill(ready, {"a": Size(hot=1)}, creatable={"a"}, backlog=5)
    assert [m.name for m, _ in surplus.evict] == ["h1"] and surplus.create == ()


def test_a_claim_takes_hot_before_warm_oldest_first_and_only_from_its_pool():
    members = [member("w0", "a", "warm", 0), member("h2", "a", "hot", 2), member("h1", "a", "hot", 1),
               member("x", "b", "hot", 0)]
    assert [m.name for m in claim_order(members, "a")] == ["h1", "h2", "w0"]


def test_a_profile_key_changes_with_every_limit():
    base = Profile(image="img", cpu=1.0, memory_bytes=GI, pids=512, tmp_bytes=2**28, disk_bytes=None,
                   log_max_bytes=None, log_max_files=2)
    variants = [Profile(**{**base.__dict__, field: value}) for field, value in
                [("image", "img2"), ("cpu", 2.0), ("memory_bytes", 2 * GI), ("pids", 64), ("tmp_bytes", 1),
                 ("disk_bytes", GI), ("log_max_bytes", 1024), ("log_max_files", 3)]]
    assert len({base.key, *(v.key for v in variants)}) == 1 + len(variants)
    assert base.key == Profile(**base.__dict__).key and len(base.key) == 16


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.lists(st.floats(0, 100), max_size=12),
                          st.integers(1, 4)), max_size=4, unique_by=lambda t: t[0]),
       st.integers(0, 10), st.integers(0, 12))
def test_sizes_never_exceed_the_budget(pools, max_sandboxes, max_memory_gi):
    budget = Budget(**{**BUDGET.__dict__, "max_sandboxes": max_sandboxes, "max_memory_bytes": max_memory_gi * GI})
    demands = [demand(pool, launches, memory=memory_gi * GI, last=100.0) for pool, launches, memory_gi in pools]
    result = sizes(demands, now=100.0, budget=budget)
    assert sum(s.total for s in result.values()) <= max_sandboxes
    assert sum(result[d.pool].total * d.memory_bytes for d in demands) <= max_memory_gi * GI
    assert all(s.total <= budget.max_per_pool for s in result.values())
    assert all(s.hot <= budget.max_hot_per_pool for s in result.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ab"), st.sampled_from(["hot", "warm"]), st.floats(0, 10)), max_size=10),
       st.integers(0, 4), st.integers(0, 4))
def test_a_refill_round_reaches_the_target_exactly(current, hot, warm):
    members = [member(f"m{i}", pool, tier, since) for i, (pool, tier, since) in enumerate(current)]
    target = {"a": Size(hot=hot, warm=warm)}
    done = refill(members, target, creatable={"a"})
    evicted = {m.name for m, _ in done.evict}
    started = {m.name for m in done.start}
    kept = [m for m in members if m.pool == "a" and m.name not in evicted]
    hot_after = sum(1 for m in kept if m.tier == "hot" or m.name in started) + \
        sum(1 for p, t in done.create if t == "hot")
    total_after = len(kept) + len(done.create)
    assert total_after == hot + warm
    assert hot_after >= min(hot, hot + warm)
    assert all(m.pool == "a" or m.name in evicted for m in members)  # pool b has no target: emptied


def test_sandboxes_with_gpus_or_a_network_are_never_pooled():
    from orchestrator.pipeline.pools import profile_of
    from orchestrator.runtimes.base import SandboxSpec

    spec = SandboxSpec(name="s", image="img", labels={}, bundle=b"{}", cpu=1.0, memory_bytes=GI, pids=64)
    assert profile_of(spec) is not None and profile_of(spec).memory_bytes == GI
    assert profile_of(SandboxSpec(**{**spec.__dict__, "gpus": ("0",)})) is None
    assert profile_of(SandboxSpec(**{**spec.__dict__, "network": True})) is None
    # The bundle and the labels are the experiment's own, not the pool's.
    assert profile_of(SandboxSpec(**{**spec.__dict__, "bundle": b"other", "labels": {"a": "b"}})) == profile_of(spec)

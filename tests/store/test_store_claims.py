"""Claims of pooled sandboxes (orchestrator/store/claims.py), on SQLite and PostgreSQL:
a sandbox is claimed once, by one experiment, with its audit line; the controller and
`genesis get pools` read the claims back."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.store.repository import utcnow


def claim(store, name: str, experiment: str, *, tier: str = "hot", pool: str = "p1") -> bool:
    return store.claim_sandbox(name=name, uid=f"uid-{name}", pool=pool, tier=tier, experiment_id=experiment,
                               actor="controller:test")


def test_a_sandbox_is_claimed_once_and_the_claim_is_audited(store):
    assert claim(store, "genesis-pool-a", "exp-1") is True
    assert claim(store, "genesis-pool-a", "exp-2") is False  # taken: never handed out again
    assert store.claims(["genesis-pool-a", "genesis-pool-b"]) == {"genesis-pool-a": "exp-1"}
    assert store.claims([]) == {}
    assert store.claimed_by("exp-1") == [("genesis-pool-a", "uid-genesis-pool-a")]
    assert store.claimed_by("exp-2") == []
    [line] = [h for h in store.history("exp-1") if h.action == "claimed"]
    assert line.sandbox_name == "genesis-pool-a" and "hot" in line.reason and "p1" in line.reason
    assert store.history("exp-2") == []  # the loser wrote nothing


def test_claim_counts_by_pool_and_tier_since_a_time(store):
    claim(store, "s1", "e1")
    claim(store, "s2", "e2")
    claim(store, "s3", "e3", tier="warm")
    claim(store, "s4", "e4", pool="p2")
    counts = {(pool, tier): (n, last is not None) for pool, tier, n, last in
              store.claim_counts(utcnow() - timedelta(hours=1))}
    assert counts == {("p1", "hot"): (2, True), ("p1", "warm"): (1, True), ("p2", "hot"): (1, True)}
    assert store.claim_counts(utcnow() + timedelta(seconds=5)) == []

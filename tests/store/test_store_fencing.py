"""The controller's lease and the fence on every write, on SQLite and PostgreSQL.

Time passing is the lease's expiry moved into the past in the database (what
a stalled holder's lease looks like once its TTL is over): the tests never
sleep for a lease to lapse.
"""

from __future__ import annotations

import contextvars
from datetime import timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from orchestrator.domain.models import Phase
from orchestrator.errors import NotLeader
from orchestrator.fencing import FENCE
from orchestrator.store.base import utcnow
from orchestrator.store.leases import Leader
from orchestrator.store.tables import LeaseRow


def _lapse(engine, name: str = "controller") -> None:
    """The lease's TTL is over (as after a stop or a partition longer than it)."""
    with Session(engine) as session, session.begin():
        session.execute(update(LeaseRow).where(LeaseRow.name == name)
                        .values(expires_at=utcnow() - timedelta(seconds=60)))


def _under(term, func, *args, **kwargs):
    """Call ``func`` as a controller step decided under ``term`` would."""
    context = contextvars.copy_context()
    context.run(FENCE.set, term)
    return context.run(func, *args, **kwargs)


def test_one_holder_at_a_time_and_renewals_keep_the_generation(engine):
    a, b = Leader(engine, ttl_s=30), Leader(engine, ttl_s=30)
    first = a.acquire()
    assert first is not None and first.generation == 1
    assert b.acquire() is None
    again = a.acquire()
    assert again is first and again.generation == 1 and again.alive()
    assert a.current() == (a.holder, 1)


def test_a_takeover_raises_the_generation_and_fences_the_former_leader(engine, store, make_request):
    a, b = Leader(engine, ttl_s=30), Leader(engine, ttl_s=30)
    old = a.acquire()
    view, _ = store.submit(make_request(), commit="c0ffee")
    _under(old, store.admit, view.id, gpus=(), actor="a")  # a write under a live term lands
    _lapse(engine)
    new = b.acquire()
    assert new is not None and new.generation == old.generation + 1
    with pytest.raises(NotLeader):
        _under(old, store.transition, view.id, Phase.RUNNING, reason="late", actor="a")
    assert store.get(view.id).phase is Phase.BUILDING  # nothing of the refused write landed
    assert old.ended
    # The former leader learns it on its next renewal, and never takes back a held lease.
    assert a.acquire() is None
    _under(new, store.transition, view.id, Phase.RUNNING, reason="on", actor="b")
    assert store.get(view.id).phase is Phase.RUNNING
    actors = [h.actor for h in store.history(view.id)]
    assert "a" in actors and actors.count("b") == 1


def test_a_lapsed_term_is_fenced_even_before_anyone_takes_over(engine, store, make_request):
    leader = Leader(engine, ttl_s=30)
    term = leader.acquire()
    view, _ = store.submit(make_request(), commit="c0ffee")
    _lapse(engine)
    with pytest.raises(NotLeader):
        _under(term, store.admit, view.id, gpus=(), actor="late")
    # Coming back, the same process starts a new tenure: the old term stays dead.
    back = leader.acquire()
    assert back is not None and back.generation == term.generation + 1 and not term.alive()


def test_reads_and_unfenced_writes_need_no_lease(engine, store, make_request):
    view, _ = store.submit(make_request(), commit="c0ffee")  # intake: no term, no fence
    term = Leader(engine, ttl_s=30).acquire()
    _lapse(engine)
    assert _under(term, store.get, view.id).id == view.id  # reads are never refused
    store.request_cancel(view.id)  # a user's request is recorded whoever leads
    assert store.get(view.id).cancel_requested


def test_release_lets_a_standby_take_over_at_once(engine):
    a, b = Leader(engine, ttl_s=30), Leader(engine, ttl_s=30)
    term = a.acquire()
    assert b.acquire() is None
    a.release()
    taken = b.acquire()
    assert taken is not None and taken.generation == term.generation + 1 and term.ended


def test_a_controller_never_leads_on_a_schema_it_does_not_know(engine):
    # A rolling upgrade: the new controller migrated the database; the old one
    # (written for the previous revision) stops at its next renewal.
    from orchestrator.store.db import head_revision
    old = Leader(engine, ttl_s=30, schema="0001")
    assert old.acquire() is None and "0001" in old.refused
    current = Leader(engine, ttl_s=30, schema=head_revision())
    term = current.acquire()
    assert term is not None and current.refused is None


def test_concurrent_first_uses_of_an_image_are_both_recorded(store):
    # Steps reach the store on threads, in parallel: two first uses of one
    # image race on the insert; the loser records its use on the winner's row.
    from concurrent.futures import ThreadPoolExecutor

    def touch(_):
        store.touch_image(tag="genesis/snap:race", repo="monorepo", commit="c0ffee", toolchain="python",
                          size_bytes=1, build_seconds=None)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(touch, range(8)))
    (row,) = [r for r in store.images() if r["tag"] == "genesis/snap:race"]
    assert row["uses"] == 8

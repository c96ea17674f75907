"""Transactions from many threads of one process (the controller runs its store calls
on a thread pool), on SQLite and PostgreSQL: none fails for another's lock.

On SQLite in WAL mode a transaction that read before another thread committed
cannot write at all (SQLITE_BUSY at once, whatever busy_timeout says); the
engine hands its one connection to one thread at a time instead
(orchestrator/store/db.py), so such a burst queues rather than fails.
"""

from __future__ import annotations

import threading

from orchestrator.errors import StoreError
from orchestrator.store.repository import utcnow
from orchestrator.store.tables import ExperimentRow

THREADS, EACH = 8, 25


def test_read_then_write_transactions_from_many_threads_take_turns_and_none_fails(store, seed):
    seed([dict(id=f"exp-{i}", created_at=utcnow()) for i in range(THREADS)])
    errors: list[StoreError] = []
    start = threading.Barrier(THREADS)

    def work(experiment_id: str) -> None:
        start.wait()
        for _ in range(EACH):
            try:
                with store._tx() as session:  # read, then write: the pattern SQLite refuses mid-burst
                    row = session.get(ExperimentRow, experiment_id)
                    row.priority = row.priority + 1
            except StoreError as exc:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"exp-{i}",)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    with store._tx() as session:
        assert [session.get(ExperimentRow, f"exp-{i}").priority for i in range(THREADS)] == [EACH] * THREADS

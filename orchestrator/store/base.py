"""What every part of the store shares: transactions, UTC handling, retries, fencing.

Database errors leave the store as :class:`StoreError` (``transient`` for a
lost connection, which :data:`transient` retries with exponential backoff),
except an ``IntegrityError`` that callers resolve themselves (a lost insert
race). Every datetime enters and leaves in UTC.

Fencing: when the caller runs under a controller's term
(:data:`orchestrator.fencing.FENCE`), a transaction that wrote anything
checks, as its last statement before commit, that the term's generation
still holds the lease (:func:`fence` below; the check
row-locks the lease, so no takeover commits in between). A stale term's
transaction is rolled back and :class:`NotLeader` raised: a former leader
records nothing.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from sqlalchemy import Engine, event, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from orchestrator.errors import NotLeader, StoreError
from orchestrator.fencing import FENCE, Term
from orchestrator.store.tables import LeaseRow, SandboxHistoryRow

# The server ended the session (idle in a transaction too long: a stall or a
# partition held it; an administrator's terminate): a new connection will do.
SESSION_ENDED = frozenset({"25P03", "57P01"})

# One policy for a lost connection, for sync callers (``transient``) and
# coroutines (:class:`orchestrator.store.aio.AsyncStore`, which calls the
# undecorated method under tenacity's async retrying instead).
RETRY = dict(
    retry=retry_if_exception(lambda exc: isinstance(exc, StoreError) and exc.transient),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(6),
    reraise=True,
)
transient = retry(**RETRY)


def insert_race(method):
    """A get-or-insert whose insert lost a race to a concurrent one (steps run
    their store calls on threads, in parallel) runs again: the row exists now."""
    @functools.wraps(method)
    def again(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except IntegrityError:
            return method(*args, **kwargs)
    return again


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    """Every datetime leaves the store in UTC, whatever the backend did to it."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # SQLite drops the zone; we store UTC
    return value.astimezone(timezone.utc)


def _utc(value: datetime | None) -> datetime | None:
    """Every datetime enters the store in UTC (SQLite would keep the wall time and drop the offset)."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to the store; use an aware UTC datetime")
    return value.astimezone(timezone.utc)


def _columns(row, table) -> dict:
    return {c.name: _aware(v) if isinstance(v := getattr(row, c.name), datetime) else v for c in table.columns}


def db_now(session: Session) -> datetime:
    """The database's clock on PostgreSQL, this host's on SQLite."""
    if session.get_bind().dialect.name == "postgresql":
        return _aware(session.scalar(select(func.clock_timestamp())))
    return utcnow()


def now_expression(session: Session):
    """``now`` inside a statement: the server's clock where there is one."""
    if session.get_bind().dialect.name == "postgresql":
        return func.clock_timestamp()
    return utcnow()


def fence(session: Session, term: Term) -> bool:
    """True when ``term`` still holds its lease, checked and row-locked in ``session``'s
    transaction: a takeover cannot commit between this check and that commit."""
    result = session.execute(
        update(LeaseRow)
        .where(LeaseRow.name == term.lease, LeaseRow.holder == term.holder,
               LeaseRow.generation == term.generation, LeaseRow.expires_at > now_expression(session))
        .values(generation=LeaseRow.generation)
        .execution_options(synchronize_session=False))
    return result.rowcount == 1


def _mark_written(session: Session, *_args) -> None:
    session.info["wrote"] = True


def _mark_dml(state) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info["wrote"] = True


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        event.listen(self._sessions, "after_flush", _mark_written)
        event.listen(self._sessions, "do_orm_execute", _mark_dml)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        term = FENCE.get()
        try:
            with self._sessions.begin() as session:
                yield session
                if term is not None:
                    session.flush()
                    if session.info.get("wrote"):
                        if not fence(session, term):
                            term.ended = True
                            raise NotLeader(f"write refused: generation {term.generation} no longer holds "
                                            f"the {term.lease} lease")
        except IntegrityError:
            raise  # submit() turns a lost insert race into a duplicate or conflict
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, OperationalError) or exc.connection_invalidated or \
                    getattr(exc.orig, "sqlstate", None) in SESSION_ENDED:
                raise StoreError(f"database unavailable: {exc.orig or exc}", transient=True) from exc
            raise StoreError(f"database: {exc}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database: {exc}") from exc

    @classmethod
    def _history(cls, session: Session, *, experiment_id, sandbox_name, action, actor, reason,
                 duration_ms=None, details=None, at: datetime | None = None) -> None:
        cls._history_rows(session, [history_row(experiment_id=experiment_id, sandbox_name=sandbox_name,
                                                action=action, actor=actor, reason=reason, duration_ms=duration_ms,
                                                details=details, at=at)])

    @staticmethod
    def _history_rows(session: Session, rows: list[dict]) -> None:
        """Audit lines as one Core insert, in the order given (an ORM flush would
        cost more than the write itself on the hot path; the table has no relations)."""
        if rows:
            session.execute(insert(SandboxHistoryRow.__table__), rows)


def history_row(*, experiment_id, sandbox_name, action, actor, reason, duration_ms=None, details=None,
                at: datetime | None = None) -> dict:
    """The columns of one audit line."""
    return dict(experiment_id=experiment_id, sandbox_name=sandbox_name, action=action, actor=actor, reason=reason,
                duration_ms=duration_ms, details=details or {}, at=at or utcnow())

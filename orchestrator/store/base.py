"""What every part of the store shares: transactions, UTC handling, retries.

Database errors leave the store as :class:`StoreError` (``transient`` for a
lost connection, which :data:`transient` retries with exponential backoff),
except an ``IntegrityError`` that callers resolve themselves (a lost insert
race). Every datetime enters and leaves in UTC.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from orchestrator.errors import StoreError
from orchestrator.store.tables import SandboxHistoryRow

transient = retry(
    retry=retry_if_exception(lambda exc: isinstance(exc, StoreError) and exc.transient),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(6),
    reraise=True,
)


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


class StoreBase:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise  # submit() turns a lost insert race into a duplicate or conflict
        except OperationalError as exc:
            raise StoreError(f"database unavailable: {exc.orig or exc}", transient=True) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"database: {exc}") from exc

    @staticmethod
    def _history(session: Session, *, experiment_id, sandbox_name, action, actor, reason,
                 duration_ms=None, details=None) -> None:
        session.add(SandboxHistoryRow(experiment_id=experiment_id, sandbox_name=sandbox_name, action=action,
                                      actor=actor, reason=reason, duration_ms=duration_ms,
                                      details=details or {}, at=utcnow()))

"""Leader election: one active controller, standbys waiting.

PostgreSQL: a session-level advisory lock held on a dedicated connection;
it is released the moment the holder's connection dies (a SIGKILLed
controller included), so a standby takes over on its next try.
SQLite (single host): a lease row renewed every pass. A holder on the same
host whose process no longer exists loses the lease at once; otherwise it
expires after its TTL.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator.store.tables import LeaseRow

ADVISORY_KEY = 0x6E6E5353  # fixed 32-bit key naming "the Genesis controller"


def holder_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_dead(holder: str) -> bool:
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Leader:
    """``acquire()`` each pass; True while this process leads."""

    def __init__(self, engine: Engine, *, name: str = "controller", ttl_s: float = 15.0) -> None:
        self._engine = engine
        self._name = name
        self._ttl = timedelta(seconds=ttl_s)
        self._holder = holder_id()
        self._conn = None  # PostgreSQL: the connection that holds the lock

    @property
    def holder(self) -> str:
        return self._holder

    def acquire(self) -> bool:
        try:
            if self._engine.dialect.name == "postgresql":
                return self._advisory()
            return self._lease()
        except SQLAlchemyError:
            self.release()
            return False

    def _advisory(self) -> bool:
        if self._conn is not None:
            self._conn.execute(text("SELECT 1"))  # still connected means still holding
            return True
        conn = self._engine.connect()
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar():
            conn.commit()
            self._conn = conn
            return True
        conn.close()
        return False

    def _lease(self) -> bool:
        now = datetime.now(timezone.utc)
        with Session(self._engine) as session, session.begin():
            row = session.get(LeaseRow, self._name, with_for_update=True)
            if row is None:
                session.add(LeaseRow(name=self._name, holder=self._holder, expires_at=now + self._ttl))
                return True
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=timezone.utc)
            if row.holder == self._holder or expires < now or _holder_dead(row.holder):
                row.holder, row.expires_at = self._holder, now + self._ttl
                return True
            return False

    def release(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except SQLAlchemyError:
                pass
            self._conn = None
            return
        try:
            with Session(self._engine) as session, session.begin():
                row = session.get(LeaseRow, self._name)
                if row is not None and row.holder == self._holder:
                    session.delete(row)
        except SQLAlchemyError:
            pass

    def current_holder(self) -> str | None:
        with Session(self._engine) as session:
            return session.scalar(select(LeaseRow.holder).where(LeaseRow.name == self._name))

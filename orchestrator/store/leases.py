"""Leader election: one active controller, standbys waiting, fenced by generation.

One lease row per name, on PostgreSQL and SQLite alike: who holds it, until
when, and its generation. A holder renews it well inside its TTL; a standby
takes it over only once it has expired (or, on one host, once its holder's
process is gone), and every takeover is a compare-and-set that raises the
generation by one. An advisory lock alone is not enough: PostgreSQL keeps it
for a half-open connection as long as TCP keepalive allows, so a leader cut
off from the database would go on believing it leads (SPEC §6). A
controller also refuses to lead on a database whose schema revision is not
the one its code was written for: an old controller left running beside an
upgraded one stops at its next renewal.

Time is the database's on PostgreSQL (controllers on several hosts compare
one clock) and this host's on SQLite (single host). The holder's own
deadline is on its monotonic clock, taken before the renewal is sent, so it
always ends before the database sees the lease expire.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from datetime import datetime, timedelta

from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from orchestrator.errors import StoreError
from orchestrator.fencing import Term
from orchestrator.store.base import _aware, db_now
from orchestrator.store.tables import LeaseRow

LOCK_TIMEOUT = "2s"  # a takeover never waits long on a row a stopped holder locked


def holder_id() -> str:
    """host:pid:nonce — unique per Leader, so two in one process never share a term."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _holder_dead(holder: str) -> bool:
    host, _, rest = holder.partition(":")
    pid = rest.split(":", 1)[0]
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
    """``acquire()`` renews or takes the lease: the current :class:`Term`, or None."""

    def __init__(self, engine: Engine, *, name: str = "controller", ttl_s: float = 15.0,
                 schema: str | None = None) -> None:
        self._engine = engine
        self._schema = schema  # the migration this code was written for; None: not checked
        self._name = name
        self.ttl_s = ttl_s
        self._ttl = timedelta(seconds=ttl_s)
        self._holder = holder_id()
        self._term: Term | None = None
        self.refused: str | None = None  # why the last acquire() would not lead, beyond "held"

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def term(self) -> Term | None:
        return self._term

    def acquire(self) -> Term | None:
        """Renew this process's term or take the lease over; None while another holds it.

        An unreachable database raises :class:`StoreError`: not knowing is not
        losing, and the current term's own deadline decides when to stop."""
        started = time.monotonic()
        try:
            with Session(self._engine) as session, session.begin():
                generation = self._acquire(session)
        except IntegrityError:
            generation = None  # another standby inserted the lease first
        except OperationalError as exc:  # includes lock_timeout: a stopped holder's lock
            raise StoreError(f"lease: database unavailable: {exc.orig or exc}", transient=True) from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"lease: {exc}") from exc
        if generation is None:
            self._end()
            return None
        if self._term is not None and self._term.generation == generation and not self._term.ended:
            self._term.valid_until = started + self.ttl_s
        else:
            self._end()
            self._term = Term(self._name, self._holder, generation, started + self.ttl_s)
        return self._term

    def _acquire(self, session: Session) -> int | None:
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
        if self._schema is not None:
            found = session.scalar(text("SELECT version_num FROM alembic_version"))
            if found != self._schema:
                # A newer (or older) controller migrated the database: this one
                # must not act on a schema it does not know (a rolling upgrade).
                self.refused = f"database schema is {found}, this controller's is {self._schema}"
                return None
        self.refused = None
        now = db_now(session)
        row = session.get(LeaseRow, self._name)
        if row is None:
            session.add(LeaseRow(name=self._name, holder=self._holder, expires_at=now + self._ttl, generation=1))
            session.flush()  # a concurrent insert loses here (IntegrityError: not the leader)
            return 1
        expires = _aware(row.expires_at)
        mine = self._term is not None and not self._term.ended and self._term.generation == row.generation \
            and row.holder == self._holder
        if mine and expires > now:
            new_generation = row.generation  # a renewal
        elif expires <= now or _holder_dead(row.holder):
            new_generation = row.generation + 1  # a takeover, also of our own lapsed term
        else:
            return None
        changed = session.execute(
            update(LeaseRow)
            .where(LeaseRow.name == self._name, LeaseRow.generation == row.generation,
                   LeaseRow.holder == row.holder)
            .values(holder=self._holder, generation=new_generation, expires_at=now + self._ttl)
            .execution_options(synchronize_session=False)).rowcount
        return new_generation if changed == 1 else None

    def _end(self) -> None:
        if self._term is not None:
            self._term.ended = True

    def lose(self) -> None:
        """This process stops acting under its term (its deadline passed, or it shuts down)."""
        self._end()

    def release(self) -> None:
        """Hand the lease back at shutdown, so a standby need not wait for it to expire."""
        term, self._term = self._term, None
        if term is None:
            return
        term.ended = True
        try:
            with Session(self._engine) as session, session.begin():
                session.execute(update(LeaseRow)
                                .where(LeaseRow.name == self._name, LeaseRow.holder == self._holder,
                                       LeaseRow.generation == term.generation)
                                .values(expires_at=db_now(session))
                                .execution_options(synchronize_session=False))
        except SQLAlchemyError:
            pass

    def current(self) -> tuple[str, int] | None:
        """(holder, generation) as the database has it."""
        with Session(self._engine) as session:
            row = session.get(LeaseRow, self._name)
            return (row.holder, row.generation) if row is not None else None

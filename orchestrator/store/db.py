"""Engines and schema migrations.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys so
a CLI and a worker can share one file; PostgreSQL is reached through
psycopg 3 (``postgresql+psycopg://``; plain ``postgresql://`` URLs are
rewritten to it).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError

from orchestrator.errors import StoreError

IDLE_IN_TRANSACTION_MS = 5000
MIGRATIONS = Path(os.environ.get("GENESIS_MIGRATIONS", Path(__file__).resolve().parents[2] / "migrations"))


def normalise_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # One connection, handed to one thread at a time: SQLite has one writer, and a
        # transaction that read before another thread's commit cannot write at all in WAL
        # mode (SQLITE_BUSY at once, whatever busy_timeout says): threads of one process
        # queue for the connection instead of failing into retries and their back-off.
        engine = create_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0, pool_timeout=60)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
            # The driver would begin a transaction only at the first write, so a
            # read-then-write would read outside it (lost updates between
            # threads); SQLAlchemy's own recipe: no driver transactions, ours begin
            # at the first statement, so the read and the write are one snapshot.
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn):
            conn.exec_driver_sql("BEGIN")

        return engine
    # Sessions in UTC whatever the server's zone, so timestamps read back as
    # UTC; options already in the URL (e.g. a search_path) are kept. A session
    # stopped inside a transaction (a SIGSTOPped or partitioned controller) is
    # ended by the server, so the row locks it held (the lease's) never block
    # a takeover for long; keepalives and a send timeout let a connection to a
    # vanished server fail instead of hanging a thread for TCP's retry limit.
    given = make_url(url).query.get("options", "")
    options = " ".join(filter(None, [given if isinstance(given, str) else " ".join(given), "-c timezone=UTC",
                                     f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"]))
    return create_engine(url, pool_pre_ping=True, connect_args={
        "options": options, "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 5,
        "keepalives_interval": 2, "keepalives_count": 3, "tcp_user_timeout": 10000})


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply migrations up to ``revision``; returns the revision now current."""
    config = _alembic_config()
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        return current_revision(engine) or "base"
    except SQLAlchemyError as exc:
        raise StoreError(f"migration failed: {exc}") from exc


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head() or "base"

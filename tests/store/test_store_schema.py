"""Migrations (migrations/) against the table definitions (orchestrator/store/tables.py),
on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from orchestrator.store.db import current_revision, head_revision, make_engine, upgrade
from orchestrator.store.tables import Base

EXPECTED_TABLES = {"experiment_records", "experiment_metrics", "sandbox_history", "baseline_cache",
                   "snapshot_images", "outbox", "leases", "scheduled_jobs", "reports", "sandbox_claims"}


def _schema_diff(engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, Base.metadata)


def test_backend_is_the_one_asked_for(engine, backend):
    assert engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    with engine.connect() as conn:
        if backend == "postgres":
            assert conn.execute(text("select version()")).scalar().startswith("PostgreSQL ")
        else:
            assert conn.execute(text("select sqlite_version()")).scalar()


@pytest.mark.postgres
def test_postgres_is_a_real_server_owned_by_this_session(postgres_server, postgres_url):
    engine = make_engine(postgres_url)
    try:
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg"
        with engine.connect() as conn:
            assert conn.execute(text("select current_setting('server_version_num')::int")).scalar() >= 120000
            if postgres_server.owned:
                # Our temp cluster, not Debian's system cluster in /var/lib/postgresql.
                data_dir = conn.execute(text("show data_directory")).scalar()
                assert data_dir == str(postgres_server.data_dir)
                assert not data_dir.startswith("/var/lib/postgresql")
                assert conn.execute(text("show fsync")).scalar() == "off"
            # A fresh database per test: nothing in it before migrations run.
            assert inspect(conn).get_table_names() == []
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_declared_tables(engine):
    names = set(inspect(engine).get_table_names())
    assert names - {"alembic_version"} == EXPECTED_TABLES == set(Base.metadata.tables)
    assert _schema_diff(engine) == []


def test_declared_indexes_and_constraints_exist(engine):
    inspector = inspect(engine)
    indexes = {ix["name"]: ix for ix in inspector.get_indexes("experiment_records")}
    assert indexes["ix_experiment_queue"]["column_names"] == ["phase", "priority", "created_at"]
    assert "ix_experiment_records_instance_id" in indexes
    assert "ix_experiment_records_phase" in indexes
    [fk] = inspector.get_foreign_keys("experiment_metrics")
    assert fk["referred_table"] == "experiment_records" and fk["constrained_columns"] == ["experiment_id"]
    assert (fk.get("options") or {}).get("ondelete", "").upper() == "CASCADE"
    outbox_unique = [set(u["column_names"]) for u in inspector.get_unique_constraints("outbox")]
    outbox_unique += [set(ix["column_names"]) for ix in inspector.get_indexes("outbox") if ix.get("unique")]
    assert {"msg_id"} in outbox_unique
    reports_unique = [set(u["column_names"]) for u in inspector.get_unique_constraints("reports")]
    assert {"kind", "period"} in reports_unique  # one report per kind and period


def test_upgrade_is_idempotent_and_at_head(engine):
    head = head_revision()
    assert head != "base"
    assert current_revision(engine) == head
    before = set(inspect(engine).get_table_names())
    assert upgrade(engine) == head  # second run: nothing to do, no error
    assert upgrade(engine) == head
    engine.dispose()
    assert current_revision(engine) == head
    assert set(inspect(engine).get_table_names()) == before
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from alembic_version")).scalar() == 1
    assert _schema_diff(engine) == []


def test_upgrade_from_empty_database(database_url):
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) == set()
        assert upgrade(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) - {"alembic_version"} == EXPECTED_TABLES
    finally:
        engine.dispose()


def test_schema_comparison_would_catch_a_drift(engine):
    """The empty diff above means something: a column the migrations lack,
    or a changed type, shows up."""
    from sqlalchemy import Column, MetaData, String

    drifted = MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(drifted)
    drifted.tables["outbox"].append_column(Column("extra_column", String(10)))
    drifted.tables["sandbox_history"].c.action.type = String(99)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, drifted)
    kinds = [d[0] if isinstance(d, tuple) else d[0][0] for d in diff]
    assert "add_column" in kinds
    assert "modify_type" in kinds

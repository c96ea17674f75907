"""Fixtures for the storage-layer tests: a ``store`` fixture that runs every
store test on both SQLite and PostgreSQL (server fixtures: tests/pgserver.py).

PostgreSQL:

* ``GENESIS_TEST_POSTGRES_URL`` set -> that server is reused (nothing is
  started or stopped); each test gets its own database on it (or, where the
  role may not create databases, its own schema).
* otherwise a throw-away cluster is created with the server binaries found
  under ``/usr/lib/postgresql/*/bin`` (``initdb`` + ``pg_ctl`` into a temp
  dir, on a free loopback port) and stopped at the end of the session. The
  system cluster is never touched. As root, ``initdb``/``pg_ctl`` run as the
  ``postgres`` system user through ``runuser``, since PostgreSQL refuses to
  run as root.

A missing ``initdb`` fails the PostgreSQL tests (it never skips them):
``scripts/setup.sh`` installs the ``postgresql`` package.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from orchestrator.domain.models import Changes, ExperimentRequest, FileChange, Phase, Resources, Validation
from orchestrator.store.db import make_engine, upgrade
from orchestrator.store.repository import Store
from orchestrator.store.tables import ExperimentRow


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'genesis.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on a fresh database of the parametrized backend."""
    eng = make_engine(database_url)
    upgrade(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store(engine)


@pytest.fixture
def seed(engine: Engine):
    """``seed([dict(id=..., created_at=..., **columns)])``: experiment records inserted in one
    statement, bypassing intake; hundreds cost milliseconds and created_at is the test's to pick."""

    def insert_records(specs: list[dict]) -> None:
        rows = [dict(instance_id="hay", experiment_type="decomposition", risk_level="low", repo="monorepo",
                     base_ref="main", body_sha256="0" * 64, phase=Phase.PENDING.value, conditions=[], priority=0,
                     attempt=0, cancel_requested=False, recommendation=None, updated_at=spec["created_at"])
                | spec for spec in specs]
        assert all(isinstance(row["created_at"], datetime) for row in rows)
        with engine.begin() as conn:
            conn.execute(insert(ExperimentRow), rows)

    return insert_records


# -- builders -------------------------------------------------------------------

COMMIT = "3f2a9c1" + "0" * 33


def build_request(experiment_id: str | None = None, **overrides) -> ExperimentRequest:
    """A valid SPEC §2 request; ``overrides`` replace fields."""
    fields = dict(
        experiment_id=experiment_id or str(uuid.uuid4()),
        instance_id="singularity-test-1",
        experiment_type="decomposition",
        description="Add pre-classifier to SPARC decomposition",
        risk_level="low",
        estimated_impact=0.4,
        repo="monorepo",
        base_ref="3f2a9c1",
        changes=Changes(description="pre-classifier", files=[
            FileChange(path="lib/classifier.py", content="def classify(x):\n    return 'héllo' if x else None\n"),
            FileChange(path="lib/old.py", delete=True),
        ]),
        validation=Validation(command=["pytest", "-q", "--junitxml=/genesis/out/junit.xml"]),
        resources=Resources(cpu=2, memory="4Gi", gpu=0, pids=1024),
        timeout_ms=600_000,
        priority=0,
        rollback_plan="git reset --hard 3f2a9c1",
    )
    fields.update(overrides)
    return ExperimentRequest(**fields)


@pytest.fixture
def make_request():
    return build_request

"""Fixtures for the storage-layer tests: a real PostgreSQL server owned by the
test session, a fresh database per test, and a ``store`` fixture that runs
every store test on both SQLite and PostgreSQL.

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

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError

from orchestrator.domain.models import Changes, ExperimentRequest, FileChange, Resources, Validation
from orchestrator.store.db import make_engine, normalise_url, upgrade
from orchestrator.store.repository import Store

PG_USER = "genesis"
PG_DB = "genesis_test"
SYSTEM_USER = "postgres"


@dataclass
class PostgresServer:
    url: str                 # admin URL (SQLAlchemy, postgresql+psycopg://)
    owned: bool              # True: this session started it and will stop it
    data_dir: Path | None = None


def _find_bin(name: str) -> Path | None:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")])
    if candidates:
        return Path(candidates[-1])  # newest major version
    found = shutil.which(name)
    return Path(found) if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: go through ``runuser -u postgres``."""
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not Path(runuser).exists():
        pytest.fail("running as root, and `runuser` is missing: cannot start PostgreSQL as the postgres user",
                    pytrace=False)
    return [runuser, "-u", SYSTEM_USER, "--", *argv]


def _run(argv: list[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(_as_server_user(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _start_owned_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH. "
            "Run scripts/setup.sh (it installs Debian's `postgresql` package), or point "
            "GENESIS_TEST_POSTGRES_URL at a running server.", pytrace=False)

    # Under /tmp, not pytest's tmp_path: that is 0700 root and the postgres
    # user could not traverse it.
    root = Path(tempfile.mkdtemp(prefix="genesis-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    data_dir, log_file = root / "data", root / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                pytest.fail(f"running as root, but there is no `{SYSTEM_USER}` system user to run PostgreSQL as "
                            "(Debian's postgresql package creates it; run scripts/setup.sh)", pytrace=False)
            os.chown(root, pw.pw_uid, pw.pw_gid)

        init = _run([str(initdb), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync", "-D", str(data_dir)],
                    cwd=root)
        if init.returncode != 0:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}", pytrace=False)

        last_error = ""
        for _ in range(3):  # the free port can be taken between probe and bind: retry
            port = _free_port()
            start = _run([str(pg_ctl), "-D", str(data_dir), "-l", str(log_file),
                          "-o", f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off",
                          "-w", "-t", "60", "start"], cwd=root)
            if start.returncode == 0:
                started = True
                break
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            last_error = f"pg_ctl start failed ({start.returncode}):\n{start.stdout}\n{start.stderr}\n{log[-4000:]}"
        if not started:
            pytest.fail(last_error, pytrace=False)

        base = f"postgresql+psycopg://{PG_USER}@127.0.0.1:{port}"
        admin = create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{PG_DB}"'))
        finally:
            admin.dispose()
        yield PostgresServer(url=f"{base}/{PG_DB}", owned=True, data_dir=data_dir)
    finally:
        if started:
            stop = _run([str(pg_ctl), "-D", str(data_dir), "-m", "fast", "-w", "stop"], cwd=root)
            if stop.returncode != 0:
                # Only our own postmaster: its pid is the first line of our data dir's pid file.
                pid_file = data_dir / "postmaster.pid"
                if pid_file.exists():
                    try:
                        os.kill(int(pid_file.read_text().split()[0]), 9)
                    except (ValueError, ProcessLookupError, IndexError):
                        pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reuse = os.environ.get("GENESIS_TEST_POSTGRES_URL")
    if reuse:
        url = normalise_url(reuse)
        probe = create_engine(url)
        try:
            with probe.connect() as conn:
                conn.execute(text("select 1"))
        except DBAPIError as exc:
            pytest.fail(f"GENESIS_TEST_POSTGRES_URL={reuse!r} cannot be reached: {exc}", pytrace=False)
        finally:
            probe.dispose()
        yield PostgresServer(url=url, owned=False)
        return
    yield from _start_owned_server()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database (or schema, where the role may not create
    databases) on the session's server, dropped after the test."""
    name = f"genesis_t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(postgres_server.url, isolation_level="AUTOCOMMIT")
    base = make_url(postgres_server.url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        mode = "database"
        url = base.set(database=name).render_as_string(hide_password=False)
    except DBAPIError:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        mode = "schema"
        url = base.update_query_dict({"options": f"-csearch_path={name}"}).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            if mode == "database":
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            else:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


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

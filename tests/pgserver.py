"""A real PostgreSQL server owned by the test session (or reused from
``$GENESIS_TEST_POSTGRES_URL``), and a fresh database per test.

As root, PostgreSQL runs as the ``postgres`` system user (``runuser``); the
cluster lives in a temp dir under /tmp, on a free loopback port, and only
this server is ever stopped or restarted.
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
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

from orchestrator.store.db import normalise_url

PG_USER = "genesis"
PG_DB = "genesis_test"
SYSTEM_USER = "postgres"


@dataclass
class PostgresServer:
    url: str                 # admin URL (SQLAlchemy, postgresql+psycopg://)
    owned: bool              # True: this session started it and will stop it
    data_dir: Path | None = None
    pg_ctl: Path | None = None
    start_options: str = ""

    def stop(self) -> None:
        """Stop this (owned) server, fast: clients see their connections drop."""
        assert self.owned and self.pg_ctl and self.data_dir, "only a server this session owns is stopped"
        _run([str(self.pg_ctl), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"], cwd=self.data_dir.parent)

    def start(self) -> None:
        assert self.owned and self.pg_ctl and self.data_dir
        result = _run([str(self.pg_ctl), "-D", str(self.data_dir), "-l", str(self.data_dir.parent / "server.log"),
                       "-o", self.start_options, "-w", "-t", "60", "start"], cwd=self.data_dir.parent)
        assert result.returncode == 0, result.stderr


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
        yield PostgresServer(url=f"{base}/{PG_DB}", owned=True, data_dir=data_dir, pg_ctl=pg_ctl,
                             start_options=f"-p {port} -k {root} -h 127.0.0.1 -c fsync=off")
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
    admin = create_engine(postgres_server.url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
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



"""A real ``genesis serve`` with its HTTP API, shared by the API, CLI, web UI
and MCP tests: its own home (SQLite), the sample monorepo, no NATS, the API
on a free loopback port with a tokens file holding one token per role
(and an expired one). Started once per session, stopped by its own PID.

Experiments it runs are real (Docker sandboxes with the test-run label).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
import yaml

from helpers import RUN_ID, TEST_LABEL, ROOT, wait_until

AGENT_INSTANCE = "agent-a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GenesisServer:
    """``genesis serve`` on ``url``; ``tokens[role]`` is a bearer token of that role
    (``viewer``, ``agent`` for instance ``agent-a``, ``operator``, ``expired``)."""

    def __init__(self, home: Path, repo: Path, *, rate_limit_per_s: float = 200.0, burst: int = 400,
                 with_tokens: bool = True) -> None:
        from orchestrator.domain.access import digest, new_token

        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.tokens = {role: new_token() for role in ("viewer", "agent", "operator", "expired")}
        past = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
        entries = [{"name": f"test-{role}", "role": "operator" if role == "expired" else role,
                    "sha256": digest(token)} | ({"instances": [AGENT_INSTANCE]} if role == "agent" else {})
                   | ({"expires": past} if role == "expired" else {})
                   for role, token in self.tokens.items()]
        self.tokens_file = home / "tokens.yaml"
        self.tokens_file.write_text(yaml.safe_dump({"tokens": entries}))
        self.config = home / "genesis.yaml"
        self.config.write_text(json.dumps({
            "home": str(home), "repos": {"monorepo": {"path": str(repo), "allow_validation_override": True}},
            "extra_labels": {TEST_LABEL: RUN_ID}, "preserve_ttl_s": 3600, "pass_interval_s": 0.2,
            # An installation of its own: the session's other controllers (other databases)
            # reap only their own installation's sandboxes, and this one only its own.
            "installation": f"api-{uuid.uuid4().hex[:12]}",
            "nats": {"url": None}, "metrics_port": self.metrics_port,
            "api": {"port": self.port, "tokens_file": str(self.tokens_file) if with_tokens else None,
                    "rate_limit_per_s": rate_limit_per_s,
                    "rate_limit_burst": burst, "watch_interval_s": 0.2},
        }))
        self.log = home / "serve.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> "GenesisServer":
        env = dict(os.environ, GENESIS_CONFIG=str(self.config), PYTHONPATH=str(ROOT))
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "serve", "--no-nats"],
                                            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout_s=60, what=f"genesis serve's API on {self.url} (log: {self.log})")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"genesis serve exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def client(self, role: str | None = "operator", **kwargs) -> httpx.Client:
        """An HTTP client with ``role``'s bearer token (None: no credentials)."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="session")
def genesis_api(tmp_path_factory, sample_repo, docker_client):
    """One ``genesis serve`` with its API for the whole session."""
    server = GenesisServer(tmp_path_factory.mktemp("genesis-api"), sample_repo).start()
    yield server
    server.stop()

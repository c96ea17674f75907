"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_LABEL = "genesis.test-run"
RUN_ID = uuid.uuid4().hex[:12]


def make_repo(dest: Path) -> Path:
    subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(dest)], check=True)
    return dest


def request_body(**overrides) -> dict:
    """A valid request against the sample repo; override any top-level field."""
    body = {
        "experiment_id": str(uuid.uuid4()),
        "instance_id": "test-instance",
        "experiment_type": "test",
        "risk_level": "low",
        "repo": "monorepo",
        "base_ref": "main",
        "changes": {"files": [{"path": "NOTES.md", "content": "a harmless change\n"}]},
        "resources": {"cpu": 1, "memory": "256Mi", "pids": 128},
        "timeout_ms": 120_000,
    }
    body.update(overrides)
    return body


def example(name: str) -> dict:
    """One of examples/requests/*.yaml with a fresh experiment id."""
    import yaml

    body = yaml.safe_load((ROOT / "examples" / "requests" / name).read_text())
    body["experiment_id"] = str(uuid.uuid4())
    return body


def hostile(script: str, **overrides) -> dict:
    """A request whose change adds ``hostile.py`` and whose validation runs it
    (judged by its exit code; the test repository allows request commands)."""
    return request_body(
        changes={"files": [{"path": "hostile.py", "content": script}]},
        validation={"command": ["python3", "hostile.py"], "report": "exit_code"},
        **overrides,
    )


def run_experiment(app, body: dict):
    """Submit through intake and let a controller run it to the end; returns the final view."""
    result = app.intake.submit(json.dumps(body).encode())
    assert result.error is None, f"rejected: {result.error} ({result.error.code})"
    drain(app)
    return app.store.get(result.view.id)


def drain(app, *, timeout_s: float = 300) -> None:
    """Reconcile until nothing is pending or running (no leader election)."""
    asyncio.run(app.controller(leader=False).run_until_idle(timeout_s=timeout_s))


def sandboxes_of(docker_client, experiment_id: str) -> list:
    return docker_client.containers.list(all=True, filters={"label": f"genesis.experiment-id={experiment_id}"})


class RunningSandboxes:
    """Samples this test run's running sandboxes every 50 ms, in a thread.

    ``peak``: most running at once (optionally of one instance);
    ``doubles``: moments when one experiment had two running at once.
    """

    def __init__(self, docker_client, *, instance_id: str | None = None) -> None:
        self._client = docker_client
        self._labels = [f"{TEST_LABEL}={RUN_ID}"] + ([f"genesis.instance-id={instance_id}"] if instance_id else [])
        self.peak = 0
        self.doubles: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                running = self._client.containers.list(filters={"label": self._labels, "status": "running"})
            except Exception:  # noqa: BLE001 - e.g. a daemon restart in progress
                time.sleep(0.2)
                continue
            self.peak = max(self.peak, len(running))
            per = Counter(c.labels.get("genesis.experiment-id") for c in running)
            self.doubles += [{k: v} for k, v in per.items() if v > 1]
            time.sleep(0.05)

    def __enter__(self) -> "RunningSandboxes":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def wait_until(predicate, *, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(poll_s)

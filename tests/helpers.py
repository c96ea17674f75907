"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
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


def hostile(script: str, **overrides) -> dict:
    """A request whose change adds ``hostile.py`` and whose validation runs it."""
    return request_body(
        changes={"files": [{"path": "hostile.py", "content": script}]},
        validation={"command": ["python3", "hostile.py"]},
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

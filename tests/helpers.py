"""Helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import queue
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
    A pooled sandbox counts for the experiment that claimed it (``store`` says
    which); a ready one no experiment claimed yet counts for none. With
    ``store``, only that store's installation's sandboxes are sampled: another
    Genesis of the session (the API tests' server) keeps its own, with its own
    claims.
    """

    def __init__(self, docker_client, *, instance_id: str | None = None, store=None,
                 installation: str | None = None) -> None:
        self._client = docker_client
        self._store = store
        self._labels = [f"{TEST_LABEL}={RUN_ID}"] + ([f"genesis.instance-id={instance_id}"] if instance_id else []) \
            + ([f"genesis.installation={installation}"] if installation else [])
        self.peak = 0
        self.doubles: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _owners(self, running: list) -> list[str]:
        pooled = [c.name for c in running if c.labels.get("genesis.role") == "pool"]
        claims = self._store.claims(pooled) if pooled and self._store is not None else {}
        owners = []
        for c in running:
            owner = claims.get(c.name) if c.labels.get("genesis.role") == "pool" \
                else c.labels.get("genesis.experiment-id")
            if owner is not None or c.labels.get("genesis.role") != "pool":
                owners.append(owner)
        return owners

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                running = self._client.containers.list(filters={"label": self._labels, "status": "running"})
                owners = self._owners(running)
            except Exception:  # noqa: BLE001 - e.g. a daemon restart in progress
                time.sleep(0.2)
                continue
            self.peak = max(self.peak, len(owners))
            per = Counter(owners)
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


class Lines:
    """A process's stdout, line by line, each waited for at most ``timeout_s``
    (a reader thread, so a silent process fails the test instead of hanging it)."""

    def __init__(self, stream) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def next(self, *, timeout_s: float = 30) -> str:
        try:
            line = self._queue.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout_s}s") from None
        assert line is not None, "the process closed its output"
        return line

    def until(self, predicate, *, timeout_s: float = 60) -> list[str]:
        """Lines up to and including the first that ``predicate`` accepts."""
        deadline, seen = time.monotonic() + timeout_s, []
        while True:
            seen.append(self.next(timeout_s=max(deadline - time.monotonic(), 0.01)))
            if predicate(seen[-1]):
                return seen

    def rest(self) -> str:
        """What else it printed, once it has exited."""
        self._thread.join(timeout=30)
        out = []
        while not self._queue.empty():
            line = self._queue.get()
            if line is not None:
                out.append(line)
        return "".join(out)

"""Artifacts of a sandbox kept on the host after it is gone or stopped:
the runner's result, JUnit files and the log from the sandbox, and
Genesis's own diff of the change.

Written under ``<home>/artifacts/<experiment_id>/``; names come from the
sandbox (untrusted), so each is reduced to a safe relative path first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from orchestrator.runtimes.base import SandboxOutput

_SAFE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
LOG_FILE = "sandbox.log"
BUILD_FILE = "build.json"  # the image builds an experiment used: [{tier, tag, built}]


DIFF_FILE = "change.diff"  # Genesis's own diff of the change (orchestrator/snapshots/changes.py)


def export(root: Path, experiment_id: str, output: SandboxOutput, *, full_log: str | None = None,
           diff: str | None = None, run: str | None = None) -> Path:
    """Pass A's files and log at the top; another run's (``run``: pass B ``b``,
    rerun ``r1``, ...) under ``runs/<run>/``."""
    target = root / experiment_id if run is None else root / experiment_id / "runs" / run
    target.mkdir(parents=True, exist_ok=True)
    for name, data in output.files.items():
        if not _SAFE.match(name) or ".." in name.split("/"):
            continue
        path = target / "out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (target / LOG_FILE).write_text(full_log if full_log is not None else output.log_tail)
    if diff is not None:
        (target / DIFF_FILE).write_text(diff)
    return target


def stored_log(root: Path, experiment_id: str) -> str | None:
    path = root / experiment_id / LOG_FILE
    return path.read_text() if path.exists() else None


def record_builds(root: Path, experiment_id: str, builds: list[dict]) -> None:
    """Which images (by tier) this experiment was built on, and whether it built them."""
    target = root / experiment_id
    target.mkdir(parents=True, exist_ok=True)
    path = target / BUILD_FILE
    previous = json.loads(path.read_text()) if path.exists() else []
    path.write_text(json.dumps(previous + [b for b in builds if b not in previous], indent=1))


def recorded_builds(root: Path, experiment_id: str) -> list[dict]:
    path = root / experiment_id / BUILD_FILE
    return json.loads(path.read_text()) if path.exists() else []

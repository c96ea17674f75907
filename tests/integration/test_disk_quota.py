"""Disk quotas and log caps against real Docker daemons (docs/isolation.md, "Disk").

The quota tests run on a second dockerd of their own, on btrfs with quotas
in a loop file (tests/btrfsdocker.py): this host's overlay2 on ext4 cannot
cap a container. The toolchain image is built (or found) on the main daemon
and copied over; the snapshot is then built on the btrfs daemon by a Genesis
App of its own (its own home and installation) whose ``docker_url`` points
there. The log-flood test runs on the main daemon: log caps need no quota.
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import threading
import uuid

import pytest

import btrfsdocker
from helpers import hostile, request_body, run_experiment, sandboxes_of

pytestmark = pytest.mark.docker

MB = 10**6
WRITE_MB = 1500  # what the hostile change tries to write ...
QUOTA = "200Mi"  # ... against this resources.disk


@pytest.fixture(scope="module")
def btrfs_url(app):
    why = btrfsdocker.available()
    if why:
        pytest.fail(f"the disk quota tests need a btrfs dockerd: {why}")
    toolchain = asyncio.run(app.snapshots.toolchain("python"))  # built or found on the main daemon
    with btrfsdocker.btrfs_docker(load=(toolchain,)) as url:
        yield url


@pytest.fixture(scope="module", params=["runc", "runsc"])
def btrfs_app(request, btrfs_url, settings, tmp_path_factory):
    """A Genesis of its own on the btrfs daemon, its sandboxes under runc or gVisor."""
    from orchestrator.app import App

    home = tmp_path_factory.mktemp(f"genesis-btrfs-home-{request.param}")
    quota_app = App(settings.model_copy(update={
        "docker_url": btrfs_url, "home": home, "installation": f"btrfs-{request.param}-{settings.installation}"[:63],
        "sandbox_runtime": None if request.param == "runc" else request.param,
        "verdict": settings.verdict.model_copy(update={"baseline_repetitions": 1, "reruns": 0})}))
    try:
        quota_app.check_disk_quota()
        yield quota_app
    finally:
        quota_app.close()


@pytest.fixture(scope="module", params=["runc", "runsc"])
def flood_app(request, settings, docker_client):
    """A Genesis on the main daemon, its sandboxes under runc or gVisor."""
    from orchestrator.app import App

    application = App(settings.model_copy(update={
        "sandbox_runtime": None if request.param == "runc" else request.param,
        "installation": f"flood-{request.param}-{settings.installation}"[:63]}))
    yield application
    application.close()


def test_a_sandbox_writing_past_its_quota_fails_disk_exceeded_and_the_host_keeps_its_space(btrfs_app):
    assert btrfs_app.runtime.capabilities.disk_quota and btrfs_app.runtime.capabilities.disk_storage == "btrfs"
    script = f"""
import os
written = 0
with open("big", "wb") as f:
    for _ in range({WRITE_MB}):
        f.write(b"\\0" * 2**20)
        f.flush()
        written += 1
print("wrote", written, "MiB")
"""
    # The baseline (the unmodified tree) is built and run first, so the free space
    # measured below moves only with the hostile run.
    warm = run_experiment(btrfs_app, request_body(resources={"cpu": 1, "memory": "256Mi", "pids": 128,
                                                            "disk": QUOTA}))
    free_before = shutil.disk_usage("/").free
    view = run_experiment(btrfs_app, hostile(script, resources={"cpu": 1, "memory": "256Mi", "pids": 128,
                                                                "disk": QUOTA}))
    dropped = free_before - shutil.disk_usage("/").free
    assert view.phase.value == "Failed" and view.outcome.error.code == "disk_exceeded", view.message
    assert view.outcome.recommendation.value == "rollback"
    assert dropped < WRITE_MB * MB / 3, f"the host lost {dropped / MB:.0f} MB to a {WRITE_MB} MB write"
    assert sandboxes_of(btrfs_app.runtime.client, view.id) == []
    # And a harmless change on the same daemon, under the same quota, still merges.
    assert warm.phase.value == "Succeeded", warm.message
    assert warm.outcome.recommendation.value == "merge"
    created = [h for h in btrfs_app.store.history(view.id) if h.action == "created"]
    assert created and created[0].details["disk_enforced"] is True


def test_describe_shows_a_disk_that_was_not_enforced(app):
    from orchestrator.cli import printers
    from orchestrator.domain import disk

    view = run_experiment(app, request_body(resources={"cpu": 1, "memory": "256Mi", "pids": 128, "disk": "1Gi"}))
    text = printers.describe(view, app.store.history(view.id))
    support = app.runtime.detect_disk_quota()  # this host: overlay2 on extfs, not enforced
    assert f"disk=1Gi{disk.note(enforced=support.enforced, storage=support.storage)}\n" in text


def _log_files_bytes(client, experiment_id: str) -> int:
    total = 0
    for container in client.containers.list(all=True, filters={"label": f"genesis.experiment-id={experiment_id}"}):
        path = container.attrs.get("LogPath") or ""
        folder = os.path.dirname(path)
        if folder and os.path.isdir(folder):
            total += sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder)
                         if name.startswith(os.path.basename(path)))
    return total


def test_a_flood_on_stdout_is_capped_on_the_engine_and_in_the_stored_log(flood_app, docker_client):
    from orchestrator.pipeline import artifacts
    from orchestrator.runtimes.base import LOG_TAIL_BYTES
    from orchestrator.domain.models import parse_memory

    flood_mb = 120  # past the engine's cap (2 files of sandbox_log_max_size) several times over
    script = f"""
import sys
line = b"x" * 1023 + b"\\n"
for _ in range({flood_mb} * 1000):
    sys.stdout.buffer.write(line)
sys.stdout.flush()
"""
    body = hostile(script, resources={"cpu": 1, "memory": "256Mi", "pids": 64})
    experiment_id = body["experiment_id"]
    peak, stop = [0], threading.Event()

    def watch() -> None:  # the engine's log files of the sandbox, while it floods
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], _log_files_bytes(docker_client, experiment_id))
            except Exception:  # noqa: BLE001 - removed between list and inspect
                pass
            stop.wait(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    run_experiment(flood_app, request_body())  # warm: imports, snapshot and baseline before the peak is read
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    watcher.start()
    try:
        view = run_experiment(flood_app, body)
    finally:
        stop.set()
        watcher.join()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    engine_cap = parse_memory(flood_app.settings.sandbox_log_max_size) * flood_app.settings.sandbox_log_max_files
    assert view.phase.value == "Succeeded", view.message
    assert 0 < peak[0] <= engine_cap + 2**20, f"engine log files reached {peak[0]} bytes"
    stored = (flood_app.settings.artifacts_dir / view.id / artifacts.LOG_FILE).stat().st_size
    assert stored <= LOG_TAIL_BYTES
    assert rss_growth < 96 * MB, f"the orchestrator grew by {rss_growth / MB:.0f} MB reading a {flood_mb} MB flood"

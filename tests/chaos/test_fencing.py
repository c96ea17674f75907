"""Split brain, provoked: a leader stopped (SIGSTOP) or cut off from PostgreSQL
(a partition in a TCP proxy the test controls) for longer than its lease,
while a baseline runs or a snapshot image builds; a standby takes over; then
the former leader wakes up or the partition heals, and its in-flight steps
go on trying.

In every case: nothing recorded by the former leader after its lease lapsed,
no experiment (or baseline) with two sandboxes running at once, nothing
lost, one outcome each, and the new leader's sandboxes never killed by the
old one (every baseline repetition exits 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone

import pytest
from sqlalchemy import make_url

from helpers import RunningSandboxes, make_repo, request_body, wait_until
from netproxy import Proxy
from test_chaos import assert_finalized_once, make_app, start_serve, stop, wait_finished, write_config

pytestmark = pytest.mark.docker
LEASE_TTL_S = 3.0


def _holder(app) -> tuple[str, int] | None:
    from orchestrator.store.leases import Leader
    return Leader(app.engine).current()


def _prefix(proc) -> str:
    return f"controller:{os.uname().nodename}:{proc.pid}:"


def _batch(app, count: int) -> list[str]:
    """Experiments whose baseline and runs take a few seconds each."""
    ids = []
    for i in range(count):
        body = request_body(changes={"files": [{"path": f"notes/{i}.md", "content": f"change {i}\n"}]},
                            validation={"command": ["python3", "-c", "import time; time.sleep(3)"],
                                        "report": "exit_code"},
                            resources={"cpu": 0.5, "memory": "256Mi", "pids": 128})
        ids.append(app.intake.submit(json.dumps(body).encode()).view.id)
    return ids


def _after(app, ids, prefix: str, since: datetime) -> list[tuple[str, str, datetime]]:
    return [(h.experiment_id, h.action, h.at) for i in ids for h in app.store.history(i)
            if h.actor.startswith(prefix) and h.at > since]


def _assert_whole(app, ids, watch) -> None:
    assert watch.doubles == []
    views = [app.store.get(i) for i in ids]
    assert all(v.phase.value == "Succeeded" for v in views), [(v.id, v.message) for v in views]
    assert_finalized_once(app, ids)
    for record in app.store.baselines():
        assert record.phase == "Succeeded", record.message
        assert all(run.get("exit_code") == 0 for run in record.runs), record.runs  # none killed under it


def fresh_repo(path):
    """The sample monorepo at a commit no snapshot image exists for: its first
    experiment builds one (the window a stop during an image build needs)."""
    repo = make_repo(path)
    (repo / "FRESH").write_text(f"{uuid.uuid4()}\n")
    git = ["git", "-C", str(repo), "-c", "user.name=genesis", "-c", "user.email=genesis@localhost"]
    subprocess.run(git + ["add", "FRESH"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "fresh"], check=True)
    return repo


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fenced_app(request, tmp_path, docker_client):
    extra = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    app, config = make_app(tmp_path / "home", fresh_repo(tmp_path / "repo"), lease_ttl_s=LEASE_TTL_S, **extra)
    yield app, config
    app.close()


def _building(app, ids) -> bool:
    """An experiment is building its snapshot image (no baseline planned yet)."""
    return any(app.store.get(i).phase.value == "Building" for i in ids) and not app.store.baselines()


def _baseline_running(app, ids) -> bool:
    return any(b.phase == "Running" for b in app.store.baselines())


@pytest.mark.parametrize("point", [_baseline_running, _building], ids=["during-a-baseline", "during-a-build"])
def test_a_leader_stopped_past_its_lease_acts_no_more(fenced_app, docker_client, point):
    app, config = fenced_app
    first = start_serve(config)
    second = None
    try:
        wait_until(lambda: (_holder(app) or ("", 0))[0].startswith(_prefix(first)[len("controller:"):]),
                   timeout_s=60, what="the first controller to lead")
        second = start_serve(config)
        with RunningSandboxes(docker_client, store=app.store, installation=app.settings.installation) as watch:
            ids = _batch(app, 2)
            wait_until(lambda: point(app, ids), timeout_s=180, what=point.__doc__ or point.__name__,
                       poll_s=0.05)
            _, generation = _holder(app)
            first.send_signal(signal.SIGSTOP)
            stopped_at = datetime.now(timezone.utc)
            wait_until(lambda: _holder(app)[1] > generation, timeout_s=60, what="the standby to take over")
            wait_until(lambda: any(h.actor.startswith(_prefix(second)) for i in ids
                                   for h in app.store.history(i)), timeout_s=60, what="the new leader to act")
            first.send_signal(signal.SIGCONT)
            wait_finished(app, ids)
            assert first.poll() is None and second.poll() is None
        lapsed = stopped_at.timestamp() + LEASE_TTL_S
        late = _after(app, ids, _prefix(first), datetime.fromtimestamp(lapsed, timezone.utc))
        assert late == []
        assert _holder(app)[0].startswith(_prefix(second)[len("controller:"):])
        _assert_whole(app, ids, watch)
        assert all(app.store.get(i).attempt == 1 for i in ids)  # nobody pushed one to a second attempt
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
        stop(first)
        if second is not None:
            stop(second)


@pytest.mark.postgres
def test_a_leader_partitioned_from_postgresql_mid_batch_acts_no_more(tmp_path, sample_repo, docker_client,
                                                                    postgres_url):
    url = make_url(postgres_url)
    proxy = Proxy((url.host, url.port))
    behind = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    app, direct = make_app(tmp_path / "home", sample_repo, database_url=postgres_url, lease_ttl_s=LEASE_TTL_S)
    cut = write_config(tmp_path / "cut", tmp_path / "unused", database_url=behind, lease_ttl_s=LEASE_TTL_S,
                       max_concurrent=2)
    settings = json.loads(direct.read_text())
    cut.write_text(json.dumps({**settings, "database_url": behind}))  # same home, repos and labels
    first = start_serve(cut)
    second = None
    try:
        wait_until(lambda: (_holder(app) or ("", 0))[0].startswith(_prefix(first)[len("controller:"):]),
                   timeout_s=60, what="the proxied controller to lead")
        second = start_serve(direct)
        with RunningSandboxes(docker_client, store=app.store, installation=app.settings.installation) as watch:
            ids = _batch(app, 3)
            wait_until(lambda: any(b.phase == "Running" for b in app.store.baselines()), timeout_s=180,
                       what="a baseline repetition to run")
            _, generation = _holder(app)
            proxy.partition()
            cut_at = datetime.now(timezone.utc)
            wait_until(lambda: _holder(app)[1] > generation, timeout_s=60, what="the standby to take over")
            wait_until(lambda: any(h.actor.startswith(_prefix(second)) for i in ids
                                   for h in app.store.history(i)), timeout_s=60, what="the new leader to act")
            time.sleep(LEASE_TTL_S)  # the partition lasts well past the lease: the held writes are stale
            proxy.heal()
            wait_finished(app, ids)
            assert first.poll() is None, "the partitioned controller died"
        late = _after(app, ids, _prefix(first), datetime.fromtimestamp(cut_at.timestamp() + LEASE_TTL_S,
                                                                       timezone.utc))
        assert late == []
        _assert_whole(app, ids, watch)
        log = (tmp_path / "cut" / "serve.log").read_text()
        assert "leadership lost" in log, log[-3000:]
    finally:
        stop(first)
        if second is not None:
            stop(second)
        proxy.close()
        app.close()

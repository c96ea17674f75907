"""Chaos: the controller killed, the Docker daemon and PostgreSQL restarted,
two controllers at once. Each test owns what it kills: its `genesis serve`
processes, its own dockerd (separate socket and data root), its own
PostgreSQL server. Afterwards every experiment must be finalized exactly
once, with one outcome in the outbox, and no sandbox left that should not
exist."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest

from helpers import ROOT, RUN_ID, TEST_LABEL, RunningSandboxes, request_body, wait_until

pytestmark = pytest.mark.docker
FINAL = ("phase:Succeeded", "phase:Failed")


def write_config(path: Path, repo: Path, **extra) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    config = path / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(path), "repos": {"monorepo": {"path": str(repo), "allow_validation_override": True}}, "extra_labels": {TEST_LABEL: RUN_ID},
        "pass_interval_s": 0.2, "backoff_base_s": 0.2, "backoff_limit": 50, "preserve_ttl_s": 3600, **extra}))
    return config


def make_app(home: Path, repo: Path, **extra):
    """A config file under ``home`` and the App that reads it (for submitting and inspecting)."""
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    config = write_config(home, repo, max_concurrent=2, **extra)
    return App(load_settings(config)), config


def submit(app, count: int, *, seconds: float) -> list[str]:
    """``count`` passing experiments of ``seconds`` each; returns their ids."""
    return [app.intake.submit(json.dumps(experiment(passes=True, seconds=seconds)).encode()).view.id
            for _ in range(count)]


def start_serve(config: Path) -> subprocess.Popen:
    env = dict(os.environ, GENESIS_CONFIG=str(config))
    log = open(config.parent / "serve.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "serve"], env=env, cwd=ROOT,
                            stdout=log, stderr=log)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def experiment(*, passes: bool, seconds: float, **overrides) -> dict:
    script = f"import sys, time\ntime.sleep({seconds})\nsys.exit({0 if passes else 1})\n"
    return request_body(changes={"files": [{"path": "work.py", "content": script}]},
                        validation={"command": ["python3", "work.py"], "report": "exit_code"},
                        resources={"cpu": 0.5, "memory": "256Mi", "pids": 128}, **overrides)


def wait_finished(app, ids, *, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(app.store.get(i).phase.finished for i in ids):
            return
        time.sleep(0.3)
    pending = {i: app.store.get(i).phase.value for i in ids if not app.store.get(i).phase.finished}
    raise AssertionError(f"not finished after {timeout_s}s: {pending}")


def assert_finalized_once(app, ids) -> None:
    for experiment_id in ids:
        finals = [h for h in app.store.history(experiment_id) if h.action in FINAL]
        assert len(finals) == 1, (experiment_id, [h.action for h in app.store.history(experiment_id)])
    outbox = Counter((r["experiment_id"], r["subject"].split(".")[0]) for r in app.store.outbox()
                     if r["experiment_id"] in ids)
    assert all(outbox[(i, "genesis")] == 1 and outbox[(i, "centralcloud")] == 1 for i in ids), outbox


def assert_only_preserved_remain(app, client, ids) -> None:
    for experiment_id in ids:
        view = app.store.get(experiment_id)
        labelled = [c.name for c in client.containers.list(
            all=True, filters={"label": f"genesis.experiment-id={experiment_id}"})]
        claimed = [name for name, _ in app.store.claimed_by(experiment_id)  # from a warm pool
                   if client.containers.list(all=True, filters={"name": f"^{name}$"})]
        names = sorted(labelled + claimed)
        expected = [view.sandbox_name] if view.preserved_until is not None else []
        assert names == expected, (experiment_id, view.phase.value, view.recommendation, names)


@pytest.fixture
def chaos_app(tmp_path, sample_repo, docker_client):
    app, config = make_app(tmp_path / "home", sample_repo)
    yield app, config
    app.close()


def test_sigkill_the_controller_ten_times_during_a_batch(chaos_app, docker_client):
    app, config = chaos_app
    rng = random.Random(20261121)
    bodies = [experiment(passes=i % 3 != 0, seconds=rng.uniform(0.5, 1.5)) for i in range(10)]
    ids = [app.intake.submit(json.dumps(b).encode()).view.id for b in bodies]
    kills = 0
    with RunningSandboxes(docker_client, store=app.store, installation=app.settings.installation) as watch:
        while kills < 10:
            proc = start_serve(config)
            time.sleep(rng.uniform(0.3, 2.5))  # a random point: building, running, collecting...
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        proc = start_serve(config)
        try:
            wait_finished(app, ids)
        finally:
            stop(proc)
    assert kills >= 10
    assert watch.doubles == []
    for body, experiment_id in zip(bodies, ids):
        view = app.store.get(experiment_id)
        passes = "sys.exit(0)" in body["changes"]["files"][0]["content"]
        assert view.phase.value == "Succeeded", (experiment_id, view.message)
        assert view.recommendation.value == ("merge" if passes else "rollback")
    assert_finalized_once(app, ids)
    assert_only_preserved_remain(app, docker_client, ids)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def leader_app(request, tmp_path, sample_repo, docker_client):
    """The lease row on SQLite or on PostgreSQL."""
    extra = {"database_url": request.getfixturevalue("postgres_url")} if request.param == "postgres" else {}
    app, config = make_app(tmp_path / "home", sample_repo, **extra)
    yield app, config
    app.close()


def test_two_controllers_at_once_exactly_one_acts_and_the_standby_takes_over(leader_app, docker_client):
    app, config = leader_app
    from orchestrator.store.leases import Leader

    first = start_serve(config)
    # The first holds the lease before the second starts (a condition, not a guess at start-up time).
    wait_until(lambda: ((Leader(app.engine).current() or ("", 0))[0]
                        .startswith(f"{os.uname().nodename}:{first.pid}:")),
               timeout_s=60, what="the first controller to take the lease")
    second = start_serve(config)
    try:
        ids = submit(app, 4, seconds=0.5)
        wait_finished(app, ids)
        actors = {h.actor for i in ids for h in app.store.history(i) if h.actor.startswith("controller:")}
        assert {a.rsplit(":", 1)[0] for a in actors} == {f"controller:{os.uname().nodename}:{first.pid}"}

        first.send_signal(signal.SIGKILL)
        first.wait()
        later = submit(app, 2, seconds=0.5)
        wait_finished(app, later)
        actors = {h.actor for i in later for h in app.store.history(i) if h.actor.startswith("controller:")}
        assert {a.rsplit(":", 1)[0] for a in actors} == {f"controller:{os.uname().nodename}:{second.pid}"}
    finally:
        stop(first)
        stop(second)
    assert_finalized_once(app, ids + later)


def test_postgresql_restarted_mid_run(tmp_path, sample_repo, docker_client, postgres_server, postgres_url):
    app, config = make_app(tmp_path / "home", sample_repo, database_url=postgres_url)
    proc = start_serve(config)
    try:
        ids = submit(app, 4, seconds=2)
        wait_until(lambda: any(app.store.get(i).phase.value == "Running" for i in ids), timeout_s=120,
                   what="a sandbox to run")
        postgres_server.stop()
        time.sleep(3)
        assert proc.poll() is None, "the controller died with the database"
        postgres_server.start()
        app.engine.dispose()  # drop the test's own dead connections
        wait_finished(app, ids)
        assert proc.poll() is None
    finally:
        stop(proc)
        app.close()
    assert all(app.store.get(i).phase.value == "Succeeded" for i in ids)
    assert_finalized_once(app, ids)
    assert_only_preserved_remain(app, docker_client, ids)


class OwnDockerd:
    """A second Docker daemon this test starts, restarts and stops (own socket and data root)."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="gdk-", dir="/tmp"))
        self.socket = f"unix://{self.root}/docker.sock"
        self.proc: subprocess.Popen | None = None
        # A bridge of its own: with --bridge=none dockerd deletes the host's
        # docker0 at start-up, which would break the main engine's networks.
        self.bridge = f"gdk{self.root.name[-8:]}".replace("-", "")[:15]
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "addr", "add", "169.254.213.1/30", "dev", self.bridge], check=True)

    def start(self) -> None:
        log = open(self.root / "dockerd.log", "ab")
        self.proc = subprocess.Popen(
            ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
             "--pidfile", str(self.root / "docker.pid"), "-H", self.socket, f"--bridge={self.bridge}",
             "--iptables=false", "--ip-masq=false", "--ip-forward=false"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        import docker
        deadline = time.monotonic() + 60
        while True:
            try:
                docker.DockerClient(base_url=self.socket).ping()
                return
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, (self.root / "dockerd.log").read_text()[-2000:]
                time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], check=False)
        subprocess.run(["rm", "-rf", str(self.root)], check=False)


@pytest.fixture
def own_dockerd(app):
    import asyncio

    toolchain = asyncio.run(app.snapshots.toolchain())  # built on the main engine if missing
    daemon = OwnDockerd()
    daemon.start()
    try:
        save = subprocess.Popen(["docker", "save", toolchain], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", daemon.socket, "load", "-q"], stdin=save.stdout, check=True,
                       capture_output=True)
        save.wait()
        yield daemon
    finally:
        daemon.stop()
        daemon.remove()


def test_docker_daemon_restarted_mid_run(tmp_path, sample_repo, own_dockerd):
    import docker

    app, config = make_app(tmp_path / "home", sample_repo, docker_url=own_dockerd.socket)
    proc = start_serve(config)
    try:
        ids = submit(app, 3, seconds=4)
        wait_until(lambda: any(app.store.get(i).phase.value == "Running" for i in ids), timeout_s=180,
                   what="a sandbox to run")
        own_dockerd.stop()   # stops every container it runs
        time.sleep(2)
        own_dockerd.start()
        wait_finished(app, ids)
        assert proc.poll() is None, "the controller died with the Docker daemon"
    finally:
        stop(proc)
    client = docker.DockerClient(base_url=own_dockerd.socket)
    views = [app.store.get(i) for i in ids]
    assert all(v.phase.value == "Succeeded" for v in views), [v.message for v in views]
    assert max(v.attempt for v in views) >= 2  # the interrupted ones ran again
    assert_finalized_once(app, ids)
    assert_only_preserved_remain(app, client, ids)
    app.close()


def test_a_baseline_running_when_the_controller_dies_is_adopted_not_started_over(chaos_app, docker_client):
    # A baseline is a record of its own: after a SIGKILL its running repetition is
    # adopted by the next controller (never deleted as "not the live sandbox"),
    # and every repetition is launched exactly once.
    app, config = chaos_app
    body = request_body(changes={"files": [{"path": "NOTES.md", "content": "adopt the baseline\n"}]},
                        validation={"command": ["python3", "-c", "import time; time.sleep(4)"],
                                    "report": "exit_code"},
                        resources={"cpu": 0.5, "memory": "256Mi", "pids": 128})
    experiment_id = app.intake.submit(json.dumps(body).encode()).view.id
    proc = start_serve(config)
    try:
        wait_until(lambda: any(b.phase == "Running" for b in app.store.baselines()), timeout_s=180,
                   what="a baseline repetition to run")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        (record,) = [b for b in app.store.baselines() if b.phase == "Running"]
        assert docker_client.containers.get(record.sandbox_name).status == "running"
        proc = start_serve(config)
        wait_finished(app, [experiment_id])
    finally:
        stop(proc)
    view = app.store.get(experiment_id)
    assert view.phase.value == "Succeeded", view.message
    done = app.store.baseline_record(record.key)
    assert done.phase == "Succeeded" and done.attempts == 0 and len(done.runs) == done.repetitions
    created = [h.sandbox_name for h in app.store.history(experiment_id)
               if h.action == "created" and h.sandbox_name.startswith("genesis-baseline-")]
    assert sorted(created) == [f"genesis-baseline-{record.key[:16]}-{i}-a0" for i in range(done.repetitions)], created
    assert record.sandbox_name in created

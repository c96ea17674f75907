"""NATS credentials (and that they never reach a log), the periodic health
report, and the trace id in every log line of an experiment."""

from __future__ import annotations

import asyncio
import json
import logging

import nats
import pytest

from helpers import RUN_ID, TEST_LABEL, wait_until
from natsserver import NatsServer
from test_nats import TRACE, GenesisThread, quick, recorder

pytestmark = pytest.mark.docker
PASSWORD = "s3cret-Pa55word-never-logged"


@pytest.fixture
def auth_server():
    server = NatsServer(extra_config=f'authorization {{ user: genesis, password: "{PASSWORD}" }}\n')
    server.start()
    yield server
    server.stop()
    server.remove()


def make_app(tmp_path, sample_repo, nats_settings: dict, **extra):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(tmp_path), "repos": {"monorepo": {"path": str(sample_repo), "allow_validation_override": True}}, "extra_labels": {TEST_LABEL: RUN_ID},
        "pass_interval_s": 0.1, "preserve_ttl_s": 0, "nats": nats_settings, **extra}))
    return App(load_settings(config))


def logged_text(caplog) -> str:
    from orchestrator.telemetry.logging import JsonFormatter
    formatter = JsonFormatter()
    return "\n".join(formatter.format(r) for r in caplog.records)


def test_user_and_password_work_and_are_never_logged(tmp_path, sample_repo, auth_server, docker_client, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = make_app(tmp_path / "wrong", sample_repo, {"url": auth_server.url, "user": "genesis",
                                                       "password": "wrong-" + PASSWORD})
    from orchestrator.messaging.connection import connect

    from orchestrator.errors import GenesisError
    with pytest.raises(GenesisError) as refused:  # the server says "Authorization Violation", or just hangs up
        asyncio.run(connect(wrong.settings.nats, timeout_s=3))
    assert refused.value.code == "nats_unreachable" and PASSWORD not in str(refused.value)
    wrong.close()
    app = make_app(tmp_path / "right", sample_repo, {"url": auth_server.url, "user": "genesis", "password": PASSWORD})
    body = quick()
    with GenesisThread(app):
        async def agent():
            nc = await nats.connect(auth_server.url, user="genesis", password=PASSWORD)
            await nc.jetstream().publish("genesis.experiment.request.test-instance", json.dumps(body).encode(),
                                         headers={"Nats-Msg-Id": body["experiment_id"]})
            await nc.close()
        asyncio.run(agent())
        wait_until(lambda: not app.store.outbox(unpublished_only=True) and any(
            r["experiment_id"] == body["experiment_id"] for r in app.store.outbox()), timeout_s=120,
            what="the outcome to be published")
    assert app.store.get(body["experiment_id"]).phase.value == "Succeeded"
    assert PASSWORD not in logged_text(caplog)
    assert PASSWORD not in repr(app.settings) and PASSWORD not in app.settings.model_dump_json()
    app.close()


def test_health_report_is_published_on_its_interval(tmp_path, sample_repo, nats_server, docker_client):
    """The daily report is a scheduled job through the outbox: tests/messaging/test_daily_report.py."""
    app = make_app(tmp_path, sample_repo, {"url": nats_server.url, "health_interval_s": 0.5})
    seen = []

    async def listen():
        nc = await nats.connect(nats_server.url)
        await nc.subscribe("system.health.genesis", cb=recorder(seen))
        for _ in range(300):  # up to 30 s
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.1)
        await nc.close()

    with GenesisThread(app):
        asyncio.run(listen())
    assert len(seen) >= 2  # on its interval, not once
    health = seen[0]["payload"]
    assert set(health) >= {"active_experiments", "queued_experiments", "success_rate_30d", "sandbox_disk_bytes",
                           "runtime_reachable", "version", "timestamp"}
    assert health["runtime_reachable"] is True and isinstance(health["sandbox_disk_bytes"], int)
    app.close()


def test_trace_id_is_in_every_log_line_about_the_experiment(tmp_path, sample_repo, nats_server, docker_client, caplog):
    caplog.set_level(logging.INFO)
    app = make_app(tmp_path, sample_repo, {"url": nats_server.url})
    body = quick()

    async def agent():
        nc = await nats.connect(nats_server.url)
        await nc.jetstream().publish("genesis.experiment.request.test-instance", json.dumps(body).encode(),
                                     headers={"traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
        await nc.close()

    with GenesisThread(app):
        asyncio.run(agent())
        wait_until(lambda: any(r["experiment_id"] == body["experiment_id"] for r in app.store.outbox())
                   and app.store.get(body["experiment_id"]).phase.finished,  # the outbox also has the daily report
                   timeout_s=120, what="the experiment to finish")
    lines = [r for r in caplog.records if getattr(r, "experiment_id", None) == body["experiment_id"]]
    events = {r.getMessage() for r in lines}
    assert {"experiment accepted", "experiment_start", "sandbox_created", "tests_completed",
            "experiment_complete"} <= events
    assert all(getattr(r, "trace_id", None) == TRACE for r in lines)
    app.close()

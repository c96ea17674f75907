"""Genesis over a real nats-server with JetStream: round trip, a burst while
Genesis is down, the NATS server killed mid-batch, duplicates, conflicts,
and hostile bodies. Genesis runs as `genesis serve` does (controller plus
NATS service), in a thread of its own."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
import uuid

import nats
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from helpers import RUN_ID, TEST_LABEL, request_body, wait_until

pytestmark = pytest.mark.docker
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


class GenesisThread:
    """`genesis serve` in a background thread: controller + NATS service."""

    def __init__(self, app) -> None:
        self.app = app
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        from orchestrator.messaging.service import NatsService

        async def serve():
            self.loop = asyncio.get_running_loop()
            self.controller = self.app.controller(leader=False)
            self.service = NatsService(self.app, self.controller)
            self._ready.set()
            await asyncio.gather(self.controller.run(), self.service.run())

        asyncio.run(serve())

    def __enter__(self) -> "GenesisThread":
        self._thread.start()
        self._ready.wait(10)
        wait_until(lambda: self.service.connected.is_set(), timeout_s=20, what="Genesis to connect to NATS")
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.controller.shutdown)
        self.loop.call_soon_threadsafe(self.service.shutdown)
        self._thread.join(60)


@pytest.fixture
def nats_app(tmp_path, sample_repo, nats_server, docker_client):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(tmp_path), "repos": {"monorepo": {"path": str(sample_repo), "allow_validation_override": True}},
        "extra_labels": {TEST_LABEL: RUN_ID}, "pass_interval_s": 0.1, "max_concurrent": 6, "preserve_ttl_s": 0,
        "nats": {"url": nats_server.url, "legacy_mirrors": True}}))
    app = App(load_settings(config))
    yield app, nats_server
    app.close()


def quick(**overrides) -> dict:
    """A trivial experiment (validation `true`), small enough to run six at once."""
    body = request_body(validation={"command": ["true"], "report": "exit_code"}, resources={"cpu": 0.25, "memory": "128Mi", "pids": 64})
    body.update(overrides)
    return body


async def publish(url: str, bodies: list, *, headers=None, subject="genesis.experiment.request.test-instance"):
    nc = await nats.connect(url)
    js = nc.jetstream()
    for body in bodies:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        # As the client does: no Nats-Msg-Id (Genesis de-duplicates by experiment id), so an
        # impostor's message naming an id cannot make the server drop the honest one.
        await js.publish(subject, raw, headers=headers or None, timeout=10)
    await nc.drain()


async def outcome_counts(url: str) -> dict[str, int]:
    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info("GENESIS_OUTCOMES", subjects_filter=">")
    await nc.drain()
    return dict(info.state.subjects or {})


def all_published(app) -> bool:
    return not app.store.outbox(unpublished_only=True)


def test_round_trip_subject_body_and_headers(nats_app):
    from orchestrator.client import GenesisClient

    app, server = nats_app
    body = quick()
    seen = []

    async def agent():
        nc = await nats.connect(server.url)
        await nc.subscribe("genesis.experiment.completed.>", cb=recorder(seen))
        await nc.subscribe("centralcloud.experiment.result", cb=recorder(seen))
        await nc.subscribe("agent.events.experiment.completed.>", cb=recorder(seen))
        outcome = await GenesisClient(nc).run(body, timeout=120, traceparent=f"00-{TRACE}-00f067aa0ba902b7-01")
        await asyncio.sleep(0.5)
        await nc.drain()
        return outcome

    with GenesisThread(app):
        outcome = asyncio.run(agent())
    experiment_id = body["experiment_id"]
    assert outcome["experiment_id"] == experiment_id and outcome["status"] == "success"
    assert outcome["recommendation"] == "merge" and outcome["trace_id"] == TRACE
    assert outcome["metrics"]["test_count"] == 1 and outcome["baseline"]["test_count"] == 1
    by_subject = {m["subject"]: m for m in seen if m["payload"]["experiment_id"] == experiment_id}
    assert set(by_subject) == {f"genesis.experiment.completed.{experiment_id}", "centralcloud.experiment.result",
                               f"agent.events.experiment.completed.{experiment_id}"}
    completed = by_subject[f"genesis.experiment.completed.{experiment_id}"]
    assert completed["headers"]["Nats-Msg-Id"] == f"{experiment_id}:1:genesis"
    assert completed["headers"]["traceparent"].startswith(f"00-{TRACE}-")
    assert completed["payload"] == outcome
    assert app.store.get(experiment_id).trace_id == TRACE


def recorder(seen: list):
    """A subscription callback that keeps subject, headers and payload."""
    async def record(message) -> None:
        seen.append({"subject": message.subject, "headers": dict(message.headers or {}),
                     "payload": json.loads(message.data)})
    return record


def test_burst_published_while_genesis_is_down_is_processed_once(nats_app):
    app, server = nats_app
    with GenesisThread(app):
        pass  # creates the streams and the durable consumer, then stops
    bodies = [quick() for _ in range(200)]
    asyncio.run(publish(server.url, bodies))
    ids = [b["experiment_id"] for b in bodies]
    with GenesisThread(app):
        # Each is looked up only once recorded: the first may finish before the last is taken in.
        wait_until(lambda: all(_exists(app, i) and app.store.get(i).phase.finished for i in ids)
                   and all_published(app), timeout_s=400, what="200 experiments to finish", poll_s=1.0)
    counts = asyncio.run(outcome_counts(server.url))
    assert all(counts.get(f"genesis.experiment.completed.{i}") == 1 for i in ids)
    assert counts.get("centralcloud.experiment.result", 0) >= 200
    for experiment_id in ids:
        assert [h.action for h in app.store.history(experiment_id)].count("submitted") == 1


def test_nats_server_killed_mid_batch_loses_and_repeats_nothing(nats_app):
    app, server = nats_app
    first, second = [quick() for _ in range(10)], [quick() for _ in range(10)]
    ids = [b["experiment_id"] for b in first + second]
    with GenesisThread(app):
        asyncio.run(publish(server.url, first))
        wait_until(lambda: any(app.store.get(i).phase.finished for i in ids[:10]
                               if _exists(app, i)), timeout_s=120, what="the first outcomes")
        server.kill()
        time.sleep(1.0)
        server.start()
        asyncio.run(publish(server.url, second))
        wait_until(lambda: all(_exists(app, i) and app.store.get(i).phase.finished for i in ids)
                   and all_published(app), timeout_s=300, what="all 20 to finish and be published", poll_s=0.5)
    counts = asyncio.run(outcome_counts(server.url))
    assert [counts.get(f"genesis.experiment.completed.{i}") for i in ids] == [1] * 20
    assert all([h.action for h in app.store.history(i)].count("submitted") == 1 for i in ids)


def _exists(app, experiment_id: str) -> bool:
    from orchestrator.errors import NotFound
    try:
        app.store.get(experiment_id)
        return True
    except NotFound:
        return False


def test_duplicates_run_once_and_a_conflict_is_answered_apart(nats_app):
    app, server = nats_app
    body = quick()
    experiment_id = body["experiment_id"]
    conflicting = dict(body, description="another body under the same id")
    replies = []

    async def agent():
        nc = await nats.connect(server.url)
        await nc.subscribe("agent-inbox.conflicts", cb=recorder(replies))
        await nc.subscribe("genesis.instance.test-instance.rejected", cb=recorder(replies))
        js = nc.jetstream()
        for msg_id in ("a", "b"):  # the same request twice, past the server's de-duplication
            await js.publish("genesis.experiment.request.test-instance", json.dumps(body).encode(),
                             headers={"Nats-Msg-Id": msg_id})
        await js.publish("genesis.experiment.request.test-instance", json.dumps(conflicting).encode(),
                         headers={"Nats-Msg-Id": "c", "Genesis-Reply-To": "agent-inbox.conflicts"})
        for _ in range(100):
            if len(replies) >= 2:
                break
            await asyncio.sleep(0.1)
        await nc.drain()

    with GenesisThread(app):
        asyncio.run(agent())
        wait_until(lambda: app.store.get(experiment_id).phase.finished and all_published(app), timeout_s=120,
                   what="the experiment to finish")
    assert sorted(r["subject"] for r in replies) == ["agent-inbox.conflicts", "genesis.instance.test-instance.rejected"]
    assert all(r["payload"]["error"]["code"] == "conflict" for r in replies)
    counts = asyncio.run(outcome_counts(server.url))
    assert counts.get(f"genesis.experiment.completed.{experiment_id}") == 1
    assert not any(s.startswith("genesis.experiment.failed.") and experiment_id in s for s in counts)
    actions = [h.action for h in app.store.history(experiment_id)]
    assert actions.count("submitted") == 1 and actions.count("conflict") == 1


hostile_bodies = st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.text(max_size=12), st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8), max_size=6).map(lambda d: json.dumps(d).encode()),
    st.sampled_from(["../../etc/passwd", "/abs/path", ".git/config", "a/../../b"]).map(
        lambda p: json.dumps(quick(changes={"files": [{"path": p, "content": "x"}]})).encode()),
    st.integers(min_value=1, max_value=10).map(lambda n: json.dumps(quick(resources={"cpu": 10 ** n})).encode()),
)


@pytest.fixture
def running_genesis(nats_app):
    app, server = nats_app
    with GenesisThread(app) as genesis:
        yield app, server, genesis


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=hostile_bodies)
def test_hostile_bodies_each_get_a_failed_outcome_and_intake_stays_healthy(running_genesis, raw):
    app, server, genesis = running_genesis
    asyncio.run(publish(server.url, [raw], subject="genesis.experiment.request.fuzz-agent"))
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    client_id = data.get("experiment_id") if isinstance(data, dict) else None
    expected_id = client_id if isinstance(client_id, str) and _usable(client_id) else \
        "rejected-" + hashlib.sha256(raw).hexdigest()[:24]
    wait_until(lambda: _exists(app, expected_id) and app.store.get(expected_id).phase.finished
               and all_published(app), timeout_s=60, what=f"an outcome for {expected_id}")
    view = app.store.get(expected_id)
    assert view.phase.value == "Failed" and view.outcome.error.code
    subjects = {r["subject"] for r in app.store.outbox() if r["experiment_id"] == expected_id}
    assert f"genesis.experiment.failed.{expected_id}" in subjects
    if expected_id.startswith("rejected-"):
        assert "genesis.instance.fuzz-agent.rejected" in subjects
    assert genesis.service.connected.is_set()


def _usable(experiment_id: str) -> bool:
    import re
    return bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", experiment_id))


def test_intake_still_healthy_after_hostile_bodies(running_genesis):
    app, server, _ = running_genesis
    asyncio.run(publish(server.url, [b"\xff\xfe garbage", b"{}", b"[]"], subject="genesis.experiment.request.x"))
    body = quick()
    asyncio.run(publish(server.url, [body]))
    wait_until(lambda: _exists(app, body["experiment_id"]) and app.store.get(body["experiment_id"]).phase.finished,
               timeout_s=120, what="a valid request after garbage")
    assert app.store.get(body["experiment_id"]).phase.value == "Succeeded"


def test_undecodable_body_is_also_dead_lettered(running_genesis):
    app, server, _ = running_genesis
    raw = b"\xff\xfe not even utf-8 " + uuid.uuid4().hex.encode()
    asyncio.run(publish(server.url, [raw], subject="genesis.experiment.request.dlq-agent"))

    async def dead_letter_count() -> int:
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("GENESIS_DLQ")
        await nc.drain()
        return info.state.messages

    async def last_dead_letter():
        nc = await nats.connect(server.url)
        message = await nc.jetstream().get_last_msg("GENESIS_DLQ", "genesis.dlq.requests")
        await nc.drain()
        return message

    wait_until(lambda: asyncio.run(dead_letter_count()) >= 1, timeout_s=30, what="a dead letter")
    message = asyncio.run(last_dead_letter())
    assert message.data == raw
    assert message.headers["Genesis-Original-Subject"] == "genesis.experiment.request.dlq-agent"


def test_a_request_on_another_instance_s_subject_is_refused(running_genesis):
    # An agent may only submit as itself: the body's instance_id must be the
    # subject's. The impostor's request is recorded as the sender's, under an id
    # of its own, and answered, failed; it does not squat the experiment id it
    # named, which the honest agent then uses.
    app, server, _ = running_genesis
    impostor = quick(instance_id="agent-a")
    unreadable = quick(instance_id="agent-a")
    asyncio.run(publish(server.url, [impostor], subject="genesis.experiment.request.agent-b"))
    asyncio.run(publish(server.url, [unreadable], subject="genesis.experiment.request.agent-a.extra"))
    honest = dict(impostor)
    asyncio.run(publish(server.url, [honest], subject="genesis.experiment.request.agent-a"))

    def refusals() -> list:
        return [v for v in app.store.list() if v.raw_excerpt and v.reason == "instance_mismatch"
                and (impostor["experiment_id"] in v.raw_excerpt or unreadable["experiment_id"] in v.raw_excerpt)]

    wait_until(lambda: _exists(app, honest["experiment_id"]) and app.store.get(honest["experiment_id"]).phase.finished
               and len(refusals()) == 2 and all_published(app), timeout_s=120, what="the three outcomes")
    refused = {v.instance_id: v for v in refusals()}
    assert set(refused) == {"agent-b", "unknown"}, refused
    for view in refused.values():
        assert view.id.startswith("rejected-") and view.phase.value == "Failed"
        assert view.outcome.error.code == "instance_mismatch", view.message
        subjects = {r["subject"] for r in app.store.outbox() if r["experiment_id"] == view.id}
        assert f"genesis.experiment.failed.{view.id}" in subjects
    assert app.store.get(honest["experiment_id"]).phase.value == "Succeeded"

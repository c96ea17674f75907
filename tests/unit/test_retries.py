"""The retry policies of the NATS service and the pod informer, without servers.

The first NATS connection backs off from 1 s doubling to 30 s and a shutdown
ends the wait at once; the informer backs off from 0.5 s doubling to 30 s,
relists on 410 Gone and resumes after a read timeout without waiting, and
starts afresh after a healthy watch. What the API server and NATS answer is
faked here; tests/k8s and tests/messaging run the same code against real
servers. (The 409 retry of ``start`` is tested against the API emulator in
tests/k8s/test_kubernetes_runtime.py.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from orchestrator.messaging import service as nats_service
from orchestrator.runtimes.kubernetes import PodInformer
from orchestrator.settings import NatsSettings

UNREACHABLE = "nats://127.0.0.1:1"


def new_service() -> nats_service.NatsService:
    app = SimpleNamespace(settings=SimpleNamespace(nats=NatsSettings(url=UNREACHABLE)))
    return nats_service.NatsService(app, SimpleNamespace(actor="test"))


def refused(calls: list):
    async def connect(settings, *, name):
        calls.append(time.monotonic())
        raise ConnectionRefusedError(f"connect to {settings.url} refused")
    return connect


def test_first_nats_connection_backs_off_doubling_to_the_cap(monkeypatch, caplog):
    calls: list[float] = []
    monkeypatch.setattr(nats_service, "connect", refused(calls))
    service = new_service()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:  # no real waiting; shut down after eight waits
        slept.append(seconds)
        if len(slept) == 8:
            service.shutdown()

    service._sleep = sleep
    caplog.set_level(logging.WARNING, logger=nats_service.__name__)
    asyncio.run(asyncio.wait_for(service.run(), timeout=5))
    assert slept == [1, 2, 4, 8, 16, 30, 30, 30]
    assert len(calls) == 8, "no attempt after the shutdown"
    warnings = [r for r in caplog.records if r.getMessage() == "nats unreachable; retrying"]
    assert [r.retry_in_s for r in warnings] == slept
    assert warnings[0].servers == UNREACHABLE and "refused" in warnings[0].error


def test_shutdown_ends_the_wait_between_nats_attempts_at_once(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(nats_service, "connect", refused(calls))
    service = new_service()

    async def main() -> float:
        task = asyncio.create_task(service.run())
        while not calls:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # now in the 1 s wait before the second attempt
        service.shutdown()
        stopped = time.monotonic()
        await asyncio.wait_for(task, timeout=0.5)
        return time.monotonic() - stopped

    assert asyncio.run(main()) < 0.5
    assert len(calls) == 1


def test_a_nats_service_shut_down_before_it_runs_never_connects(monkeypatch):
    calls: list[float] = []
    monkeypatch.setattr(nats_service, "connect", refused(calls))
    service = new_service()
    service.shutdown()
    asyncio.run(asyncio.wait_for(service.run(), timeout=1))
    assert calls == []


# -- the pod informer -----------------------------------------------------------------

class ScriptedStop:
    """The informer's stop event: records every wait, and is set once the script has run out."""

    def __init__(self, script: list) -> None:
        self.script = script
        self.waits: list[float] = []

    def is_set(self) -> bool:
        return not self.script

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def scripted_informer(script: list[tuple[str, object]]) -> tuple[PodInformer, ScriptedStop]:
    """An informer whose relists and watches play ``script``: (call expected, exception or effect)."""
    informer = PodInformer(None, "ns", {"genesis.managed-by": "genesis"}, watch_timeout_s=1, request_timeout_s=1)
    stop = ScriptedStop(script)
    informer._stop = stop

    def play(call: str) -> None:
        expected, outcome = script.pop(0)
        assert call == expected, f"{call} called where the script expected {expected}"
        if isinstance(outcome, BaseException):
            raise outcome
        outcome(informer)

    informer._relist = lambda: play("relist")
    informer._watch_once = lambda: play("watch")
    return informer, stop


def listed(informer: PodInformer) -> None:
    informer.synced = informer.healthy = True
    informer.resource_version = "7"


def event(informer: PodInformer) -> None:
    informer.healthy = True


def quiet(informer: PodInformer) -> None:
    """A stream that ended at its timeout without a single event."""


def test_informer_backs_off_only_on_failures_and_afresh_after_a_healthy_watch(caplog):
    read_timeout = urllib3.exceptions.ReadTimeoutError(None, "/api/v1/pods", "read timed out")
    informer, stop = scripted_informer([
        ("relist", ApiException(status=500, reason="Internal Server Error")),  # waits 0.5
        ("relist", OSError("connection refused")),                           # waits 1
        ("relist", listed),
        ("watch", ApiException(status=410, reason="Gone")),                  # relists at once
        ("relist", ApiException(status=503, reason="Service Unavailable")),  # waits 2: 410 kept the backoff
        ("relist", listed),
        ("watch", read_timeout),                                             # resumes at once
        ("watch", event),                                                    # healthy: backoff afresh
        ("watch", ApiException(status=500, reason="Internal Server Error")),  # waits 0.5
    ])
    caplog.set_level(logging.INFO, logger="orchestrator.runtimes.kubernetes")
    informer._run()
    assert stop.waits == [0.5, 1, 2, 0.5]
    assert not informer.healthy and not stop.script
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("pod watch failed; retrying") == 4
    assert messages.count("pod watch expired (410 Gone); relisting") == 1


def test_informer_backoff_doubles_to_a_30_s_cap():
    informer, stop = scripted_informer([("relist", OSError("connection refused"))] * 9)
    informer._run()
    assert stop.waits == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


@pytest.mark.parametrize("outcome", [quiet, event])
def test_informer_waits_after_a_watch_only_while_unhealthy(outcome):
    informer, stop = scripted_informer([
        ("relist", listed), ("watch", ApiException(status=500, reason="x")), ("watch", outcome)])
    informer._run()
    # A stream that ended without an event has not shown the API server is back: it waits, with backoff.
    assert stop.waits == ([0.5, 1] if outcome is quiet else [0.5])

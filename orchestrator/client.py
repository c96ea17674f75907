"""A small client for agents: send an experiment request over NATS and await
its one outcome.

    async with await GenesisClient.connect("nats://127.0.0.1:4222") as genesis:
        outcome = await genesis.run(request, timeout=3600)

Requests are published through JetStream without ``Nats-Msg-Id``: Genesis
answers a re-sent request as a duplicate of the recorded one by its
experiment id, while the stream's de-duplication is stream-wide, so an id
another agent could send would make the server drop this agent's request
unseen. Outcomes are kept in the outcomes stream, so :meth:`outcome` also finds one that was
published while the agent was not listening (for example across a restart).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from orchestrator.domain.subjects import REPLY_HEADER

OUTCOME_STREAM = "GENESIS_OUTCOMES"


class GenesisClient:
    def __init__(self, nc: Client, *, outcome_stream: str = OUTCOME_STREAM) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._stream = outcome_stream

    @classmethod
    async def connect(cls, servers: str | list[str] = "nats://127.0.0.1:4222", **options) -> "GenesisClient":
        """``options`` are ``nats.connect``'s (user, password, token, tls, ...)."""
        return cls(await nats.connect(servers, **options))

    async def close(self) -> None:
        await self._nc.drain()

    async def __aenter__(self) -> "GenesisClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def submit(self, request: dict, *, traceparent: str | None = None, reply_to: str | None = None) -> str:
        """Publish ``request`` (an ``experiment_id`` is added if missing); returns the id."""
        request = dict(request)
        request.setdefault("experiment_id", str(uuid.uuid4()))
        headers = {}
        if traceparent:
            headers["traceparent"] = traceparent
        if reply_to:
            headers[REPLY_HEADER] = reply_to
        subject = f"genesis.experiment.request.{request['instance_id']}"
        await self._js.publish(subject, json.dumps(request).encode(), headers=headers, timeout=10)
        return request["experiment_id"]

    async def outcome(self, experiment_id: str, *, timeout: float = 3600.0) -> dict:
        """The experiment's outcome: from the stream if already published, else the next one."""
        sub = await self._nc.subscribe(f"genesis.experiment.*.{experiment_id}")
        try:
            for kind in ("completed", "failed"):
                try:
                    stored = await self._js.get_last_msg(self._stream, f"genesis.experiment.{kind}.{experiment_id}")
                    return json.loads(stored.data)
                except NotFoundError:
                    continue
            while True:
                message = await sub.next_msg(timeout=timeout)
                if not message.subject.startswith("genesis.experiment.request."):
                    return json.loads(message.data)
        finally:
            await sub.unsubscribe()

    async def run(self, request: dict, *, timeout: float = 3600.0, traceparent: str | None = None) -> dict:
        """Submit and await the outcome."""
        request = dict(request)
        request.setdefault("experiment_id", str(uuid.uuid4()))
        waiting = asyncio.create_task(self.outcome(request["experiment_id"], timeout=timeout))
        await asyncio.sleep(0)  # subscribed before the request can be answered
        await self.submit(request, traceparent=traceparent)
        return await waiting

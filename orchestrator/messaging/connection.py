"""Connecting to NATS and declaring Genesis's JetStream streams.

Connection options come from :class:`orchestrator.settings.NatsSettings`:
user/password, token, an NKey seed or a ``.creds`` file, and TLS (CA,
client certificate). Secrets are read at the edge and never logged; URLs
are logged without their user-info. The client reconnects forever with a
fixed wait; the first connection is retried with backoff by the caller.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError

from orchestrator.domain.subjects import DLQ, OUTCOME_SUBJECTS, REQUEST_SUBJECTS
from orchestrator.errors import GenesisError
from orchestrator.settings import NatsSettings

log = logging.getLogger(__name__)
RECONNECT_WAIT_S = 2.0


def redact(url: str) -> str:
    """``nats://user:secret@host:4222`` → ``nats://***@host:4222``."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.split("@", 1)[1]))


def _tls(settings: NatsSettings) -> ssl.SSLContext | None:
    if not (settings.tls_ca or settings.tls_cert):
        return None
    context = ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    if settings.tls_cert:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key) if settings.tls_key else None)
    return context


def connect_options(settings: NatsSettings, *, name: str) -> dict:
    """Keyword arguments for ``nats.connect``; holds secrets, so never log it."""
    options: dict = {
        "servers": settings.servers(), "name": name, "allow_reconnect": True,
        "max_reconnect_attempts": -1, "reconnect_time_wait": RECONNECT_WAIT_S, "connect_timeout": 5,
    }
    if settings.user:
        options["user"] = settings.user
    if settings.password:
        options["password"] = settings.password.get_secret_value()
    if settings.token:
        options["token"] = settings.token.get_secret_value()
    if settings.nkeys_seed:
        options["nkeys_seed"] = str(settings.nkeys_seed)
    if settings.creds_file:
        options["user_credentials"] = str(settings.creds_file)
    if (tls := _tls(settings)) is not None:
        options["tls"] = tls
    return options


async def connect(settings: NatsSettings, *, name: str = "genesis", timeout_s: float = 15.0) -> nats.NATS:
    """Connect, or raise ``GenesisError(nats_unreachable)`` within ``timeout_s``.

    The client itself retries an initial connection that fails (wrong
    credentials included) without end, so the attempt is bounded here and
    the caller's backoff loop decides when to try again.
    """
    servers = ", ".join(redact(s) for s in settings.servers())
    last_error: list[str] = []

    async def on_error(exc: Exception) -> None:
        last_error[:] = [f"{type(exc).__name__}: {str(exc)[:200]}"]
        log.warning("nats error", extra={"servers": servers, "error": last_error[0]})

    async def on_disconnect() -> None:
        log.warning("nats disconnected", extra={"servers": servers})

    async def on_reconnect() -> None:
        log.info("nats reconnected", extra={"servers": servers})

    attempt = asyncio.ensure_future(nats.connect(**connect_options(settings, name=name), error_cb=on_error,
                                                 disconnected_cb=on_disconnect, reconnected_cb=on_reconnect))
    try:
        return await asyncio.wait_for(asyncio.shield(attempt), timeout=timeout_s)
    except asyncio.TimeoutError:
        attempt.cancel()
        raise GenesisError(f"nats {servers} unreachable: {last_error[0] if last_error else 'timed out'}",
                           code="nats_unreachable") from None


async def _declare(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it to ``config`` when it exists."""
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, settings: NatsSettings) -> None:
    """Requests (work queue), outcomes (de-duplicated), dead letters; and the durable consumer."""
    await _declare(js, StreamConfig(
        name=settings.request_stream, subjects=list(REQUEST_SUBJECTS), retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE, max_msg_size=settings_max_msg(settings), duplicate_window=120.0,
        description="Genesis experiment requests (work queue; acked once recorded)"))
    await _declare(js, StreamConfig(
        name=settings.outcome_stream, subjects=list(OUTCOME_SUBJECTS), retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, max_age=30 * 86400.0, duplicate_window=settings.duplicate_window_s,
        description="Genesis experiment outcomes (one per experiment, by Nats-Msg-Id)"))
    await _declare(js, StreamConfig(
        name=settings.dlq_stream, subjects=[DLQ], retention=RetentionPolicy.LIMITS, storage=StorageType.FILE,
        max_age=30 * 86400.0, description="Requests Genesis could not process after max_deliver attempts"))
    consumer = ConsumerConfig(
        durable_name=settings.consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=settings.ack_wait_s,
        max_deliver=settings.max_deliver, max_ack_pending=10_000, filter_subjects=list(REQUEST_SUBJECTS))
    try:
        await js.consumer_info(settings.request_stream, settings.consumer)
        await js.add_consumer(settings.request_stream, consumer)  # same durable: updates its settings
    except NotFoundError:
        await js.add_consumer(settings.request_stream, consumer)


def settings_max_msg(settings: NatsSettings) -> int:
    """Requests larger than this never reach Genesis: refused by the server at publish."""
    return 8 * 2**20  # twice the default body limit, so oversized bodies still get a recorded rejection

"""NATS subjects of the Genesis protocol (SPEC §2–3), as pure functions.

Requests: ``genesis.experiment.request.<instance_id>`` and the legacy
``agent.events.experiment.request.<instance_id>``. Outcomes:
``genesis.experiment.{completed,failed}.<experiment_id>``, the optional
legacy mirrors ``agent.events.experiment.{completed,failed}.<id>``,
``centralcloud.experiment.result``, the request's ``Genesis-Reply-To``
subject, and, for requests without a usable experiment id (or a conflicting
re-use of one), ``genesis.instance.<instance_id>.rejected``. Reports:
``system.health.genesis`` and the daily ``system.metrics.genesis``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REQUEST_SUBJECTS = ("genesis.experiment.request.>", "agent.events.experiment.request.>")
CENTRALCLOUD = "centralcloud.experiment.result"
HEALTH = "system.health.genesis"  # core NATS, on an interval
DAILY_METRICS = "system.metrics.genesis"  # through the outbox: one message per day, de-duplicated
# Every subject the relay publishes through JetStream (the outcomes stream captures them).
OUTCOME_SUBJECTS = ("genesis.experiment.completed.>", "genesis.experiment.failed.>",
                    "agent.events.experiment.completed.>", "agent.events.experiment.failed.>",
                    CENTRALCLOUD, "genesis.instance.*.rejected", DAILY_METRICS)
DLQ = "genesis.dlq.requests"
REPLY_HEADER = "Genesis-Reply-To"
_TOKEN = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


@dataclass(frozen=True)
class Route:
    subject: str
    family: str  # part of the Nats-Msg-Id: one message per (experiment, attempt, family)
    durable: bool  # published through JetStream (deduplicated) rather than core NATS


def safe_token(value: str | None) -> str | None:
    """A value usable as one subject token (no dots, wildcards or spaces)."""
    if value and _TOKEN.match(value) and "." not in value:
        return value
    return None


def instance_from_subject(subject: str) -> str | None:
    for prefix in ("genesis.experiment.request.", "agent.events.experiment.request."):
        if subject.startswith(prefix):
            return safe_token(subject[len(prefix):])
    return None


def valid_reply_subject(subject: str | None) -> str | None:
    """A reply subject a client may ask for: plain tokens, no wildcards, not one of ours."""
    if not subject or len(subject) > 256 or not _SUBJECT.match(subject):
        return None
    if subject.startswith(("genesis.", "agent.events.", "centralcloud.", "system.", "$")):
        return None
    return subject


def outcome_routes(*, experiment_id: str, instance_id: str, status: str, legacy: bool,
                   reply_to: str | None, usable_id: bool = True) -> list[Route]:
    kind = "completed" if status == "success" else "failed"
    routes = [Route(f"genesis.experiment.{kind}.{experiment_id}", "genesis", True),
              Route(CENTRALCLOUD, "centralcloud", True)]
    if legacy:
        routes.append(Route(f"agent.events.experiment.{kind}.{experiment_id}", "agent", True))
    if not usable_id and (token := safe_token(instance_id)):
        routes.append(Route(f"genesis.instance.{token}.rejected", "instance", True))
    if reply_to := valid_reply_subject(reply_to):
        routes.append(Route(reply_to, "reply", False))
    return routes


def conflict_routes(*, instance_id: str, reply_to: str | None) -> list[Route]:
    """Where a conflicting re-use of an id is answered: never the original's subjects."""
    routes = []
    if token := safe_token(instance_id):
        routes.append(Route(f"genesis.instance.{token}.rejected", "conflict", True))
    if reply_to := valid_reply_subject(reply_to):
        routes.append(Route(reply_to, "conflict-reply", False))
    return routes


def traceparent(trace_id: str | None, span_seed: str) -> str | None:
    """A W3C traceparent for a message Genesis sends in the trace of a request."""
    if not trace_id or not re.fullmatch(r"[0-9a-f]{32}", trace_id):
        return None
    import hashlib
    span = hashlib.sha256(span_seed.encode()).hexdigest()[:16]
    return f"00-{trace_id}-{span}-01"

"""The outbox: messages decided in the same transaction as the state they
report, published later by the relay (:mod:`orchestrator.messaging.relay`).

Each row is one message on one subject with a stable ``msg_id``
(``<experiment>:<attempt>:<family>``); the relay publishes durable rows
through JetStream with ``Nats-Msg-Id = msg_id``, so a crash between publish
and marking the row published cannot deliver the message twice.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from orchestrator.domain.subjects import Route, traceparent
from orchestrator.store.base import StoreBase, _aware, transient, utcnow
from orchestrator.store.tables import OutboxRow


def enqueue(session: Session, *, experiment_id: str, key: str, routes: list[Route], payload: dict,
            trace_id: str | None) -> None:
    """One outbox row per route, in one insert; ``key`` makes the msg_ids (e.g. "<id>:<attempt>")."""
    rows = outbox_rows(experiment_id=experiment_id, key=key, routes=routes, payload=payload, trace_id=trace_id)
    if rows:
        session.execute(insert(OutboxRow.__table__), rows)


def outbox_rows(*, experiment_id: str, key: str, routes: list[Route], payload: dict,
                trace_id: str | None) -> list[dict]:
    """The columns of :func:`enqueue`'s rows."""
    rows = []
    for route in routes:
        msg_id = f"{key}:{route.family}"
        headers = {"traceparent": tp} if (tp := traceparent(trace_id, msg_id)) else {}
        rows.append(dict(experiment_id=experiment_id, msg_id=msg_id, subject=route.subject, payload=payload,
                         headers=headers, durable=route.durable, created_at=utcnow(), attempts=0))
    return rows


def _row_dict(r: OutboxRow) -> dict:
    return {"id": r.id, "experiment_id": r.experiment_id, "msg_id": r.msg_id, "subject": r.subject,
            "payload": r.payload, "headers": r.headers, "durable": r.durable, "attempts": r.attempts,
            "published_at": _aware(r.published_at)}


class OutboxMixin(StoreBase):
    def outbox(self, *, unpublished_only: bool = False, limit: int | None = None) -> list[dict]:
        with self._tx() as session:
            query = select(OutboxRow).order_by(OutboxRow.id)
            if unpublished_only:
                query = query.where(OutboxRow.published_at.is_(None))
            if limit is not None:
                query = query.limit(limit)
            return [_row_dict(r) for r in session.scalars(query)]

    @transient
    def mark_published(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._tx() as session:
            session.execute(update(OutboxRow).where(OutboxRow.id.in_(ids)).values(published_at=utcnow()))

    @transient
    def mark_attempted(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._tx() as session:
            session.execute(update(OutboxRow).where(OutboxRow.id.in_(ids))
                            .values(attempts=OutboxRow.attempts + 1))

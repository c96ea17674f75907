"""The repository: every read and write of Genesis's state goes through here.

Methods take and return domain models (:mod:`orchestrator.domain.records`),
never rows. Each public method is one transaction; the ones that finish an
experiment write the record, its metrics row, an audit entry and its outbox
messages together, so no reader ever sees one without the others.
Database errors are retried (tenacity, exponential backoff) when they look
transient and surface as :class:`StoreError` otherwise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from types import SimpleNamespace
from datetime import datetime
from typing import Sequence

from sqlalchemy import Engine, Row, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from orchestrator.domain.models import Condition, ExperimentRequest, Metrics, Outcome, Phase, Recommendation
from orchestrator.domain.planner import Desired
from orchestrator.domain.records import AuditLine, BaselineRecord, ExperimentView, HistoryEntry
from orchestrator.domain.subjects import conflict_routes, outcome_routes
from orchestrator.errors import GenesisError, NotFound, RequestRejected
from orchestrator.store import queries
from orchestrator.store.base import _aware, _columns, _utc, history_row, transient, utcnow
from orchestrator.store.caches import CachesMixin
from orchestrator.store.claims import ClaimsMixin
from orchestrator.store.jobs import JobsMixin
from orchestrator.store.outbox import OutboxMixin, enqueue, outbox_rows
from orchestrator.store.tables import ExperimentRow, MetricsRow, OutboxRow, SandboxHistoryRow

EXPERIMENTS = ExperimentRow.__table__




def body_digest(request: ExperimentRequest) -> str:
    """Digest of a request's meaning, for idempotency: same id + same digest = duplicate."""
    canonical = json.dumps(request.model_dump(mode="json", exclude_none=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _view(row) -> ExperimentView:
    """A record's view, from its ORM row or its columns by name."""
    return ExperimentView(
        id=row.id, instance_id=row.instance_id, experiment_type=row.experiment_type,
        risk_level=row.risk_level, repo=row.repo, commit=row.commit, phase=Phase(row.phase),
        reason=row.reason, message=row.message,
        spec=ExperimentRequest.model_validate(row.spec) if row.spec else None,
        raw_excerpt=row.raw_excerpt,
        conditions=[Condition.model_validate(c) for c in row.conditions or []],
        recommendation=Recommendation(row.recommendation) if row.recommendation else None,
        priority=row.priority, attempt=row.attempt, cancel_requested=row.cancel_requested,
        trace_id=row.trace_id, sandbox_name=row.sandbox_name, sandbox_uid=row.sandbox_uid, image=row.image, baseline_image=row.baseline_image,
        baseline_key=row.baseline_key,
        preserved_until=_aware(row.preserved_until),
        outcome=Outcome.model_validate(row.outcome) if row.outcome else None,
        created_at=_aware(row.created_at), updated_at=_aware(row.updated_at),
        started_at=_aware(row.started_at), finished_at=_aware(row.finished_at),
        deadline_at=_aware(row.deadline_at), not_before=_aware(row.not_before), kill_reason=row.kill_reason,
        gpus=tuple(row.gpus or ()),
    )


def _with_condition(conditions: list | None, *, type_: str, status: str, reason: str, message: str,
                    now: datetime) -> list:
    """``conditions`` with the one of ``type_`` set (its time kept while its status holds)."""
    others = [c for c in (conditions or []) if c["type"] != type_]
    previous = next((c for c in conditions or [] if c["type"] == type_), None)
    when = previous["last_transition_time"] if previous and previous["status"] == status else now.isoformat()
    return others + [_condition(type_=type_, status=status, reason=reason, message=message, when=when)]


_BY_ID = select(EXPERIMENTS).where(EXPERIMENTS.c.id == bindparam("id"))


def _read(session: Session, experiment_id: str, *, lock: bool = False) -> Row:
    """One record's columns as a Core row (an ORM load would cost more than the query);
    ``lock``: row-locked for the transaction (PostgreSQL)."""
    row = session.execute(_BY_ID.with_for_update() if lock else _BY_ID, {"id": experiment_id}).first()
    if row is None:
        raise NotFound(f'experiments "{experiment_id}" not found')
    return row


def _write(session: Session, row: Row, changes: dict, *, history: Sequence[dict] = ()) -> None:
    """Update ``row``'s record with ``changes`` and add its ``history`` lines (its view:
    :func:`_merged`, built first). The writes come last in their transaction, after every computation: on
    SQLite the first write takes the database's one write lock until the commit, and a
    process stopped while holding it (SIGSTOP, a stall) would hold up every other writer."""
    session.execute(update(EXPERIMENTS).where(EXPERIMENTS.c.id == row.id).values(changes))
    if history:
        session.execute(insert(SandboxHistoryRow.__table__), list(history))


def _merged(row: Row, changes: dict) -> SimpleNamespace:
    """The record as ``changes`` will leave it."""
    return SimpleNamespace(**{**row._mapping, **changes})


def _condition(*, type_: str, status: str, reason: str, message: str, when: str) -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message[:2000],
            "last_transition_time": when}


_DESIRED_COLUMNS = ("id", "instance_id", "phase", "priority", "created_at", "attempt", "cancel_requested",
                    "sandbox_name", "phase_since", "deadline_at", "not_before", "preserved_until", "kill_reason",
                    "cpu", "memory_bytes", "gpus_requested", "gpus", "baseline_key")


def _audit_rows(experiment_id: str | None, lines: Sequence[AuditLine], *, actor: str) -> list[dict]:
    """A sandbox's audit lines as history rows, each with the time it happened."""
    return [history_row(experiment_id=experiment_id, sandbox_name=line.sandbox_name, action=line.action, actor=actor,
                        reason=line.reason, duration_ms=line.duration_ms, details=line.details, at=line.at)
            for line in lines]


def _metrics_row(outcome: Outcome, *, attempt: int, now: datetime) -> dict:
    """The columns of a finished experiment's metrics row."""
    m: Metrics = outcome.metrics  # type: ignore[assignment]
    b = outcome.baseline
    return dict(
        experiment_id=outcome.experiment_id, attempt=attempt, recorded_at=now,
        recommendation=outcome.recommendation.value,
        baseline_success_rate=b.success_rate if b else None, baseline_test_count=b.test_count if b else None,
        baseline_runtime_ms=b.runtime_ms if b else None,
        **m.model_dump(),
    )


_DESIRED_SELECT = select(*[EXPERIMENTS.c[c] for c in _DESIRED_COLUMNS])
# Built once: a pass runs it every second, and building it cost more than running it.
_DESIRED = _DESIRED_SELECT.where(EXPERIMENTS.c.phase.not_in([Phase.SUCCEEDED.value, Phase.FAILED.value])
                                 | EXPERIMENTS.c.preserved_until.is_not(None))


def _desired(row) -> Desired:
    # Unpacked by position: a controller pass reads tens of thousands of these, and a
    # row's attributes by name cost several times more.
    (id_, instance_id, phase, priority, created_at, attempt, cancel_requested, sandbox_name, phase_since,
     deadline_at, not_before, preserved_until, kill_reason, cpu, memory_bytes, gpus_requested, gpus,
     baseline_key) = row
    return Desired(
        id=id_, instance_id=instance_id, phase=Phase(phase), priority=priority,
        created_at=_aware(created_at), attempt=attempt, cancel_requested=cancel_requested,
        sandbox_name=sandbox_name, phase_since=_aware(phase_since), deadline_at=_aware(deadline_at),
        not_before=_aware(not_before), preserved_until=_aware(preserved_until),
        kill_reason=kill_reason, cpu=cpu or 0.0, memory_bytes=memory_bytes or 0,
        gpus_requested=gpus_requested or 0, gpus_assigned=tuple(gpus or ()),
        waiting_for=baseline_key if phase == Phase.BUILDING.value else None,
    )


@dataclass(frozen=True)
class Submission:
    """A valid request the intake resolved, to be recorded as Pending."""

    request: ExperimentRequest
    commit: str
    trace_id: str | None = None
    actor: str = "intake"
    reply_to: str | None = None


def _pending_row(submission: Submission, digest: str, now: datetime) -> dict:
    """The columns of a new Pending record."""
    request = submission.request
    return dict(
        id=request.experiment_id, instance_id=request.instance_id, experiment_type=request.experiment_type,
        risk_level=request.risk_level, repo=request.repo, base_ref=request.base_ref, commit=submission.commit,
        spec=request.model_dump(mode="json"), body_sha256=digest, phase=Phase.PENDING.value,
        conditions=[_condition(type_="Accepted", status="True", reason="Queued",
                               message=f"queued at priority {request.priority}", when=now.isoformat())],
        priority=request.priority, attempt=0, cancel_requested=False, trace_id=submission.trace_id,
        created_at=now, updated_at=now, phase_since=now, cpu=request.resources.cpu,
        memory_bytes=request.resources.memory_bytes, gpus_requested=request.resources.gpu,
        reply_to=submission.reply_to)


class Store(CachesMixin, ClaimsMixin, OutboxMixin, JobsMixin):
    """Experiments, their lifecycle and the controller's view of them."""

    def __init__(self, engine: Engine, *, legacy_mirrors: bool = False) -> None:
        super().__init__(engine)
        self.legacy_mirrors = legacy_mirrors

    # -- intake ---------------------------------------------------------------

    def submit(self, request: ExperimentRequest, *, commit: str, trace_id: str | None = None,
               actor: str = "intake", reply_to: str | None = None) -> tuple[ExperimentView, bool]:
        """Record a valid request as Pending; ``(view, False)`` for a duplicate.
        The same id with a different body raises ``RequestRejected(conflict)``.
        A batch of one: see :meth:`submit_many`."""
        (outcome,) = self.submit_many([Submission(request, commit=commit, trace_id=trace_id, actor=actor,
                                                  reply_to=reply_to)])
        if isinstance(outcome, RequestRejected):
            raise outcome
        return self.get(request.experiment_id), outcome

    def submit_many(self, submissions: list[Submission]) -> list[bool | RequestRejected]:
        """Record valid requests as Pending in one transaction (the intake's batch of a
        fetch): per submission True (created), False (a duplicate, also of one earlier in
        the batch) or ``RequestRejected(conflict)``, which the caller records as
        :meth:`submit`'s would be. An insert race lost to another replica runs the batch
        again: the rows that won are duplicates or conflicts then (two intake workers, or
        `genesis apply` and a worker, given the same request at once)."""
        try:
            return self._submit_many(submissions)
        except IntegrityError:
            return self._submit_many(submissions)

    @transient
    def _submit_many(self, submissions: list[Submission]) -> list[bool | RequestRejected]:
        now = utcnow()
        digests = [body_digest(s.request) for s in submissions]
        ids = list({s.request.experiment_id for s in submissions})
        with self._tx() as session:
            known = dict(session.execute(select(ExperimentRow.id, ExperimentRow.body_sha256)
                                         .where(ExperimentRow.id.in_(ids))).all()) if ids else {}
            results: list[bool | RequestRejected] = []
            rows, history = [], []
            for submission, digest in zip(submissions, digests):
                request = submission.request
                if request.experiment_id in known:
                    results.append(False if known[request.experiment_id] == digest else RequestRejected(
                        f"experiment {request.experiment_id} already exists with a different body",
                        code="conflict"))
                    continue
                known[request.experiment_id] = digest
                rows.append(_pending_row(submission, digest, now))
                history.append(history_row(experiment_id=request.experiment_id, sandbox_name="", action="submitted",
                                           actor=submission.actor,
                                           reason=f"request for {request.repo}@{submission.commit[:12]}", at=now))
                results.append(True)
            if rows:
                session.execute(insert(EXPERIMENTS), rows)
                self._history_rows(session, history)
            return results

    def record_rejected(self, **kwargs) -> ExperimentView:
        """Record a request that failed intake, as Failed, with its error and outcome.

        Keyword arguments as :meth:`_record_rejected`; a race on the id is
        answered from the row that won, as in :meth:`submit`.
        """
        try:
            return self._record_rejected(**kwargs)
        except IntegrityError:
            return self._record_rejected(**kwargs)

    @transient
    def _record_rejected(self, *, experiment_id: str, instance_id: str, code: str, message: str,
                         raw_excerpt: str, request: ExperimentRequest | None = None,
                         trace_id: str | None = None, actor: str = "intake", reply_to: str | None = None,
                         usable_id: bool = True) -> ExperimentView:
        now = utcnow()
        with self._tx() as session:
            existing = session.execute(_BY_ID, {"id": experiment_id}).first()
            if existing is not None:
                # A bad re-send of an id already on file: the record stands,
                # the rejection is audited against it.
                self._history(session, experiment_id=experiment_id, sandbox_name="", action="rejected",
                              actor=actor, reason=f"{code}: {message}"[:2000])
                return _view(existing)
            outcome = Outcome(experiment_id=experiment_id, instance_id=instance_id, status="failed",
                              recommendation=Recommendation.ROLLBACK, trace_id=trace_id, timestamp=now,
                              error={"code": code, "message": message})
            row = dict.fromkeys(EXPERIMENTS.c.keys()) | dict(
                id=experiment_id, instance_id=instance_id,
                experiment_type=request.experiment_type if request else "unknown",
                risk_level=request.risk_level if request else "unknown",
                repo=request.repo if request else "", base_ref=request.base_ref if request else "",
                spec=request.model_dump(mode="json") if request else None, raw_excerpt=raw_excerpt[:4000],
                body_sha256=hashlib.sha256(raw_excerpt.encode()).hexdigest(), phase=Phase.FAILED.value,
                reason=code, message=message[:4000], priority=0, attempt=0,
                recommendation=Recommendation.ROLLBACK.value, reply_to=reply_to,
                cancel_requested=False, trace_id=trace_id, created_at=now, updated_at=now, finished_at=now,
                phase_since=now,
                conditions=_with_condition([], type_="Accepted", status="False", reason=code, message=message,
                                           now=now),
                outcome=outcome.model_dump(mode="json"), cpu=0.0, memory_bytes=0, gpus_requested=0,
            )
            session.execute(insert(EXPERIMENTS), [row])
            self._history(session, experiment_id=experiment_id, sandbox_name="", action="rejected",
                          actor=actor, reason=f"{code}: {message}"[:2000])
            self._enqueue_outcome(session, outcome, attempt=0, reply_to=reply_to, usable_id=usable_id)
            return _view(SimpleNamespace(**row))

    @transient
    def record_conflict(self, *, experiment_id: str, instance_id: str, message: str, body_sha256: str,
                        trace_id: str | None, reply_to: str | None, actor: str = "intake") -> None:
        """Answer a re-use of an id with another body: audited on the original,
        answered on the sender's own subjects (never the original's)."""
        now = utcnow()
        with self._tx() as session:
            self._history(session, experiment_id=experiment_id, sandbox_name="", action="conflict", actor=actor,
                          reason=message[:2000])
            outcome = Outcome(experiment_id=experiment_id, instance_id=instance_id, status="failed",
                              recommendation=Recommendation.ROLLBACK, trace_id=trace_id, timestamp=now,
                              error={"code": "conflict", "message": message})
            routes = conflict_routes(instance_id=instance_id, reply_to=reply_to)
            key = f"{experiment_id}:conflict-{body_sha256[:16]}"
            if routes and session.scalar(select(func.count()).select_from(OutboxRow).where(
                    OutboxRow.msg_id == f"{key}:{routes[0].family}")) == 0:
                enqueue(session, experiment_id=experiment_id, key=key, routes=routes,
                        payload=outcome.model_dump(mode="json"), trace_id=trace_id)

    # -- reads ----------------------------------------------------------------

    def exists(self, experiment_id: str) -> bool:
        with self._tx() as session:
            return session.scalar(select(EXPERIMENTS.c.id).where(EXPERIMENTS.c.id == experiment_id)) is not None

    def get(self, experiment_id: str) -> ExperimentView:
        with self._tx() as session:
            return _view(_read(session, experiment_id))

    def list(self, *, phase: Phase | None = None, instance_id: str | None = None,
             limit: int | None = None) -> list[ExperimentView]:
        """Experiments newest first: every match unless ``limit`` (nothing is cut short silently)."""
        where = queries.equal(phase=phase.value if phase else None, instance_id=instance_id)
        return list(self.page(where, limit=limit).items)

    @transient
    def page(self, where: tuple[queries.Requirement, ...] = (), *, limit: int | None = None,
             continue_token: str | None = None) -> queries.Page:
        """One page of the experiments matching every requirement, newest first, filtered and
        limited in SQL; see :func:`orchestrator.store.queries.page`."""
        with self._tx() as session:
            return queries.page(session, where, limit=limit, continue_token=continue_token, view=_view)

    @transient
    def next_pending(self) -> ExperimentView | None:
        """Highest priority first, then oldest."""
        with self._tx() as session:
            row = session.scalars(
                select(ExperimentRow).where(ExperimentRow.phase == Phase.PENDING.value)
                .order_by(ExperimentRow.priority.desc(), ExperimentRow.created_at.asc()).limit(1)
            ).first()
            return _view(row) if row else None

    def history(self, experiment_id: str | None) -> list[HistoryEntry]:
        """The audit trail of one experiment, or with ``None`` of no experiment (image removals)."""
        with self._tx() as session:
            rows = session.scalars(select(SandboxHistoryRow).where(SandboxHistoryRow.experiment_id == experiment_id)
                                   .order_by(SandboxHistoryRow.id))
            return [HistoryEntry(experiment_id=r.experiment_id, sandbox_name=r.sandbox_name, action=r.action,
                                 actor=r.actor, reason=r.reason, duration_ms=r.duration_ms,
                                 details=r.details or {}, at=_aware(r.at)) for r in rows]

    def metrics(self, experiment_id: str) -> list[dict]:
        with self._tx() as session:
            rows = session.scalars(select(MetricsRow).where(MetricsRow.experiment_id == experiment_id)
                                   .order_by(MetricsRow.id))
            return [_columns(r, MetricsRow.__table__) for r in rows]

    # -- lifecycle --------------------------------------------------------------

    @transient
    def transition(self, experiment_id: str, phase: Phase, *, reason: str, message: str = "",
                   actor: str = "worker", audits: Sequence[AuditLine] = (), only_from: Phase | None = None,
                   **fields) -> ExperimentView:
        """Move to ``phase``, set a condition, audit it; ``fields`` updates columns.
        ``audits``: the sandbox's lines that led here (written first, in the same transaction).
        ``only_from``: move only a record in that phase; any other comes back as it is."""
        now = utcnow()
        with self._tx() as session:
            row = _read(session, experiment_id)
            if only_from is not None and row.phase != only_from.value:
                return _view(row)
            if Phase(row.phase).finished:
                raise GenesisError(f"experiment {experiment_id} is already {row.phase}", code="already_finished")
            changes: dict = {"phase": phase.value, "updated_at": now}
            if row.phase != phase.value:
                changes["phase_since"] = now
            if phase is Phase.BUILDING and row.started_at is None:
                changes["started_at"] = now
            changes.update(fields)
            changes["conditions"] = _with_condition(row.conditions, type_=phase.value, status="True", reason=reason,
                                                    message=message, now=now)
            record = _merged(row, changes)
            view = _view(record)
            _write(session, row, changes, history=[*_audit_rows(experiment_id, audits, actor=actor), history_row(
                experiment_id=experiment_id, sandbox_name=record.sandbox_name or "", action=f"phase:{phase.value}",
                actor=actor, reason=f"{reason}: {message}"[:2000])])
            return view

    @transient
    def finalize(self, outcome: Outcome, *, phase: Phase, reason: str, message: str,
                 preserved_until: datetime | None = None, actor: str = "worker",
                 audits: Sequence[AuditLine] = ()) -> ExperimentView:
        """Finish an experiment: record, metrics row, audit and outbox in one transaction;
        ``audits``: its sandbox's last lines (the kept one's ``preserved``)."""
        now = utcnow()
        with self._tx() as session:
            row = _read(session, outcome.experiment_id)
            if Phase(row.phase).finished:
                return _view(row)  # finalized exactly once
            changes = dict(
                phase=phase.value, reason=reason, message=message[:4000], phase_since=now, gpus=None,
                recommendation=outcome.recommendation.value, outcome=outcome.model_dump(mode="json"),
                preserved_until=_utc(preserved_until), updated_at=now, finished_at=now,
                conditions=_with_condition(row.conditions, type_=phase.value, status="True", reason=reason,
                                           message=message, now=now))
            view = _view(_merged(row, changes))
            metrics_rows = [_metrics_row(outcome, attempt=row.attempt, now=now)] if outcome.metrics is not None else []
            outbox = self._outcome_rows(outcome, attempt=row.attempt, reply_to=row.reply_to)
            _write(session, row, changes, history=[*_audit_rows(row.id, audits, actor=actor), history_row(
                experiment_id=row.id, sandbox_name=row.sandbox_name or "", action=f"phase:{phase.value}",
                actor=actor, reason=f"{reason}: {message}"[:2000])])
            if metrics_rows:
                session.execute(insert(MetricsRow.__table__), metrics_rows)
            if outbox:
                session.execute(insert(OutboxRow.__table__), outbox)
            return view

    @transient
    def request_cancel(self, experiment_id: str, *, actor: str = "cli") -> ExperimentView:
        """Record the intent to cancel (the controller acts on it), and who asked, in the audit trail."""
        with self._tx() as session:
            row = _read(session, experiment_id)
            changes = {"cancel_requested": True, "updated_at": utcnow()}
            view = _view(_merged(row, changes))
            _write(session, row, changes, history=[history_row(
                experiment_id=row.id, sandbox_name=row.sandbox_name or "", action="cancel_requested", actor=actor,
                reason=f"delete asked in phase {row.phase}")])
            return view

    def changed_since(self, since: datetime, *, limit: int = 1000) -> list[ExperimentView]:
        """Experiments updated at or after ``since``, oldest change first (the API's watch polls this)."""
        with self._tx() as session:
            rows = session.scalars(select(ExperimentRow).where(ExperimentRow.updated_at >= _utc(since))
                                   .order_by(ExperimentRow.updated_at, ExperimentRow.id).limit(limit))
            return [_view(r) for r in rows]

    @transient
    def set_preserved_until(self, experiment_id: str, until: datetime | None) -> None:
        with self._tx() as session:
            self._set(session, experiment_id, preserved_until=_utc(until))

    def expired_preserved(self, now: datetime) -> list[ExperimentView]:
        with self._tx() as session:
            rows = session.scalars(select(ExperimentRow).where(ExperimentRow.preserved_until.is_not(None),
                                                               ExperimentRow.preserved_until < _utc(now)))
            return [_view(r) for r in rows]

    @transient
    def audit(self, *, experiment_id: str | None, sandbox_name: str, action: str, actor: str, reason: str,
              duration_ms: float | None = None, details: dict | None = None, unpreserve: bool = False) -> None:
        """One audit line; ``unpreserve``: with the record's preserved marker cleared (its
        kept sandbox was just removed)."""
        with self._tx() as session:
            self._history(session, experiment_id=experiment_id, sandbox_name=sandbox_name, action=action,
                          actor=actor, reason=reason, duration_ms=duration_ms, details=details)
            if unpreserve and experiment_id is not None:
                self._set(session, experiment_id, preserved_until=None)

    @transient
    def audit_lines(self, experiment_id: str | None, lines: Sequence[AuditLine], *, actor: str) -> None:
        """Several of a sandbox's lines in one transaction (a launch's: created, delivered, started)."""
        with self._tx() as session:
            self._audit_lines(session, experiment_id, lines, actor=actor)

    def _audit_lines(self, session: Session, experiment_id: str | None, lines: Sequence[AuditLine], *,
                     actor: str) -> None:
        self._history_rows(session, _audit_rows(experiment_id, lines, actor=actor))

    # -- controller -------------------------------------------------------------

    @transient
    def desired(self) -> list[Desired]:
        """Records the controller must look at: unfinished, or finished with a preserved sandbox."""
        with self._tx() as session:
            return self._desired_rows(session)

    @transient
    def desired_state(self) -> tuple[list[Desired], list[BaselineRecord]]:
        """What a controller pass reads, from one snapshot: :meth:`desired`, and the
        baselines being run or waited for by those records (:meth:`baselines`)."""
        with self._tx() as session:
            desired = self._desired_rows(session)
            return desired, self._baselines(session, frozenset(d.waiting_for for d in desired if d.waiting_for))

    @staticmethod
    def _desired_rows(session: Session) -> list[Desired]:
        return [_desired(r) for r in session.execute(_DESIRED)]

    @transient
    def desired_of(self, experiment_id: str) -> Desired | None:
        with self._tx() as session:
            row = session.execute(_DESIRED_SELECT.where(EXPERIMENTS.c.id == experiment_id)).first()
            return _desired(row) if row is not None else None

    @transient
    def admit(self, experiment_id: str, *, gpus: tuple[str, ...], actor: str) -> ExperimentView | None:
        """Pending → Building with the next attempt number; ``None`` if no longer admissible."""
        now = utcnow()
        with self._tx() as session:
            row = _read(session, experiment_id, lock=True)
            if row.phase != Phase.PENDING.value or row.cancel_requested:
                return None
            message = f"attempt {row.attempt + 1}" + (f", GPUs {', '.join(gpus)}" if gpus else "")
            changes = dict(
                phase=Phase.BUILDING.value, phase_since=now, updated_at=now, attempt=row.attempt + 1, gpus=list(gpus),
                not_before=None, kill_reason=None, started_at=row.started_at or now,
                conditions=_with_condition(row.conditions, type_=Phase.BUILDING.value, status="True",
                                           reason="Admitted", message=message, now=now))
            view = _view(_merged(row, changes))
            _write(session, row, changes, history=[history_row(
                experiment_id=row.id, sandbox_name="", action="phase:Building", actor=actor,
                reason=f"Admitted: {message}")])
            return view

    @transient
    def requeue(self, experiment_id: str, *, reason: str, not_before: datetime, actor: str) -> None:
        """An infrastructure failure: back to Pending, retried after ``not_before``."""
        with self._tx() as session:
            row = _read(session, experiment_id, lock=True)
            if Phase(row.phase).finished:
                return
            now = utcnow()
            message = f"{reason}; retry after {_utc(not_before).isoformat(timespec='seconds')}"
            _write(session, row, dict(
                phase=Phase.PENDING.value, phase_since=now, updated_at=now, not_before=_utc(not_before),
                kill_reason=None, gpus=None, deadline_at=None,
                conditions=_with_condition(row.conditions, type_="Retrying", status="True",
                                           reason="InfrastructureFailure", message=message, now=now)))
            self._history(session, experiment_id=row.id, sandbox_name=row.sandbox_name or "",
                          action="phase:Pending", actor=actor, reason=f"Requeued: {message}")

    @transient
    def set_kill_reason(self, experiment_id: str, reason: str) -> None:
        with self._tx() as session:
            self._set(session, experiment_id, kill_reason=reason)

    def phase_counts(self) -> dict[str, int]:
        with self._tx() as session:
            rows = session.execute(select(ExperimentRow.phase, func.count()).group_by(ExperimentRow.phase))
            return {phase: count for phase, count in rows}

    def count(self) -> int:
        with self._tx() as session:
            return session.scalar(select(func.count()).select_from(ExperimentRow)) or 0

    # -- helpers ----------------------------------------------------------------

    @staticmethod
    def _set(session: Session, experiment_id: str, **columns) -> None:
        """Set columns of one record that is there (``NotFound`` otherwise)."""
        done = session.execute(update(EXPERIMENTS).where(EXPERIMENTS.c.id == experiment_id).values(columns))
        if done.rowcount != 1:
            raise NotFound(f'experiments "{experiment_id}" not found')

    def _enqueue_outcome(self, session: Session, outcome: Outcome, *, attempt: int, reply_to: str | None,
                         usable_id: bool = True) -> None:
        rows = self._outcome_rows(outcome, attempt=attempt, reply_to=reply_to, usable_id=usable_id)
        if rows:
            session.execute(insert(OutboxRow.__table__), rows)

    def _outcome_rows(self, outcome: Outcome, *, attempt: int, reply_to: str | None,
                      usable_id: bool = True) -> list[dict]:
        """The outbox rows that publish ``outcome``: one per route."""
        routes = outcome_routes(experiment_id=outcome.experiment_id, instance_id=outcome.instance_id,
                                status=outcome.status, legacy=self.legacy_mirrors, reply_to=reply_to,
                                usable_id=usable_id)
        return outbox_rows(experiment_id=outcome.experiment_id, key=f"{outcome.experiment_id}:{attempt}",
                           routes=routes, payload=outcome.model_dump(mode="json"), trace_id=outcome.trace_id)

"""orchestrator.store.repository.Store on SQLite and PostgreSQL (SPEC §2, §3, §5, §7)."""

from __future__ import annotations

import re

import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, text

from orchestrator.domain.models import (
    Baseline, ExperimentRequest, Metrics, Outcome, Phase, Recommendation, SandboxInfo,
)
from orchestrator.domain.records import AuditLine, CachedBaseline
from orchestrator.errors import GenesisError, NotFound, RequestRejected
from orchestrator.store.tables import ExperimentRow, MetricsRow, OutboxRow

UTC = timezone.utc
COMMIT = "3f2a9c1" + "0" * 33


def _now() -> datetime:
    return datetime.now(UTC)


def _metrics() -> Metrics:
    return Metrics(success_rate=0.95, regression=0.02, llm_reduction=0.38, performance_delta=-0.10,
                   runtime_ms=183_000, test_count=250, failures=12, errors=1, skipped=3, memory_peak_mb=812.5,
                   cpu_usage_percent=143.0, io_operations=5_120_000_000, code_coverage_percent=81.2,
                   complexity_change=-3, custom={"fitness": 0.73, "latency_p99_ms": 12.5})


def _outcome(experiment_id: str, *, status: str = "success",
             recommendation: Recommendation = Recommendation.MERGE, metrics: Metrics | None = None,
             error: dict | None = None, trace_id: str | None = "4bf92f3577b34da6a3ce929d0e0e4736",
             ) -> Outcome:
    return Outcome(
        experiment_id=experiment_id, instance_id="singularity-test-1", status=status,
        recommendation=recommendation, metrics=metrics,
        baseline=Baseline(success_rate=0.97, test_count=250, runtime_ms=199_000) if metrics else None,
        sandbox=SandboxInfo(runtime="docker", image="genesis/snapshot:monorepo-3f2a9c1", name="genesis-x",
                            preserved=recommendation.preserves_sandbox),
        error=error, trace_id=trace_id, timestamp=_now(),
    )


def _rows(store, model, **where) -> int:
    with store.engine.connect() as conn:
        query = select(func.count()).select_from(model)
        for key, value in where.items():
            query = query.where(getattr(model, key) == value)
        return conn.execute(query).scalar_one()


# -- submit -----------------------------------------------------------------------


def test_submit_records_a_pending_experiment_with_an_accepted_condition(store, make_request):
    request = make_request(priority=7)
    before = _now()
    view, created = store.submit(request, commit=COMMIT, trace_id="trace-1", actor="intake-test")

    assert created is True
    assert view.id == request.experiment_id
    assert view.phase is Phase.PENDING
    assert view.commit == COMMIT and view.repo == "monorepo" and view.instance_id == "singularity-test-1"
    assert view.priority == 7 and view.attempt == 0 and view.cancel_requested is False
    assert view.trace_id == "trace-1"
    assert view.spec == request  # the request round-trips through the JSON column
    assert view.spec.changes.files[0].content == "def classify(x):\n    return 'héllo' if x else None\n"
    assert view.reason is None and view.recommendation is None and view.outcome is None
    assert view.finished_at is None and view.started_at is None
    [accepted] = view.conditions
    assert (accepted.type, accepted.status, accepted.reason) == ("Accepted", "True", "Queued")
    assert "priority 7" in accepted.message
    assert before - timedelta(seconds=5) <= view.created_at <= _now() + timedelta(seconds=5)

    stored = store.get(request.experiment_id)
    assert stored == view
    assert store.count() == 1
    [entry] = store.history(request.experiment_id)
    assert (entry.action, entry.actor) == ("submitted", "intake-test")
    assert COMMIT[:12] in entry.reason


def test_submit_of_the_identical_request_is_a_duplicate(store, make_request):
    request = make_request()
    first, created = store.submit(request, commit=COMMIT)
    assert created

    again, created_again = store.submit(request, commit=COMMIT)
    assert created_again is False
    assert again == first
    # The same body re-parsed from its JSON (as a re-delivered message would be) is also a duplicate.
    reparsed = ExperimentRequest.model_validate_json(request.model_dump_json())
    third, created_third = store.submit(reparsed, commit=COMMIT)
    assert created_third is False and third.id == first.id

    assert store.count() == 1
    assert _rows(store, ExperimentRow, id=request.experiment_id) == 1
    assert [h.action for h in store.history(request.experiment_id)] == ["submitted"]


def test_submit_of_the_same_id_with_a_different_body_is_a_conflict(store, make_request):
    request = make_request()
    store.submit(request, commit=COMMIT)
    changed = make_request(request.experiment_id, description="something else entirely")

    with pytest.raises(RequestRejected) as excinfo:
        store.submit(changed, commit=COMMIT)
    assert excinfo.value.code == "conflict"
    assert request.experiment_id in str(excinfo.value)
    assert store.count() == 1
    assert store.get(request.experiment_id).spec == request  # the first body stands


def test_submit_many_records_a_batch_in_one_transaction_as_submit_would(store, make_request):
    from orchestrator.store.repository import Submission

    known = make_request()
    store.submit(known, commit=COMMIT)
    fresh, other = make_request(priority=3), make_request()
    changed = make_request(known.experiment_id, description="another body for a known id")
    batch = [Submission(fresh, commit=COMMIT, trace_id="t-1", actor="nats", reply_to="_INBOX.a"),
             Submission(known, commit=COMMIT), Submission(changed, commit=COMMIT),
             Submission(other, commit=COMMIT), Submission(fresh, commit=COMMIT)]  # the batch's own duplicate

    results = store.submit_many(batch)

    assert results[:2] == [True, False] and results[3:] == [True, False]
    assert isinstance(results[2], RequestRejected) and results[2].code == "conflict"
    assert store.count() == 3
    view = store.get(fresh.experiment_id)
    assert view.phase is Phase.PENDING and view.spec == fresh and view.priority == 3 and view.trace_id == "t-1"
    assert [(c.type, c.status, c.reason) for c in view.conditions] == [("Accepted", "True", "Queued")]
    assert store.get(known.experiment_id).spec == known  # the first body stands
    [entry] = store.history(fresh.experiment_id)
    assert (entry.action, entry.actor) == ("submitted", "nats") and COMMIT[:12] in entry.reason
    # What the controller reads: the batch's records are admitted like any other.
    assert {d.id for d in store.desired()} == {known.experiment_id, fresh.experiment_id, other.experiment_id}


def test_submit_many_of_nothing_writes_nothing(store):
    assert store.submit_many([]) == [] and store.count() == 0


def test_get_of_an_unknown_id_is_not_found(store):
    with pytest.raises(NotFound) as excinfo:
        store.get("no-such-experiment")
    assert excinfo.value.code == "not_found"


# -- queue ------------------------------------------------------------------------


def test_next_pending_takes_highest_priority_then_oldest(store, make_request):
    assert store.next_pending() is None
    ids = {}
    for name, priority in [("low-old", 0), ("high-old", 5), ("high-new", 5), ("negative", -3), ("low-new", 0)]:
        ids[name] = store.submit(make_request(priority=priority), commit=COMMIT)[0].id
        time.sleep(0.01)  # distinct created_at

    order = []
    while (view := store.next_pending()) is not None:
        order.append(view.id)
        store.transition(view.id, Phase.BUILDING, reason="Admitted")
    assert order == [ids[n] for n in ("high-old", "high-new", "low-old", "low-new", "negative")]


def test_next_pending_skips_non_pending_and_sees_requeued(store, make_request):
    a = store.submit(make_request(priority=10), commit=COMMIT)[0]
    time.sleep(0.01)
    b = store.submit(make_request(priority=1), commit=COMMIT)[0]
    store.transition(a.id, Phase.RUNNING, reason="Started")
    assert store.next_pending().id == b.id
    store.transition(a.id, Phase.PENDING, reason="Requeued")
    assert store.next_pending().id == a.id


# -- transitions ----------------------------------------------------------------------


def test_transition_sets_phase_fields_conditions_and_history(store, make_request):
    view = store.submit(make_request(), commit=COMMIT)[0]
    eid = view.id

    building = store.transition(eid, Phase.BUILDING, reason="BuildStarted", message="building snapshot",
                                actor="worker-1", sandbox_name="genesis-abc", image="genesis/snapshot:x", attempt=1)
    assert building.phase is Phase.BUILDING
    assert building.sandbox_name == "genesis-abc" and building.image == "genesis/snapshot:x"
    assert building.attempt == 1
    assert building.started_at is not None
    assert building.updated_at >= view.updated_at
    assert [c.type for c in building.conditions] == ["Accepted", "Building"]
    cond = building.conditions[-1]
    assert (cond.status, cond.reason, cond.message) == ("True", "BuildStarted", "building snapshot")

    time.sleep(0.01)
    running = store.transition(eid, Phase.RUNNING, reason="Started", message="sandbox up")
    assert running.phase is Phase.RUNNING
    assert running.started_at == building.started_at  # set once, on Building
    assert [c.type for c in running.conditions] == ["Accepted", "Building", "Running"]

    # Same phase again: the condition is updated in place, not appended; its
    # transition time stays (status did not change).
    time.sleep(0.01)
    again = store.transition(eid, Phase.RUNNING, reason="StillRunning", message="heartbeat")
    assert [c.type for c in again.conditions] == ["Accepted", "Building", "Running"]
    assert again.conditions[-1].reason == "StillRunning"
    assert again.conditions[-1].last_transition_time == running.conditions[-1].last_transition_time

    history = store.history(eid)
    assert [h.action for h in history] == ["submitted", "phase:Building", "phase:Running", "phase:Running"]
    assert history[1].actor == "worker-1"
    assert history[1].sandbox_name == "genesis-abc"
    assert history[1].reason == "BuildStarted: building snapshot"
    assert history[-1].at >= history[1].at
    assert store.get(eid) == again


def test_transition_of_a_finished_experiment_is_refused(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.transition(eid, Phase.FAILED, reason="cancelled", message="by operator")
    history_before = store.history(eid)

    with pytest.raises(GenesisError) as excinfo:
        store.transition(eid, Phase.RUNNING, reason="Started")
    assert excinfo.value.code == "already_finished"
    assert store.get(eid).phase is Phase.FAILED
    assert store.history(eid) == history_before


def test_transition_after_finalize_is_refused(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.finalize(_outcome(eid, metrics=_metrics()), phase=Phase.SUCCEEDED, reason="Verdict", message="merge")
    with pytest.raises(GenesisError) as excinfo:
        store.transition(eid, Phase.COLLECTING, reason="Collect")
    assert excinfo.value.code == "already_finished"
    assert store.get(eid).phase is Phase.SUCCEEDED


def test_transition_writes_the_sandboxes_audit_lines_first_with_their_own_times(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    created = AuditLine("genesis-x", "created", "image genesis/snapshot:x", {"cpu": 1.0})
    time.sleep(0.01)
    applied = AuditLine("genesis-x", "changes_applied", "bundle delivered on stdin", {"tier": "hot"})
    store.transition(eid, Phase.RUNNING, reason="SandboxRunning", sandbox_name="genesis-x", audits=[created, applied])
    lines = [h for h in store.history(eid) if h.action != "submitted"]
    assert [(h.action, h.sandbox_name, h.details) for h in lines] == [
        ("created", "genesis-x", {"cpu": 1.0}), ("changes_applied", "genesis-x", {"tier": "hot"}),
        ("phase:Running", "genesis-x", {})]
    assert lines[0].at == created.at and lines[1].at == applied.at  # when they happened, not when written
    assert lines[0].at < lines[1].at <= lines[2].at


def test_transition_only_from_moves_only_a_record_in_that_phase(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.transition(eid, Phase.RUNNING, reason="SandboxRunning", sandbox_name="genesis-x")
    moved = store.transition(eid, Phase.COLLECTING, reason="Collecting", only_from=Phase.RUNNING)
    assert moved.phase is Phase.COLLECTING
    history = store.history(eid)
    again = store.transition(eid, Phase.COLLECTING, reason="Collecting", only_from=Phase.RUNNING)  # a resumed collect
    assert again.phase is Phase.COLLECTING and store.history(eid) == history  # nothing written twice
    store.finalize(_outcome(eid, metrics=_metrics()), phase=Phase.SUCCEEDED, reason="Verdict", message="merge")
    assert store.transition(eid, Phase.COLLECTING, reason="Collecting",
                            only_from=Phase.RUNNING).phase is Phase.SUCCEEDED  # finished: left as it is


def test_audit_lines_keep_their_order_and_actor(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.audit_lines(eid, [AuditLine("genesis-b", "created", "image x"), AuditLine("genesis-b", "started", "up")],
                      actor="controller")
    assert [(h.action, h.actor) for h in store.history(eid) if h.sandbox_name == "genesis-b"] == [
        ("created", "controller"), ("started", "controller")]


def test_transition_of_an_unknown_id_is_not_found(store):
    with pytest.raises(NotFound):
        store.transition("missing", Phase.BUILDING, reason="x")


# -- finalize ---------------------------------------------------------------------------


def test_finalize_writes_record_metrics_and_outbox_once(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.transition(eid, Phase.BUILDING, reason="BuildStarted", sandbox_name="genesis-x", attempt=1)
    store.transition(eid, Phase.COLLECTING, reason="Collecting")
    metrics = _metrics()
    outcome = _outcome(eid, metrics=metrics)
    preserved = _now() + timedelta(days=7)

    view = store.finalize(outcome, phase=Phase.SUCCEEDED, reason="Verdict", message="merge: llm_reduction 0.38",
                          preserved_until=preserved, actor="worker-1")

    assert view.phase is Phase.SUCCEEDED
    assert view.recommendation is Recommendation.MERGE
    assert view.reason == "Verdict" and view.message == "merge: llm_reduction 0.38"
    assert view.outcome == outcome
    assert view.finished_at is not None and view.finished_at >= view.started_at
    assert view.preserved_until == preserved
    assert view.conditions[-1].type == "Succeeded" and view.conditions[-1].status == "True"
    assert store.get(eid) == view
    with store.engine.connect() as conn:  # the outcome JSON as stored
        stored = conn.execute(select(ExperimentRow.outcome).where(ExperimentRow.id == eid)).scalar_one()
    assert stored == outcome.model_dump(mode="json")

    [row] = store.metrics(eid)
    for name, value in metrics.model_dump().items():
        assert row[name] == value, name
        if value is not None and name != "custom":
            assert type(row[name]) is type(value), name  # typed columns, not strings
    assert row["experiment_id"] == eid and row["attempt"] == 1 and row["recommendation"] == "merge"
    assert (row["baseline_success_rate"], row["baseline_test_count"], row["baseline_runtime_ms"]) == (0.97, 250, 199_000)
    assert row["recorded_at"] is not None

    messages = [m for m in store.outbox() if m["experiment_id"] == eid]
    assert sorted(m["subject"] for m in messages) == sorted(
        [f"genesis.experiment.completed.{eid}", "centralcloud.experiment.result"])
    assert len({m["msg_id"] for m in messages}) == 2
    assert all(eid in m["msg_id"] for m in messages)
    for m in messages:
        assert m["payload"] == outcome.model_dump(mode="json")
        # W3C traceparent in the request's trace, a span of its own per message
        assert re.fullmatch(rf"00-{outcome.trace_id}-[0-9a-f]{{16}}-01", m["headers"]["traceparent"])
        assert m["published_at"] is None
    assert len(store.outbox(unpublished_only=True)) == 2
    history = store.history(eid)
    assert history[-1].action == "phase:Succeeded" and history[-1].actor == "worker-1"

    # Exactly once: a second finalize (even with another verdict) changes nothing.
    second = store.finalize(_outcome(eid, recommendation=Recommendation.ROLLBACK, metrics=_metrics()),
                            phase=Phase.FAILED, reason="Again", message="again")
    assert second == view
    assert store.get(eid) == view
    assert len(store.metrics(eid)) == 1
    assert _rows(store, MetricsRow, experiment_id=eid) == 1
    assert len(store.outbox()) == 2
    assert _rows(store, OutboxRow, experiment_id=eid) == 2
    assert store.history(eid) == history


def test_finalize_failed_goes_to_the_failed_subject_without_metrics(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    outcome = _outcome(eid, status="failed", recommendation=Recommendation.ROLLBACK, trace_id=None,
                       error={"code": "timeout", "message": "killed after 600000 ms"})
    view = store.finalize(outcome, phase=Phase.FAILED, reason="timeout", message="killed after 600000 ms")

    assert view.phase is Phase.FAILED and view.reason == "timeout"
    assert view.recommendation is Recommendation.ROLLBACK
    assert view.outcome.error.code == "timeout"
    assert view.preserved_until is None
    assert store.metrics(eid) == []
    messages = store.outbox()
    assert sorted(m["subject"] for m in messages) == sorted(
        [f"genesis.experiment.failed.{eid}", "centralcloud.experiment.result"])
    assert all(m["headers"] == {} for m in messages)


def test_outbox_msg_ids_stay_unique_across_experiments(store, make_request):
    ids = [store.submit(make_request(), commit=COMMIT)[0].id for _ in range(3)]
    for eid in ids:
        store.finalize(_outcome(eid, metrics=_metrics()), phase=Phase.SUCCEEDED, reason="Verdict", message="ok")
    messages = store.outbox()
    assert len(messages) == 6
    assert len({m["msg_id"] for m in messages}) == 6
    assert sum(m["subject"] == "centralcloud.experiment.result" for m in messages) == 3
    assert [len(store.metrics(eid)) for eid in ids] == [1, 1, 1]


# -- rejected requests -----------------------------------------------------------------


def test_record_rejected_stores_a_failed_record_with_an_outcome(store):
    eid = str(uuid.uuid4())
    raw = '{"experiment_id": "%s", "changes": {"files": ["lib/x.py"]}}' % eid
    view = store.record_rejected(experiment_id=eid, instance_id="singularity-test-1", code="invalid_request",
                                 message="changes.files has paths but no content or patch", raw_excerpt=raw,
                                 trace_id="trace-r")

    assert view.phase is Phase.FAILED
    assert view.reason == "invalid_request"
    assert view.message == "changes.files has paths but no content or patch"
    assert view.spec is None and view.raw_excerpt == raw
    assert view.finished_at is not None
    assert view.recommendation is None or view.recommendation is Recommendation.ROLLBACK
    assert view.outcome is not None and view.outcome.status == "failed"
    assert view.outcome.error.code == "invalid_request"
    assert view.outcome.error.message == "changes.files has paths but no content or patch"
    [accepted] = view.conditions
    assert (accepted.type, accepted.status, accepted.reason) == ("Accepted", "False", "invalid_request")
    assert store.get(eid) == view
    assert store.count() == 1

    messages = store.outbox()
    assert f"genesis.experiment.failed.{eid}" in {m["subject"] for m in messages}
    assert all(m["payload"]["error"]["code"] == "invalid_request" for m in messages)
    assert [h.action for h in store.history(eid)] == ["rejected"]

    # The same id again: no second record, no second outcome; the re-send is audited.
    outbox_before = len(messages)
    again = store.record_rejected(experiment_id=eid, instance_id="singularity-test-1", code="body_too_large",
                                  message="too big", raw_excerpt="x" * 10)
    assert again.id == eid and again.reason == "invalid_request"
    assert store.count() == 1
    assert len(store.outbox()) == outbox_before
    history = store.history(eid)
    assert [h.action for h in history] == ["rejected", "rejected"]
    assert history[-1].reason.startswith("body_too_large")


def test_record_rejected_for_an_accepted_id_keeps_the_accepted_record(store, make_request):
    request = make_request()
    store.submit(request, commit=COMMIT)
    view = store.record_rejected(experiment_id=request.experiment_id, instance_id=request.instance_id,
                                 code="invalid_request", message="bad re-send", raw_excerpt="{")
    assert view.phase is Phase.PENDING and view.spec == request
    assert store.count() == 1
    assert store.outbox() == []
    assert [h.action for h in store.history(request.experiment_id)] == ["submitted", "rejected"]


def test_record_rejected_truncates_long_input(store):
    eid = str(uuid.uuid4())
    view = store.record_rejected(experiment_id=eid, instance_id="i-1", code="invalid_request",
                                 message="m" * 10_000, raw_excerpt="r" * 100_000)
    assert len(view.raw_excerpt) == 4000
    assert len(view.message) == 4000
    assert store.get(eid).raw_excerpt == "r" * 4000


# -- cancel / preservation -------------------------------------------------------------


def test_request_cancel_sets_the_flag(store, make_request):
    view = store.submit(make_request(), commit=COMMIT)[0]
    assert view.cancel_requested is False
    time.sleep(0.01)
    cancelled = store.request_cancel(view.id)
    assert cancelled.cancel_requested is True
    assert cancelled.updated_at > view.updated_at
    assert store.get(view.id).cancel_requested is True
    assert cancelled.phase is Phase.PENDING  # a request, not a transition
    with pytest.raises(NotFound):
        store.request_cancel("missing")


def test_expired_preserved_and_clearing_preservation(store, make_request):
    now = _now()
    expired = store.submit(make_request(), commit=COMMIT)[0].id
    live = store.submit(make_request(), commit=COMMIT)[0].id
    never = store.submit(make_request(), commit=COMMIT)[0].id
    store.set_preserved_until(expired, now - timedelta(hours=1))
    store.set_preserved_until(live, now + timedelta(hours=1))

    assert [v.id for v in store.expired_preserved(now)] == [expired]
    assert store.get(expired).preserved_until == now - timedelta(hours=1)
    assert store.get(never).preserved_until is None
    # Two hours later both have expired.
    assert {v.id for v in store.expired_preserved(now + timedelta(hours=2))} == {expired, live}

    store.set_preserved_until(expired, None)
    assert store.get(expired).preserved_until is None
    assert store.expired_preserved(now) == []
    assert [v.id for v in store.expired_preserved(now + timedelta(hours=2))] == [live]


def test_finalize_preservation_is_swept_by_expired_preserved(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    until = _now() + timedelta(days=7)
    store.finalize(_outcome(eid, metrics=_metrics()), phase=Phase.SUCCEEDED, reason="Verdict", message="merge",
                   preserved_until=until, audits=[AuditLine("genesis-x-a1", "preserved", "merge: kept for review", {"until": "then"})])
    kept = [h for h in store.history(eid) if h.action == "preserved"]
    assert [(h.sandbox_name, h.reason, h.details) for h in kept] == [
        ("genesis-x-a1", "merge: kept for review", {"until": "then"})]  # written with the outcome
    assert store.expired_preserved(_now()) == []
    assert [v.id for v in store.expired_preserved(until + timedelta(seconds=1))] == [eid]


def test_the_removal_audit_of_a_kept_sandbox_clears_its_marker_in_one_write(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.finalize(_outcome(eid, metrics=_metrics()), phase=Phase.SUCCEEDED, reason="Verdict", message="merge",
                   preserved_until=_now())
    store.audit(experiment_id=eid, sandbox_name="genesis-x-a1", action="deleted", actor="controller",
                reason="released: preservation expired", duration_ms=12.5, unpreserve=True)

    assert store.get(eid).preserved_until is None
    assert store.expired_preserved(_now() + timedelta(hours=1)) == []
    deleted = [h for h in store.history(eid) if h.action == "deleted"]
    assert [(h.sandbox_name, h.duration_ms) for h in deleted] == [("genesis-x-a1", 12.5)]


def test_setting_a_column_of_an_unknown_record_is_not_found(store):
    with pytest.raises(NotFound):
        store.set_preserved_until("no-such-experiment", None)


# -- caches -----------------------------------------------------------------------


def test_baseline_cache_round_trip(store):
    key = "a" * 64
    assert store.baseline(key) is None
    baseline = CachedBaseline(key=key, cases={"tests/test_a.py::test_ok": "passed",
                                              "tests/test_a.py::test_bad": "failed"},
                              parse_errors=["junit-2.xml: not XML"], runtime_ms=199_000, exit_code=1,
                              llm_count=42, created_at=_now())
    store.put_baseline(baseline, repo="monorepo", commit=COMMIT, command=["pytest", "-q"], image="img:1")
    assert store.baseline(key) == baseline

    # Re-putting the same key replaces it (no duplicate-key error).
    newer = baseline.model_copy(update={"runtime_ms": 1, "llm_count": 0, "parse_errors": []})
    store.put_baseline(newer, repo="monorepo", commit=COMMIT, command=["pytest", "-q"], image="img:1")
    assert store.baseline(key) == newer
    assert store.baseline("b" * 64) is None


def test_baseline_phase_follows_the_record_without_its_results(store):
    key = "c" * 64
    assert store.baseline_phase(key) is None  # never planned
    store.plan_baseline(key=key, repo="monorepo", commit=COMMIT, command=["pytest"], image="img:1", owner="e1",
                        plan={}, repetitions=1)
    assert store.baseline_phase(key) == "Pending" and store.baseline(key) is None
    store.put_baseline(CachedBaseline(key=key, cases={"t::ok": "passed"}, parse_errors=[], runtime_ms=1, exit_code=0,
                                      llm_count=0, created_at=_now()),
                       repo="monorepo", commit=COMMIT, command=["pytest"], image="img:1")
    assert store.baseline_phase(key) == "Succeeded" and store.baseline(key) is not None


def test_desired_state_reads_the_records_and_the_baselines_they_wait_for_together(store, make_request):
    waiting = store.submit(make_request(), commit=COMMIT)[0].id
    store.admit(waiting, gpus=(), actor="c")
    store.transition(waiting, Phase.BUILDING, reason="WaitingForBaseline", baseline_key="f" * 64)
    plan = dict(repo="monorepo", commit=COMMIT, command=["pytest"], image="img:1", plan={}, repetitions=1)
    store.plan_baseline(key="f" * 64, owner=waiting, **plan)
    store.fail_baseline("f" * 64, "the base's suite would not start")  # finished: read only as waited for
    store.plan_baseline(key="a" * 64, owner="other", **plan)  # active: always read
    store.plan_baseline(key="b" * 64, owner="other", **plan)
    store.fail_baseline("b" * 64, "nobody waits")  # neither: left out

    desired, baselines = store.desired_state()
    assert desired == store.desired() and [d.waiting_for for d in desired] == ["f" * 64]
    assert sorted((b.key[0], b.phase) for b in baselines) == [("a", "Pending"), ("f", "Failed")]


def test_touch_image_creates_then_counts_uses(store):
    assert store.images() == []
    store.touch_image(tag="genesis/snapshot:monorepo-3f2a9c1", repo="monorepo", commit=COMMIT,
                      toolchain="genesis/base:bookworm", size_bytes=3_500_000_000, build_seconds=41.5)
    [first] = store.images()
    assert first["uses"] == 1
    assert first["size_bytes"] == 3_500_000_000 and first["build_seconds"] == 41.5
    assert first["repo"] == "monorepo" and first["commit"] == COMMIT

    time.sleep(0.01)
    store.touch_image(tag="genesis/snapshot:monorepo-3f2a9c1", repo="monorepo", commit=COMMIT,
                      toolchain="genesis/base:bookworm", size_bytes=3_500_000_000, build_seconds=None)
    [second] = store.images()
    assert second["uses"] == 2
    assert second["build_seconds"] == 41.5  # a use is not a rebuild
    assert second["created_at"] == first["created_at"]
    assert second["last_used_at"] > first["last_used_at"]

    store.touch_image(tag="genesis/snapshot:monorepo-other", repo="monorepo", commit="b" * 40,
                      toolchain="genesis/base:bookworm", size_bytes=1, build_seconds=None)
    images = store.images()
    assert [i["tag"] for i in images] == ["genesis/snapshot:monorepo-3f2a9c1", "genesis/snapshot:monorepo-other"]
    assert images[1]["uses"] == 1 and images[1]["build_seconds"] == 0.0


# -- backend ------------------------------------------------------------------------


def test_store_runs_on_the_parametrized_backend(store, backend):
    assert store.engine.dialect.name == {"sqlite": "sqlite", "postgres": "postgresql"}[backend]
    with store.engine.connect() as conn:
        if backend == "postgres":
            # Its own database per test (or its own schema, on a reused server whose role may not create databases).
            database, schema = conn.execute(text("select current_database(), current_schema()")).one()
            assert database.startswith("genesis_t_") or schema.startswith("genesis_t_")


# -- concurrency ----------------------------------------------------------------------


def test_a_duplicate_submitted_concurrently_is_still_a_duplicate(store, make_request):
    """Two intake workers (or `genesis apply` and a worker) get the same request
    at once: one records it, the other must answer "duplicate", not crash with
    a database error (SPEC §2: same id + same body = duplicate)."""
    import threading

    from orchestrator.store.repository import Store

    from sqlalchemy import event

    from orchestrator.store.db import make_engine

    inserted, release = threading.Event(), threading.Event()
    paused_engine = make_engine(store.engine.url.render_as_string(hide_password=False))

    @event.listens_for(paused_engine, "after_cursor_execute")
    def pause(conn, cursor, statement, parameters, context, executemany):
        """A replica paused inside its submit transaction, after its INSERT."""
        if statement.lstrip().upper().startswith("INSERT INTO SANDBOX_HISTORY"):
            inserted.set()
            assert release.wait(30)

    request = make_request()
    results: dict[str, object] = {}

    def run(name, target):
        try:
            results[name] = target.submit(request, commit=COMMIT)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion below
            results[name] = exc

    first = threading.Thread(target=run, args=("first", Store(paused_engine)))
    first.start()
    assert inserted.wait(30)
    second = threading.Thread(target=run, args=("second", store))
    second.start()
    second.join(0.5)  # let the second reach its INSERT (it may block on the first's row lock)
    release.set()
    first.join(60)
    second.join(60)
    assert not first.is_alive() and not second.is_alive()

    assert isinstance(results["first"], tuple) and results["first"][1] is True, results["first"]
    assert isinstance(results["second"], tuple), f"second submit raised {results['second']!r}"
    view, created = results["second"]
    assert created is False and view.id == request.experiment_id
    assert store.count() == 1
    paused_engine.dispose()

"""Every datetime the store hands back is timezone-aware UTC, on both backends
(SQLite drops the zone, PostgreSQL returns the session's zone), and a
datetime handed in is kept as the same instant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import make_url

from orchestrator.domain.models import Baseline, Metrics, Outcome, Phase, Recommendation
from orchestrator.domain.records import CachedBaseline
from orchestrator.store.db import make_engine, upgrade
from orchestrator.store.repository import Store

UTC = timezone.utc
COMMIT = "3f2a9c1" + "0" * 33
PLUS_TWO = timezone(timedelta(hours=2))


def _assert_utc(value: datetime | None, what: str) -> None:
    assert value is not None, f"{what} is None"
    assert isinstance(value, datetime), what
    assert value.tzinfo is not None and value.utcoffset() is not None, f"{what} is naive: {value!r}"
    assert value.utcoffset() == timedelta(0), f"{what} is not UTC: {value!r}"


def _finished_experiment(store: Store, make_request) -> str:
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    store.transition(eid, Phase.BUILDING, reason="BuildStarted", sandbox_name="genesis-tz")
    outcome = Outcome(experiment_id=eid, instance_id="singularity-test-1", status="success",
                      recommendation=Recommendation.MERGE, timestamp=datetime.now(UTC),
                      metrics=Metrics(success_rate=1.0, test_count=3, runtime_ms=10),
                      baseline=Baseline(success_rate=1.0, test_count=3, runtime_ms=12))
    store.finalize(outcome, phase=Phase.SUCCEEDED, reason="Verdict", message="merge",
                   preserved_until=datetime.now(UTC) + timedelta(days=7))
    return eid


def test_views_history_and_baselines_are_utc(store, make_request):
    eid = _finished_experiment(store, make_request)
    view = store.get(eid)
    for name in ("created_at", "updated_at", "started_at", "finished_at", "preserved_until"):
        _assert_utc(getattr(view, name), f"view.{name}")
    for condition in view.conditions:
        _assert_utc(condition.last_transition_time, f"condition {condition.type}")
    _assert_utc(view.outcome.timestamp, "outcome.timestamp")
    for listed in store.list() + store.expired_preserved(datetime.now(UTC) + timedelta(days=8)):
        _assert_utc(listed.created_at, "listed created_at")
        _assert_utc(listed.preserved_until, "listed preserved_until")
    for entry in store.history(eid):
        _assert_utc(entry.at, f"history {entry.action}")

    store.put_baseline(CachedBaseline(key="k" * 64, cases={}, runtime_ms=1, exit_code=0, llm_count=0,
                                      created_at=datetime.now(UTC)),
                       repo="monorepo", commit=COMMIT, command=["true"], image="img")
    _assert_utc(store.baseline("k" * 64).created_at, "baseline.created_at")


def test_metrics_rows_are_utc(store, make_request):
    eid = _finished_experiment(store, make_request)
    [row] = store.metrics(eid)
    _assert_utc(row["recorded_at"], "metrics.recorded_at")


def test_image_rows_are_utc(store):
    store.touch_image(tag="genesis/snapshot:tz", repo="monorepo", commit=COMMIT, toolchain="base",
                      size_bytes=1, build_seconds=1.0)
    [image] = store.images()
    _assert_utc(image["created_at"], "images.created_at")
    _assert_utc(image["last_used_at"], "images.last_used_at")


def test_a_datetime_with_another_offset_is_kept_as_the_same_instant(store, make_request):
    eid = store.submit(make_request(), commit=COMMIT)[0].id
    until = datetime(2030, 6, 1, 12, 0, tzinfo=PLUS_TWO)  # = 10:00 UTC

    store.set_preserved_until(eid, until)
    stored = store.get(eid).preserved_until
    assert stored == until, f"stored {stored!r}, wrote {until!r} (= {until.astimezone(UTC)!r})"
    _assert_utc(stored, "preserved_until")
    # 11:00 UTC is after the expiry instant, 09:00 UTC before it.
    assert [v.id for v in store.expired_preserved(datetime(2030, 6, 1, 11, 0, tzinfo=UTC))] == [eid]
    assert store.expired_preserved(datetime(2030, 6, 1, 9, 0, tzinfo=UTC)) == []


@pytest.mark.postgres
def test_postgres_session_in_another_zone_still_returns_utc(postgres_url, make_request):
    """A PostgreSQL server whose ``timezone`` setting is not UTC (Debian's
    initdb takes the host's zone) must not leak that zone into the views."""
    url = make_url(postgres_url)
    options = (url.query.get("options", "") + " -ctimezone=America/New_York").strip()
    engine = make_engine(url.update_query_dict({"options": options}).render_as_string(hide_password=False))
    try:
        upgrade(engine)
        store = Store(engine)
        eid = _finished_experiment(store, make_request)
        view = store.get(eid)
        for name in ("created_at", "updated_at", "started_at", "finished_at", "preserved_until"):
            _assert_utc(getattr(view, name), f"view.{name}")
        for entry in store.history(eid):
            _assert_utc(entry.at, f"history {entry.action}")
    finally:
        engine.dispose()

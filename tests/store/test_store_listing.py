"""Listing experiments on SQLite and PostgreSQL: selectors, limits and pages
run in SQL (``Store.page``), so an old match is never lost behind a limit and
a walk over every page sees each record exactly once."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.domain.queries import parse_fields, parse_labels
from orchestrator.errors import GenesisError

UTC = timezone.utc
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ids(page) -> list[str]:
    return [v.id for v in page.items]


def walk(store, where=(), *, limit: int, between=lambda n: None) -> list[str]:
    """Every page in turn; ``between(n)`` runs after page n (to insert records mid-walk)."""
    seen, token, n = [], None, 0
    while True:
        page = store.page(where, limit=limit, continue_token=token)
        assert len(page.items) <= limit
        seen += ids(page)
        if page.continue_token is None:
            return seen
        n += 1
        between(n)
        token = page.continue_token


def test_a_match_older_than_the_first_500_records_is_found(store, seed):
    seed([dict(id="needle", instance_id="needle", created_at=T0)]
         + [dict(id=f"hay-{i:04d}", created_at=T0 + timedelta(seconds=i + 1)) for i in range(600)])

    assert ids(store.page(parse_labels("instance_id=needle"))) == ["needle"]
    assert [v.id for v in store.list(instance_id="needle")] == ["needle"]
    assert len(store.list()) == 601  # no limit: everything, never a silent 500
    assert ids(store.page(parse_fields("metadata.name=needle"))) == ["needle"]


@pytest.fixture
def mixed(store, seed):
    seed([
        dict(id="a", risk_level="low", experiment_type="decomposition", phase="Succeeded",
             recommendation="merge", created_at=T0 + timedelta(seconds=5)),
        dict(id="b", risk_level="medium", experiment_type="prompt", phase="Failed",
             recommendation="rollback", created_at=T0 + timedelta(seconds=4)),
        dict(id="c", risk_level="high", experiment_type="prompt", phase="Running", created_at=T0 + timedelta(seconds=3)),
        dict(id="d", risk_level="low", experiment_type="routing", phase="Pending", repo="other",
             created_at=T0 + timedelta(seconds=2)),
        dict(id="e", risk_level="high", experiment_type="decomposition", phase="Succeeded",
             recommendation="merge", instance_id="ops", created_at=T0 + timedelta(seconds=1)),
    ])
    return store


@pytest.mark.parametrize(("selector", "expected"), [
    ("risk_level=low", ["a", "d"]),
    ("risk_level==low", ["a", "d"]),
    ("risk_level!=low", ["b", "c", "e"]),
    ("risk_level in (low, high)", ["a", "c", "d", "e"]),
    ("risk_level notin (low,high)", ["b"]),
    ("experiment_type=prompt,risk_level!=medium", ["c"]),
    ("phase in (Succeeded,Failed),experiment_type notin (prompt)", ["a", "e"]),
    ("repo=other", ["d"]),
    ("instance_id!=hay", ["e"]),
    ("risk_level=none-such", []),
    ("", ["a", "b", "c", "d", "e"]),
])
def test_label_selectors(mixed, selector, expected):
    assert ids(mixed.page(parse_labels(selector))) == expected


@pytest.mark.parametrize(("selector", "expected"), [
    ("metadata.name=c", ["c"]),
    ("status.phase=Succeeded", ["a", "e"]),
    ("status.phase!=Succeeded", ["b", "c", "d"]),
    ("status.recommendation==merge", ["a", "e"]),
    ("status.recommendation!=merge", ["b", "c", "d"]),  # includes the records without a recommendation
    ("spec.risk_level=high,spec.experiment_type=decomposition", ["e"]),
    ("spec.instance_id=ops", ["e"]),
    ("spec.repo!=monorepo", ["d"]),
])
def test_field_selectors(mixed, selector, expected):
    assert ids(mixed.page(parse_fields(selector))) == expected


def test_labels_and_fields_combine(mixed):
    assert ids(mixed.page(parse_labels("risk_level=high") + parse_fields("status.phase=Running"))) == ["c"]


def test_limit_returns_at_most_n_and_a_token_only_when_more_remain(mixed):
    first = mixed.page(limit=2)
    assert ids(first) == ["a", "b"] and first.continue_token
    rest = mixed.page(limit=3, continue_token=first.continue_token)
    assert ids(rest) == ["c", "d", "e"] and rest.continue_token is None  # exactly used up: no empty last page
    assert mixed.page(limit=5).continue_token is None


def test_walking_all_pages_returns_every_item_once_even_with_inserts_between_pages(store, seed):
    # Three records per instant: the id breaks ties, so no page boundary splits or repeats one.
    seed([dict(id=f"old-{i:03d}", risk_level=("low", "high")[i % 2],
                      created_at=T0 + timedelta(seconds=i // 3)) for i in range(50)])
    inserted = []

    def insert_newer(n):
        inserted.append(f"new-{len(inserted):03d}")
        seed([dict(id=inserted[-1], instance_id="fresh", created_at=datetime.now(UTC))])

    everything = walk(store, limit=7, between=insert_newer)
    assert len(inserted) == 7  # a record arrived between every two pages
    assert len(everything) == len(set(everything)) == 50
    assert set(everything) == {f"old-{i:03d}" for i in range(50)}
    assert everything == ids(store.page(parse_labels("instance_id=hay")))  # in listing order

    lows = walk(store, parse_labels("risk_level=low,instance_id=hay"), limit=4, between=insert_newer)
    assert lows == [f"old-{i:03d}" for i in sorted(range(0, 50, 2), key=lambda i: (-(i // 3), -i))]


def test_a_token_resumes_with_the_same_selectors_in_any_order(mixed):
    first = mixed.page(parse_labels("risk_level in (high,low),phase!=Pending"), limit=1)
    again = mixed.page(parse_labels("phase!=Pending,risk_level in (low,high)"), limit=5,
                       continue_token=first.continue_token)
    assert ids(first) + ids(again) == ["a", "c", "e"]


def _token(doc: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


@pytest.mark.parametrize("token", [
    "not a token!",
    "e30",  # {}
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    _token({"v": 1, "t": "yesterday", "id": "a", "q": ""}),
    _token({"v": 1, "t": "2026-01-01T00:00:00", "id": "a", "q": ""}),  # naive: not one we issue
    _token({"v": 99, "t": "2026-01-01T00:00:00+00:00", "id": "a", "q": ""}),
    _token([1, 2]),
])
def test_a_malformed_continue_token_is_bad_input(mixed, token):
    with pytest.raises(GenesisError) as caught:
        mixed.page(limit=1, continue_token=token)
    assert caught.value.code == "bad_input" and "continue token" in str(caught.value)


def test_a_token_for_other_selectors_is_bad_input(mixed):
    token = mixed.page(parse_labels("risk_level=low"), limit=1).continue_token
    with pytest.raises(GenesisError, match="different selectors") as caught:
        mixed.page(parse_labels("risk_level=high"), limit=1, continue_token=token)
    assert caught.value.code == "bad_input"


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_one_is_bad_input(mixed, limit):
    with pytest.raises(GenesisError, match="positive") as caught:
        mixed.page(limit=limit)
    assert caught.value.code == "bad_input"

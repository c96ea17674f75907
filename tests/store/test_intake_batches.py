"""The intake's batches (a NATS fetch) on SQLite and PostgreSQL, with a real
git repository: each request ends as it would alone, in the order it came,
and a ref is resolved once per batch."""

from __future__ import annotations

import json

import pytest

from helpers import make_repo, request_body
from orchestrator.domain.capabilities import Capabilities
from orchestrator.domain.models import Phase
from orchestrator.pipeline.intake import Intake, Received
from orchestrator.settings import load_settings


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_repo(tmp_path_factory.mktemp("intake-repo") / "monorepo")


@pytest.fixture
def intake(store, repo, tmp_path):
    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({"home": str(tmp_path), "repos": {"monorepo": {"path": str(repo)}}}))
    return Intake(load_settings(config), store, capabilities=Capabilities())


def test_a_batch_records_each_request_as_alone_and_in_order(intake, store):
    first = request_body()
    later_bad_resend = dict(first, changes="not an object")  # a bad re-send of an id already accepted
    fresh = request_body(base_ref="main")
    conflict = dict(fresh, description="another body for the same id")
    batch = [Received(json.dumps(first).encode(), actor="nats"), Received(b"{not json", actor="nats"),
             Received(json.dumps(later_bad_resend).encode(), actor="nats"),
             Received(json.dumps(fresh).encode(), actor="nats"), Received(json.dumps(fresh).encode(), actor="nats"),
             Received(json.dumps(conflict).encode(), actor="nats"),
             Received(json.dumps(request_body(base_ref="no-such-branch")).encode(), actor="nats"),
             Received(json.dumps(request_body(instance_id="someone-else")).encode(), actor="nats",
                      subject_instance="test-instance")]

    recorded = intake.submit_many(batch)

    assert [(r.created, r.error.code if r.error else None) for r in recorded] == [
        (True, None), (False, "invalid_json"), (False, "invalid_request"), (True, None), (False, None),
        (False, "conflict"), (False, "unknown_commit"), (False, "instance_mismatch")]
    assert recorded[0].experiment_id == first["experiment_id"] and recorded[2].experiment_id == first["experiment_id"]
    # The accepted request stands; its bad re-send is audited against it, after it.
    assert store.get(first["experiment_id"]).phase is Phase.PENDING
    assert [h.action for h in store.history(first["experiment_id"])] == ["submitted", "rejected"]
    assert [h.action for h in store.history(fresh["experiment_id"])] == ["submitted", "conflict"]
    assert store.get(fresh["experiment_id"]).spec.description != conflict["description"]  # the first body stands
    mismatch = store.get(recorded[-1].experiment_id)
    assert mismatch.instance_id == "test-instance" and mismatch.reason == "instance_mismatch"


def test_a_branch_is_resolved_once_per_batch(intake, monkeypatch):
    from orchestrator.snapshots import git

    calls = []
    resolve = git.resolve_commit
    monkeypatch.setattr(git, "resolve_commit", lambda repo, ref: calls.append(ref) or resolve(repo, ref))

    recorded = intake.submit_many([Received(json.dumps(request_body()).encode()) for _ in range(20)])

    assert all(r.created for r in recorded) and calls == ["main"]
    again = intake.submit_many([Received(json.dumps(request_body()).encode())])
    assert again[0].created and calls == ["main", "main"]  # a new batch sees where the branch is now


def test_a_batch_the_store_cannot_record_raises_and_records_nothing(intake, store, monkeypatch):
    from orchestrator.errors import StoreError

    def down(submissions):
        raise StoreError("database unreachable", transient=True)

    monkeypatch.setattr(store, "submit_many", down)
    with pytest.raises(StoreError):
        intake.submit_many([Received(json.dumps(request_body()).encode()) for _ in range(3)])
    assert store.count() == 0

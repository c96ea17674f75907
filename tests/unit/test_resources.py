"""API objects are the records they were made from: the remote CLI prints from
an ``Experiment`` exactly what the local CLI prints from the record."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings, strategies as st

from orchestrator.domain import resources
from orchestrator.domain.models import Condition, Phase, Recommendation
from orchestrator.domain.records import HistoryEntry

from test_printers import NOW, OUTCOME, SPEC, view

times = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1),
                     timezones=st.just(timezone.utc))
maybe_times = st.none() | times
text = st.text(max_size=20)


@settings(max_examples=200, deadline=None)
@given(phase=st.sampled_from(Phase), recommendation=st.none() | st.sampled_from(Recommendation),
       created=times, updated=times, started=maybe_times, finished=maybe_times, preserved=maybe_times,
       reason=st.none() | text, message=st.none() | text, attempt=st.integers(0, 10), priority=st.integers(-5, 5),
       sandbox=st.none() | text, gpus=st.lists(st.sampled_from(["0", "1", "GPU-a"]), max_size=2).map(tuple),
       parsed=st.booleans(), with_outcome=st.booleans(), cancel=st.booleans(),
       conditions=st.lists(st.builds(Condition, type=text, status=st.sampled_from(["True", "False"]),
                                     reason=text, message=text), max_size=3))
def test_an_experiment_object_round_trips_to_its_record(phase, recommendation, created, updated, started, finished,
                                                        preserved, reason, message, attempt, priority, sandbox,
                                                        gpus, parsed, with_outcome, cancel, conditions):
    record = view(phase=phase, recommendation=recommendation, created_at=created, updated_at=updated,
                  started_at=started, finished_at=finished, preserved_until=preserved, reason=reason,
                  message=message, attempt=attempt, priority=priority, sandbox_name=sandbox, gpus=gpus,
                  spec=SPEC if parsed else None, raw_excerpt=None if parsed else "{not json",
                  outcome=OUTCOME if with_outcome else None, cancel_requested=cancel, conditions=conditions)
    obj = json.loads(json.dumps(resources.experiment(record)))  # as it crosses the wire
    assert resources.view_of(obj) == record


def test_an_audit_entry_round_trips():
    entry = HistoryEntry(experiment_id="e1", sandbox_name="genesis-e1", action="cancel_requested", actor="api:alice",
                         reason="delete asked", duration_ms=1.5, details={"k": [1, 2]}, at=NOW)
    obj = json.loads(json.dumps(resources.audit_entry(entry)))
    assert obj["kind"] == "AuditEntry" and obj["actor"] == "api:alice"
    assert resources.history_of(obj) == entry


def test_objects_carry_their_api_version_and_outcomes_their_schema_version():
    obj = resources.experiment(view(outcome=OUTCOME, phase=Phase.SUCCEEDED))
    assert obj["apiVersion"] == resources.API_VERSION == "genesis.dev/v1"
    assert obj["status"]["outcome"]["schema_version"] == 1
    listing = resources.as_list([obj], continue_token="abc")
    assert listing["kind"] == "List" and listing["metadata"] == {"continue": "abc"}
    assert resources.as_list([])["metadata"] == {}


def test_a_list_of_times_is_ordered_as_given():
    # A List keeps the order it was given (newest first from the store).
    objs = [resources.experiment(view(id=f"e{i}", created_at=NOW - timedelta(minutes=i))) for i in range(3)]
    assert [o["metadata"]["name"] for o in resources.as_list(objs)["items"]] == ["e0", "e1", "e2"]

"""Parsing kubectl-style selectors and continue tokens (pure: no database)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from orchestrator.domain.queries import (
    FIELDS, LABEL_KEYS, Cursor, Requirement, decode_continue, encode_continue, matches, parse_fields, parse_labels,
    selectors_of,
)
from orchestrator.errors import GenesisError


@pytest.mark.parametrize(("text", "expected"), [
    ("", ()),
    (None, ()),
    ("repo=monorepo", (Requirement("repo", "in", ("monorepo",)),)),
    (" repo == org/monorepo ", (Requirement("repo", "in", ("org/monorepo",)),)),
    ("risk_level!=low", (Requirement("risk_level", "notin", ("low",)),)),
    ("risk_level in (low, high)", (Requirement("risk_level", "in", ("low", "high")),)),
    ("risk_level notin (low),phase=Running",
     (Requirement("risk_level", "notin", ("low",)), Requirement("phase", "in", ("Running",)))),
    ("phase in (Pending,Running),instance_id=a.b-c_d",
     (Requirement("phase", "in", ("Pending", "Running")), Requirement("instance_id", "in", ("a.b-c_d",)))),
    ("experiment_type=", (Requirement("experiment_type", "in", ("",)),)),
])
def test_label_selectors_parse_to_requirements(text, expected):
    assert parse_labels(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("instance_id", "unable to parse requirement 'instance_id'"),      # existence: every record has every label
    ("!instance_id", "unable to parse"),
    ("repo=a=b", "unable to parse"),
    ("repo in ()", "unable to parse"),
    ("repo in (a,,b)", "unable to parse"),
    ("repo in a,b", "unable to parse"),
    ("repo>1", "unable to parse"),
    ("repo in (a,b", "unbalanced parentheses"),
    ("repo in a,b)", "unbalanced parentheses"),
    ("repo in ((a))", "unbalanced parentheses"),
    ("color=red", "unknown label 'color'"),
    ("metadata.name=x", "unknown label 'metadata.name'"),
    ("phase=running", "unknown phase 'running': one of Pending, Building, Running"),
    ("phase in (Running,Done)", "unknown phase 'Done'"),
])
def test_bad_label_selectors_are_bad_input(text, message):
    with pytest.raises(GenesisError, match=message.replace("(", r"\(")) as caught:
        parse_labels(text)
    assert caught.value.code == "bad_input"


def test_every_label_and_field_is_selectable():
    valid = {"phase": "Running", "recommendation": "merge"}  # closed sets; any text elsewhere
    assert [parse_labels(f"{key}={valid.get(key, 'x')}")[0].column for key in LABEL_KEYS] == list(LABEL_KEYS)
    assert [parse_fields(f"{path}={valid.get(column, 'x')}")[0].column
            for path, column in FIELDS.items()] == list(FIELDS.values())


@pytest.mark.parametrize(("text", "expected"), [
    ("metadata.name=exp-1", (Requirement("id", "in", ("exp-1",)),)),
    ("status.phase==Failed,spec.repo!=monorepo",
     (Requirement("phase", "in", ("Failed",)), Requirement("repo", "notin", ("monorepo",)))),
    ("status.recommendation!=rollback", (Requirement("recommendation", "notin", ("rollback",)),)),
])
def test_field_selectors_parse_to_requirements(text, expected):
    assert parse_fields(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("status.phase in (Running)", "unable to parse requirement .*field=v"),
    ("status.reason=x", "unknown field 'status.reason'"),
    ("instance_id=x", "unknown field 'instance_id'"),
    ("status.recommendation=yes", "unknown recommendation 'yes'"),
])
def test_bad_field_selectors_are_bad_input(text, message):
    with pytest.raises(GenesisError, match=message) as caught:
        parse_fields(text)
    assert caught.value.code == "bad_input"


def test_a_continue_token_round_trips_and_is_opaque_url_safe_text():
    cursor = Cursor(created_at=datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=timezone.utc), id="exp-9")
    where = parse_labels("risk_level in (low,high)")
    token = encode_continue(cursor, where=where)
    assert token.isascii() and not set(token) & set("+/= ")
    assert decode_continue(token, where=where) == cursor
    assert decode_continue(token, where=parse_labels("risk_level in (high,low)")) == cursor


def test_a_continue_token_is_bound_to_its_selectors():
    token = encode_continue(Cursor(created_at=datetime(2026, 5, 1, tzinfo=timezone.utc), id="x"), where=())
    with pytest.raises(GenesisError, match="different selectors") as caught:
        decode_continue(token, where=parse_labels("repo=monorepo"))
    assert caught.value.code == "bad_input"


# -- selectors written back, and matched in memory (the API's watch) -----------------

_values = st.sampled_from(["a", "b", "prod-1", "x.y"])
_label = st.builds(lambda k, op, vs: Requirement(column=k, op=op, values=tuple(dict.fromkeys(vs))),
                   st.sampled_from(["instance_id", "experiment_type", "risk_level", "repo"]),
                   st.sampled_from(["in", "notin"]), st.lists(_values, min_size=1, max_size=3))
_field = st.builds(lambda col, op, v: Requirement(column=col, op=op, values=(v,)),
                   st.sampled_from(["id", "recommendation"]), st.sampled_from(["in", "notin"]),
                   st.sampled_from(["merge", "rollback"]))


@given(st.lists(_label | _field, max_size=4))
def test_selectors_written_back_parse_to_the_same_requirements(where):
    labels, fields = selectors_of(tuple(where))
    parsed = parse_labels(labels) + parse_fields(fields)
    assert sorted(parsed, key=repr) == sorted(where, key=repr)


def test_matches_follows_the_listing_s_rules():
    from test_printers import view
    from orchestrator.domain.models import Recommendation

    merged = view(recommendation=Recommendation.MERGE)
    undecided = view(recommendation=None)
    assert matches(parse_fields("status.recommendation=merge"), merged)
    assert not matches(parse_fields("status.recommendation=merge"), undecided)
    assert matches(parse_fields("status.recommendation!=merge"), undecided)  # != includes records without one
    assert matches(parse_labels(f"instance_id in (x,{merged.instance_id}),phase={merged.phase.value}"), merged)
    assert not matches(parse_labels(f"instance_id notin ({merged.instance_id})"), merged)
    assert matches((), merged)

"""Tokens, roles and rate limits of the HTTP API: pure decisions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from orchestrator.domain.access import (
    Action,
    Bucket,
    Principal,
    Role,
    TokenEntry,
    TokensFile,
    authenticate,
    digest,
    new_token,
    parse_duration,
)
from orchestrator.errors import Forbidden, GenesisError

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def entry(name="alice", role=Role.OPERATOR, token="t", **kw) -> TokenEntry:
    return TokenEntry(name=name, role=role, sha256=digest(token), **kw)


def test_roles_nest_viewer_agent_operator():
    viewer, agent, operator = (Principal("v", Role.VIEWER), Principal("a", Role.AGENT, ("i1",)),
                               Principal("o", Role.OPERATOR))
    assert [viewer.may(a) for a in Action] == [True, False, False]
    assert [agent.may(a) for a in Action] == [True, True, False]
    assert [operator.may(a) for a in Action] == [True, True, True]
    with pytest.raises(Forbidden, match="viewer token 'v' may not cancel"):
        viewer.require(Action.CANCEL)


def test_agents_see_only_their_instances():
    agent = Principal("a", Role.AGENT, ("i1", "i2"))
    assert agent.sees("i1") and agent.sees("i2") and not agent.sees("i3")
    assert Principal("v", Role.VIEWER).sees("i3")
    assert agent.actor == "api:a"


def test_a_token_authenticates_by_its_digest_until_it_expires():
    token = new_token()
    assert token.startswith("gns_") and len(token) > 40 and new_token() != token
    tokens = TokensFile(tokens=[entry(token=token, expires=NOW + timedelta(hours=1)), entry("bob", token="other")])
    assert authenticate(tokens, token, now=NOW) == Principal("alice", Role.OPERATOR)
    assert authenticate(tokens, token, now=NOW + timedelta(hours=2)) is None  # expired
    assert authenticate(tokens, token + "x", now=NOW) is None
    assert authenticate(tokens, digest(token), now=NOW) is None  # the stored digest is not a token


def test_the_tokens_file_refuses_what_would_be_ambiguous_or_open():
    with pytest.raises(ValidationError, match="unique"):
        TokensFile(tokens=[entry(), entry(token="x")])
    with pytest.raises(ValidationError, match="lists no instances"):
        TokensFile(tokens=[entry("ag", Role.AGENT)])
    with pytest.raises(ValidationError):
        TokenEntry(name="x", role="admin", sha256="0" * 64)
    with pytest.raises(ValidationError):
        TokenEntry(name="x", role="viewer", sha256="not-a-digest")
    naive = TokenEntry(name="x", role="viewer", sha256="0" * 64, expires=datetime(2027, 1, 1))
    assert naive.expires.tzinfo is timezone.utc


def test_a_bucket_allows_bursts_then_the_rate():
    bucket = Bucket(rate=2.0, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # empty: one token comes in half a second
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # refilled to the burst, less one


def test_durations():
    assert parse_duration("30d") == 30 * 86400 and parse_duration("90s") == 90 and parse_duration("2h") == 7200
    for bad in ("", "d", "3", "1.5h", "-1d", "10y"):
        with pytest.raises(GenesisError):
            parse_duration(bad)

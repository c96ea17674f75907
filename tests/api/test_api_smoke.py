"""The API server starts, answers health, and refuses callers without a token."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.docker


def test_health_and_auth(genesis_api):
    with genesis_api.client(None) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        response = anonymous.get("/api/v1/experiments")
        assert response.status_code == 401 and response.json()["reason"] == "unauthorized"
    with genesis_api.client("viewer") as viewer:
        assert viewer.get("/api/v1/experiments").json()["kind"] == "List"

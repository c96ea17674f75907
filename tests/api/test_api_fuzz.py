"""A property-based fuzz of the API from its own OpenAPI schema (schemathesis's
strategies, driven by hypothesis): whatever the parameters and bodies, valid
for the schema or not, no 5xx, and every error is the one Status shape with
Genesis's code. Runs as an operator (every operation is allowed, so the
requests reach the handlers); the watch stream is left out (it never ends by
design)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode

pytestmark = pytest.mark.docker

EXAMPLES = 25  # per operation and mode: every operation once per CI run, as the brief asks of each contract


def operations(url: str) -> dict[str, object]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    found = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path != "/api/v1/watch/experiments":
            found[f"{operation.method.upper()} {operation.path}"] = operation
    return found


def check(response, label: str) -> None:
    assert response.status_code < 500, (label, response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert body["kind"] == "Status" and body["code"] == response.status_code, (label, body)
        assert isinstance(body["reason"], str) and body["reason"] and body["message"], (label, body)
        assert "Traceback" not in response.text


def test_no_input_makes_a_5xx_or_another_error_shape(genesis_api):
    found = operations(genesis_api.url)
    assert {"GET /api/v1/experiments", "POST /api/v1/experiments", "DELETE /api/v1/experiments/{name}",
            "GET /api/v1/experiments/{name}/logs", "POST /api/v1/session"} <= set(found), sorted(found)
    headers = {"Authorization": f"Bearer {genesis_api.tokens['operator']}"}
    statuses: list[int] = []
    for label, operation in found.items():
        strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                             operation.as_strategy(GenerationMode.NEGATIVE))

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=strategy)
        def fuzz(case) -> None:
            response = case.call(base_url=genesis_api.url, headers=headers, timeout=30)
            statuses.append(response.status_code)
            check(response, label)

        fuzz()
    # It reached the handlers: requests for every operation, answers and refusals among them.
    assert len(statuses) >= 5 * len(found) and {200, 400, 404} <= set(statuses), sorted(set(statuses))

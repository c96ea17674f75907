"""The MCP server, driven by the MCP SDK's own client against the shared
real ``genesis serve`` (:mod:`genesisserver`): over stdio, ``genesis mcp
--server URL`` as an assistant would start it; over streamable HTTP, the
API's ``/mcp/`` with each role's token. Experiments run for real.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from contextlib import asynccontextmanager

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from genesisserver import AGENT_INSTANCE
from helpers import ROOT, request_body

pytestmark = pytest.mark.docker

TOOLS = {"list_experiments", "get_experiment", "submit_experiment", "cancel_experiment", "read_logs",
         "compare_experiments"}


@asynccontextmanager
async def stdio_session(api, role: str | None = "operator"):
    """``genesis mcp --server <api>`` as a subprocess, with ``role``'s token in $GENESIS_TOKEN;
    ``role`` None: ``genesis mcp`` on the server's own configuration (its database, local operator)."""
    remote = ["--server", api.url] if role else []
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "orchestrator.cli.main", "mcp", *remote], cwd=str(ROOT),
        env={"PYTHONPATH": str(ROOT), "GENESIS_CONFIG": str(api.config),
             **({"GENESIS_TOKEN": api.tokens[role]} if role else {})})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def http_session(api, role: str, *, path: str = "/mcp/"):
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {api.tokens[role]}"},
                                timeout=httpx2.Timeout(30, read=300))
    async with client, streamable_http_client(api.url + path, http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call(session, tool: str, **arguments) -> dict:
    """The tool's structured answer; fails the test on a tool error."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {result.content}"
    return result.structured_content


async def refused(session, tool: str, **arguments) -> dict:
    """The tool error's {code, message}; fails the test if the call succeeded."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool} succeeded: {result.structured_content}"
    error = json.loads(result.content[0].text)
    assert "Traceback" not in error["message"]
    return error


async def until(session, experiment_id: str, done, *, timeout_s: float = 240, what: str) -> dict:
    """Poll get_experiment until ``done(detail)``, at most ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        detail = await call(session, "get_experiment", id=experiment_id)
        if done(detail):
            return detail
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {detail['phase']} {detail['reason']}"
        await asyncio.sleep(0.5)


def slow_body(**overrides) -> dict:
    return request_body(changes={"files": [{"path": "slow.py", "content": "import time\ntime.sleep(120)\n"}]},
                        validation={"command": ["python3", "slow.py"], "report": "exit_code"},
                        timeout_ms=300_000, **overrides)


# -- stdio: genesis mcp --server --------------------------------------------------------


@pytest.mark.asyncio
async def test_stdio_runs_experiments_to_a_verdict(genesis_api):
    instance = f"mcp-{uuid.uuid4().hex[:8]}"
    first = request_body(instance_id=instance)
    second = request_body(instance_id=instance,
                          changes={"files": [{"path": "NOTES.md", "content": "another harmless change\n"}]})
    async with stdio_session(genesis_api) as session:
        assert {t.name for t in (await session.list_tools()).tools} >= TOOLS
        for body in (first, second):
            answer = await call(session, "submit_experiment", request=body)
            assert answer == {"id": body["experiment_id"], "created": True, "phase": "Pending"}
        again = await call(session, "submit_experiment", request=first)
        assert again["created"] is False  # the same body twice is one experiment

        done = [await until(session, body["experiment_id"], lambda d: d["finished"], what="a verdict")
                for body in (first, second)]
        for detail in done:
            assert detail["phase"] == "Succeeded" and detail["recommendation"] == "merge", (
                detail["reason"], detail["message"], detail["error"])
            versus = detail["versus_baseline"]
            assert set(versus) == {"success_rate", "test_count", "runtime_ms"}
            assert versus["success_rate"]["experiment"] == detail["metrics"]["success_rate"]
            assert versus["success_rate"]["baseline"] == detail["baseline"]["success_rate"]
            assert detail["tests"]["PASS_TO_PASS"]["count"] > 0
            assert detail["conditions"]

        rows = (await call(session, "list_experiments", label_selector=f"instance_id={instance}"))["items"]
        assert {r["id"] for r in rows} == {first["experiment_id"], second["experiment_id"]}
        assert all(r["recommendation"] == "merge" and r["success_rate"] == 1.0 for r in rows)

        logs = await call(session, "read_logs", id=first["experiment_id"], tail=5)
        assert logs["text"] and logs["lines"] <= 5

        compared = await call(session, "compare_experiments", a=first["experiment_id"], b=second["experiment_id"])
        assert compared["same_recommendation"] is True
        assert compared["metrics"]["success_rate"] == {"a": 1.0, "b": 1.0, "delta": 0.0}
        assert compared["tests"]["PASS_TO_PASS"]["only_in_a"] == []

        uri = f"genesis://experiments/{first['experiment_id']}"
        read = await session.read_resource(uri)
        obj = json.loads(read.contents[0].text)
        assert obj["kind"] == "Experiment" and obj["metadata"]["name"] == first["experiment_id"]
        assert obj["status"]["recommendation"] == "merge" and obj["status"]["outcome"]["baseline"]
        templates = (await session.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["genesis://experiments/{id}"]


@pytest.mark.asyncio
async def test_stdio_cancel_rolls_back(genesis_api):
    body = slow_body(instance_id=f"mcp-{uuid.uuid4().hex[:8]}", priority=100)
    async with stdio_session(genesis_api) as session:
        await call(session, "submit_experiment", request=body)
        await until(session, body["experiment_id"], lambda d: d["phase"] == "Running", timeout_s=180, what="Running")
        answer = await call(session, "cancel_experiment", id=body["experiment_id"])
        assert answer["cancel_requested"] is True
        final = await until(session, body["experiment_id"], lambda d: d["finished"], timeout_s=120,
                            what="the cancel")
        assert final["phase"] == "Failed" and final["error"]["code"] == "cancelled"


@pytest.mark.asyncio
async def test_stdio_bad_input_is_a_tool_error(genesis_api):
    async with stdio_session(genesis_api) as session:
        assert (await refused(session, "get_experiment", id="no-such-experiment"))["code"] == "not_found"
        assert (await refused(session, "read_logs", id="no-such-experiment"))["code"] == "not_found"
        broken = request_body(risk_level="catastrophic")
        assert (await refused(session, "submit_experiment", request=broken))["code"] == "invalid_request"
        assert (await refused(session, "list_experiments", label_selector="phase=running"))["code"] == "bad_input"
        wrong_type = await session.call_tool("read_logs", {"id": "x", "tail": "many"})
        assert wrong_type.is_error
        with pytest.raises(MCPError, match="not_found"):
            await session.read_resource("genesis://experiments/no-such-experiment")
        # the server still answers after all of that
        assert "items" in await call(session, "list_experiments", limit=1)


@pytest.mark.asyncio
async def test_stdio_without_a_server_reads_the_local_database(genesis_api):
    body = request_body(instance_id=f"mcp-{uuid.uuid4().hex[:8]}")
    with genesis_api.client("operator") as client:
        assert client.post("/api/v1/experiments", json=body).status_code == 201
    async with stdio_session(genesis_api, role=None) as session:
        rows = (await call(session, "list_experiments", field_selector=f"metadata.name={body['experiment_id']}"))
        assert [r["instance"] for r in rows["items"]] == [body["instance_id"]]
        await until(session, body["experiment_id"], lambda d: d["finished"], what="a verdict read locally")


# -- streamable HTTP: the API's /mcp/ ---------------------------------------------------------


@pytest.mark.asyncio
async def test_http_viewer_reads_but_may_not_change(genesis_api):
    async with http_session(genesis_api, "viewer", path="/mcp") as session:  # 307 to /mcp/, followed
        assert {t.name for t in (await session.list_tools()).tools} >= TOOLS
        assert "items" in await call(session, "list_experiments", limit=5)
        assert (await refused(session, "cancel_experiment", id="anything"))["code"] == "forbidden"
        assert (await refused(session, "submit_experiment", request=request_body()))["code"] == "forbidden"


@pytest.mark.parametrize("role", [None, "expired"])
def test_http_without_a_valid_token_is_401(genesis_api, role):
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "0"}}}
    with genesis_api.client(role) as client:
        response = client.post("/mcp/", json=initialize,
                               headers={"Accept": "application/json, text/event-stream"})
    assert response.status_code == 401
    assert response.json()["reason"] == "unauthorized"


@pytest.mark.asyncio
async def test_http_agent_sees_only_its_instance(genesis_api):
    other = request_body(instance_id=f"mcp-other-{uuid.uuid4().hex[:8]}")
    with genesis_api.client("operator") as client:
        assert client.post("/api/v1/experiments", json=other).status_code == 201
    own = request_body(instance_id=AGENT_INSTANCE)
    async with http_session(genesis_api, "agent") as session:
        assert (await call(session, "submit_experiment", request=own))["created"] is True
        rows = (await call(session, "list_experiments", limit=500))["items"]
        assert own["experiment_id"] in {r["id"] for r in rows}
        assert {r["instance"] for r in rows} == {AGENT_INSTANCE}
        assert (await refused(session, "get_experiment", id=other["experiment_id"]))["code"] == "not_found"
        assert (await refused(session, "cancel_experiment", id=own["experiment_id"]))["code"] == "forbidden"
        await until(session, own["experiment_id"], lambda d: d["finished"], what="the agent's verdict")

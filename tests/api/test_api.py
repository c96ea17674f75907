"""The HTTP API against a real ``genesis serve`` (Docker, SQLite): every
endpoint, each role, and the bad inputs, each answered with its status and
Genesis's error code in the one Status shape, and recorded where a
submission was refused."""

from __future__ import annotations

import json
import queue
import threading
import uuid

import httpx
import pytest
import yaml

from genesisserver import AGENT_INSTANCE, GenesisServer, free_port
from helpers import request_body, wait_until

pytestmark = pytest.mark.docker


def is_status(response: httpx.Response, code: int, reason: str) -> dict:
    """The response is the one error shape with this HTTP status and Genesis code."""
    body = response.json()
    assert response.status_code == code, (response.status_code, body)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code, body
    assert body["reason"] == reason and body["message"], body
    assert "Traceback" not in response.text
    return body


def instance() -> str:
    return f"api-{uuid.uuid4().hex[:8]}"


def finished(client: httpx.Client, name: str) -> dict:
    wait_until(lambda: client.get(f"/api/v1/experiments/{name}").json()["status"]["phase"] in ("Succeeded", "Failed"),
               timeout_s=240, what=f"experiment {name} to finish", poll_s=0.5)
    return client.get(f"/api/v1/experiments/{name}").json()


def _client(api, role: str):
    with api.client(role) as client:
        yield client


@pytest.fixture(scope="module")
def operator(genesis_api):
    yield from _client(genesis_api, "operator")


@pytest.fixture(scope="module")
def viewer(genesis_api):
    yield from _client(genesis_api, "viewer")


@pytest.fixture(scope="module")
def agent(genesis_api):
    yield from _client(genesis_api, "agent")


@pytest.fixture(scope="module")
def merged(operator):
    """One experiment that ran to its verdict through the API."""
    body = request_body(instance_id=instance())
    response = operator.post("/api/v1/experiments", json=body, headers={"traceparent": "00-" + "ab" * 16 + "-"
                                                                                       + "cd" * 8 + "-01"})
    assert response.status_code == 201, response.text
    obj = finished(operator, body["experiment_id"])
    assert obj["status"]["phase"] == "Succeeded", (obj["status"]["reason"], obj["status"]["message"])
    return obj, body


# -- who may call -------------------------------------------------------------------


def test_no_bad_or_expired_token_is_401_with_a_challenge(genesis_api):
    for headers in ({}, {"Authorization": "Bearer gns_not-a-token"}, {"Authorization": "Basic eDp5"},
                    {"Authorization": f"Bearer {genesis_api.tokens['expired']}"}):
        response = httpx.get(f"{genesis_api.url}/api/v1/experiments", headers=headers)
        is_status(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer"
    assert httpx.get(f"{genesis_api.url}/healthz").json()["status"] == "ok"  # probes need no token
    assert httpx.get(f"{genesis_api.url}/readyz").status_code == 200


def test_a_viewer_reads_but_neither_submits_nor_cancels(viewer, merged):
    obj, body = merged
    assert viewer.get(f"/api/v1/experiments/{obj['metadata']['name']}").json()["status"]["phase"] == "Succeeded"
    is_status(viewer.post("/api/v1/experiments", json=request_body()), 403, "forbidden")
    is_status(viewer.delete(f"/api/v1/experiments/{obj['metadata']['name']}"), 403, "forbidden")
    assert viewer.get("/api/v1/whoami").json() == {"name": "test-viewer", "role": "viewer", "instances": [],
                                                   "may": ["read"]}


def test_an_agent_submits_and_reads_only_as_itself(agent, operator, merged):
    own = request_body(instance_id=AGENT_INSTANCE)
    assert agent.post("/api/v1/experiments", json=own).status_code == 201
    # Another instance's experiment is invisible to it: listed nowhere, 404 by name.
    other, _ = merged
    is_status(agent.get(f"/api/v1/experiments/{other['metadata']['name']}"), 404, "not_found")
    is_status(agent.get(f"/api/v1/experiments/{other['metadata']['name']}/logs"), 404, "not_found")
    names = {i["metadata"]["labels"]["instance_id"] for i in agent.get("/api/v1/experiments").json()["items"]}
    assert names == {AGENT_INSTANCE}
    is_status(agent.delete(f"/api/v1/experiments/{own['experiment_id']}"), 403, "forbidden")
    # Submitting as another instance is refused, recorded as its own, and does not squat the id.
    forged = request_body(instance_id="someone-else")
    refused = is_status(agent.post("/api/v1/experiments", json=forged), 403, "instance_mismatch")
    record = agent.get(f"/api/v1/experiments/{refused['details']['name']}").json()
    assert record["metadata"]["labels"]["instance_id"] == AGENT_INSTANCE
    assert record["status"]["phase"] == "Failed" and record["status"]["reason"] == "instance_mismatch"
    assert operator.post("/api/v1/experiments", json=forged).status_code == 201  # the id is still free
    operator.delete(f"/api/v1/experiments/{forged['experiment_id']}")
    operator.delete(f"/api/v1/experiments/{own['experiment_id']}")


# -- experiments ------------------------------------------------------------------------


def test_an_experiment_runs_to_its_verdict_with_its_audit_trail_and_logs(operator, merged):
    obj, body = merged
    name = obj["metadata"]["name"]
    assert obj["kind"] == "Experiment" and obj["apiVersion"] == "genesis.dev/v1"
    assert obj["status"]["recommendation"] == "merge" and obj["status"]["traceId"] == "ab" * 16
    assert obj["status"]["outcome"]["schema_version"] == 1
    assert obj["status"]["outcome"]["metrics"]["success_rate"] == 1.0
    audit = operator.get(f"/api/v1/experiments/{name}/audit").json()
    assert audit["kind"] == "List" and audit["items"][0]["action"] == "submitted"
    assert audit["items"][0]["actor"] == "api:test-operator"  # the token's name
    logs = operator.get(f"/api/v1/experiments/{name}/logs")
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain") and logs.text
    assert operator.get(f"/api/v1/experiments/{name}/logs", params={"tail": 1}).text.count("\n") <= 1
    assert operator.get(f"/api/v1/experiments/{name}/logs", params={"build": "true"}).text.startswith("==> ")
    assert operator.get(f"/api/v1/experiments/{name}/events").json()["kind"] == "EventList"
    # The same object as `genesis get experiment -o json` prints.
    assert operator.get(f"/api/v1/experiments/{name}").json() == obj


def test_submissions_duplicates_conflicts_and_refusals(operator):
    body = request_body(instance_id=instance())
    first = operator.post("/api/v1/experiments", json=body)
    assert first.status_code == 201 and first.json()["metadata"]["name"] == body["experiment_id"]
    assert operator.post("/api/v1/experiments", json=body).status_code == 200  # a re-send: unchanged
    conflict = is_status(operator.post("/api/v1/experiments", json=dict(body, description="another")), 409, "conflict")
    assert conflict["details"]["name"] == body["experiment_id"]
    cases = [(b"{not json", 422, "invalid_json"), (b"[1, 2]", 422, "invalid_request"),
             (json.dumps(request_body(repo="nowhere")).encode(), 422, "unknown_repo"),
             (json.dumps(request_body(base_ref="no-such-branch")).encode(), 422, "unknown_commit"),
             (json.dumps(request_body(changes={"files": [{"path": "../etc/passwd", "content": "x"}]})).encode(),
              422, "invalid_path"),
             (json.dumps(request_body(resources={"cpu": 64, "memory": "1Gi"})).encode(), 422, "resources_exceeded"),
             (b"x" * (4 * 2**20 + 10), 413, "body_too_large")]
    for raw, code, reason in cases:
        refused = is_status(operator.post("/api/v1/experiments", content=raw), code, reason)
        record = operator.get(f"/api/v1/experiments/{refused['details']['name']}").json()
        assert record["status"]["phase"] == "Failed" and record["status"]["reason"] == reason, record
        assert record["status"]["outcome"]["error"]["code"] == reason
    operator.delete(f"/api/v1/experiments/{body['experiment_id']}")


def test_listing_selects_and_pages_in_the_database(operator):
    mine = instance()
    bodies = [request_body(instance_id=mine, priority=-50) for _ in range(3)]
    for body in bodies:
        assert operator.post("/api/v1/experiments", json=body).status_code == 201
    first = operator.get("/api/v1/experiments", params={"labelSelector": f"instance_id={mine}", "limit": 2}).json()
    assert len(first["items"]) == 2 and first["metadata"]["continue"]
    rest = operator.get("/api/v1/experiments", params={"labelSelector": f"instance_id={mine}", "limit": 2,
                                                       "continue": first["metadata"]["continue"]}).json()
    assert len(rest["items"]) == 1 and rest["metadata"] == {}
    listed = [i["metadata"]["name"] for i in first["items"] + rest["items"]]
    assert listed == [b["experiment_id"] for b in reversed(bodies)]  # newest first, none lost
    by_field = operator.get("/api/v1/experiments", params={"fieldSelector": f"metadata.name={listed[1]}"}).json()
    assert [i["metadata"]["name"] for i in by_field["items"]] == [listed[1]]
    is_status(operator.get("/api/v1/experiments", params={"labelSelector": "colour=blue"}), 400, "bad_input")
    is_status(operator.get("/api/v1/experiments", params={"labelSelector": f"instance_id={mine}", "limit": 2,
                                                          "continue": "garbage"}), 400, "bad_input")
    is_status(operator.get("/api/v1/experiments", params={"limit": "many"}), 400, "bad_input")
    for body in bodies:
        operator.delete(f"/api/v1/experiments/{body['experiment_id']}")


def test_cancel_is_an_intent_the_controller_carries_out(operator):
    body = request_body(instance_id=instance(), changes={"files": [{"path": "slow.py", "content":
                                                                    "import time\ntime.sleep(120)\n"}]},
                        validation={"command": ["python3", "slow.py"], "report": "exit_code"}, timeout_ms=300_000)
    name = body["experiment_id"]
    operator.post("/api/v1/experiments", json=body)
    wait_until(lambda: operator.get(f"/api/v1/experiments/{name}").json()["status"]["phase"] == "Running",
               timeout_s=180, what="the slow experiment to run", poll_s=0.5)
    response = operator.delete(f"/api/v1/experiments/{name}")
    assert response.status_code == 202 and response.json()["status"]["cancelRequested"] is True
    final = finished(operator, name)
    assert final["status"]["phase"] == "Failed" and final["status"]["outcome"]["error"]["code"] == "cancelled"
    actions = [(e["action"], e["actor"]) for e in operator.get(f"/api/v1/experiments/{name}/audit").json()["items"]]
    assert ("cancel_requested", "api:test-operator") in actions


def test_unknown_ids_paths_and_methods_answer_in_the_one_shape(operator):
    is_status(operator.get("/api/v1/experiments/no-such-experiment"), 404, "not_found")
    is_status(operator.delete("/api/v1/experiments/no-such-experiment"), 404, "not_found")
    is_status(operator.get("/api/v1/experiments/no-such-experiment/audit"), 404, "not_found")
    is_status(operator.get("/api/v1/nothing-here"), 404, "not_found")
    is_status(operator.put("/api/v1/experiments"), 405, "method_not_allowed")
    is_status(operator.get("/api/v1/reports/analysis-1999-01-01"), 404, "not_found")


def test_sandboxes_images_reports_and_usage_are_lists(operator, merged):
    obj, _ = merged
    sandboxes = operator.get("/api/v1/sandboxes").json()
    assert sandboxes["kind"] == "List"
    assert obj["status"]["sandbox"] in {s["name"] for s in sandboxes["items"]}  # kept: merge preserves it
    images = operator.get("/api/v1/images").json()["items"]
    assert any(i["tier"] == "snapshot" and i["repo"] == "monorepo" for i in images), images
    assert operator.get("/api/v1/reports").json()["kind"] == "List"
    assert operator.get("/api/v1/usage").json()["kind"] == "List"


def test_the_pools_refill_after_an_experiment_and_are_listed(operator, merged):
    """The server runs with warm pools on (the default): the merged experiment's profile
    now has a ready sandbox, started and waiting (its claims show once one is claimed)."""
    def ready() -> list[dict]:
        return [p for p in operator.get("/api/v1/pools").json()["items"] if p["ready"]["hot"] >= 1]
    wait_until(lambda: ready(), timeout_s=60, what="a hot pooled sandbox")
    pool = ready()[0]
    assert pool["kind"] == "Pool" and pool["image"].startswith("genesis/snapshot:monorepo-")
    assert set(pool["claimedLastHour"]) == {"hot", "warm"}


def test_the_openapi_schema_describes_the_api(genesis_api):
    schema = httpx.get(f"{genesis_api.url}/openapi.json").json()
    assert schema["info"]["title"] == "Genesis"
    for path in ("/api/v1/experiments", "/api/v1/experiments/{name}", "/api/v1/experiments/{name}/logs",
                 "/api/v1/watch/experiments", "/api/v1/sandboxes", "/api/v1/pools", "/api/v1/images",
                 "/api/v1/reports"):
        assert path in schema["paths"], path


# -- watch ------------------------------------------------------------------------------


def _watch(url: str, token: str, params: dict, events: queue.Queue, stop: threading.Event) -> None:
    with httpx.stream("GET", f"{url}/api/v1/watch/experiments", params=params, timeout=httpx.Timeout(10, read=60),
                      headers={"Authorization": f"Bearer {token}"}) as response:
        events.put(("status", response.status_code))
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.put(("event", json.loads(line[6:])))
            if stop.is_set():
                return


def test_watch_streams_the_changes_of_matching_experiments(genesis_api, operator):
    mine = instance()
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(genesis_api.url, genesis_api.tokens["viewer"],
                                                    {"labelSelector": f"instance_id={mine}"}, events, stop),
                               daemon=True)
    watcher.start()
    assert events.get(timeout=10) == ("status", 200)
    # Running for a second, longer than a watch poll: it is seen Running whatever a warm pool saves.
    body = request_body(instance_id=mine, changes={"files": [{"path": "nap.py",
                                                              "content": "import time\ntime.sleep(1.5)\n"}]},
                        validation={"command": ["python3", "nap.py"], "report": "exit_code"})
    other = request_body(instance_id=instance())
    operator.post("/api/v1/experiments", json=other)
    operator.post("/api/v1/experiments", json=body)
    phases = []
    while "Succeeded" not in phases:
        kind, event = events.get(timeout=240)
        assert event["object"]["metadata"]["labels"]["instance_id"] == mine  # the selector holds
        assert event["type"] in ("ADDED", "MODIFIED")
        phases.append(event["object"]["status"]["phase"])
    stop.set()
    # Changes between two polls coalesce (as a Kubernetes watch's do): the phases seen are in order.
    order = ["Pending", "Building", "Running", "Collecting", "Succeeded"]
    assert [order.index(p) for p in phases] == sorted(order.index(p) for p in phases), phases
    assert phases[0] in ("Pending", "Building", "Running") and "Running" in phases and len(phases) >= 2, phases
    finished(operator, other["experiment_id"])


# -- sessions (the web UI's) -------------------------------------------------------------


def test_a_session_cookie_is_httponly_strict_and_mutations_need_its_csrf_token(genesis_api, operator):
    body = request_body(instance_id=instance(), priority=-50)
    operator.post("/api/v1/experiments", json=body)
    with httpx.Client(base_url=genesis_api.url) as browser:
        is_status(browser.post("/api/v1/session", json={"token": "gns_wrong"}), 401, "unauthorized")
        opened = browser.post("/api/v1/session", json={"token": genesis_api.tokens["operator"]})
        cookie = opened.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "genesis_session=" in cookie
        csrf = opened.json()["csrfToken"]
        assert browser.get("/api/v1/whoami").json()["role"] == "operator"
        name = body["experiment_id"]
        is_status(browser.delete(f"/api/v1/experiments/{name}"), 403, "csrf_failed")
        is_status(browser.delete(f"/api/v1/experiments/{name}", headers={"X-CSRF-Token": "forged"}), 403,
                  "csrf_failed")
        assert browser.delete(f"/api/v1/experiments/{name}", headers={"X-CSRF-Token": csrf}).status_code == 202
        browser.delete("/api/v1/session", headers={"X-CSRF-Token": csrf})
        is_status(browser.get("/api/v1/whoami"), 401, "unauthorized")


# -- limits, rotation, metrics, binding ------------------------------------------------------


def test_a_token_over_its_rate_is_429_with_retry_after(tmp_path, sample_repo):
    server = GenesisServer(tmp_path, sample_repo, rate_limit_per_s=1.0, burst=5).start()
    try:
        with server.client("viewer") as viewer, server.client("operator") as operator:
            answers = [viewer.get("/api/v1/whoami") for _ in range(8)]
            assert [a.status_code for a in answers[:5]] == [200] * 5
            limited = is_status(answers[-1], 429, "rate_limited")
            assert "test-viewer" in limited["message"] and int(answers[-1].headers["retry-after"]) >= 1
            assert operator.get("/api/v1/whoami").status_code == 200  # per token: others are not slowed
    finally:
        server.stop()


def test_tokens_rotate_without_a_restart(tmp_path, sample_repo):
    from orchestrator.domain.access import digest, new_token

    server = GenesisServer(tmp_path, sample_repo).start()
    try:
        with server.client("viewer") as old:
            assert old.get("/api/v1/whoami").status_code == 200
            fresh = new_token()
            doc = yaml.safe_load(server.tokens_file.read_text())
            doc["tokens"] = [t for t in doc["tokens"] if t["name"] != "test-viewer"]
            doc["tokens"].append({"name": "rotated", "role": "viewer", "sha256": digest(fresh)})
            server.tokens_file.write_text(yaml.safe_dump(doc))
            wait_until(lambda: old.get("/api/v1/whoami").status_code == 401, timeout_s=10,
                       what="the revoked token to be refused")
            headers = {"Authorization": f"Bearer {fresh}"}
            assert httpx.get(f"{server.url}/api/v1/whoami", headers=headers).json()["name"] == "rotated"
            # A file that does not parse keeps the last good tokens (the file is read on a request).
            server.tokens_file.write_text("tokens: [{name: broken")
            wait_until(lambda: httpx.get(f"{server.url}/api/v1/whoami", headers=headers).status_code == 200
                       and "tokens file not reloaded" in server.log.read_text(), timeout_s=10,
                       what="the broken file to be noticed, the last good tokens kept")
    finally:
        server.stop()


def test_requests_are_metrics_by_route_template(genesis_api, operator):
    operator.get("/api/v1/experiments/metric-probe-1")
    operator.get("/api/v1/experiments/metric-probe-2")
    text = httpx.get(genesis_api.metrics_url).text
    line = next(line for line in text.splitlines() if line.startswith("genesis_api_requests_total{")
                and 'route="/api/v1/experiments/{name}"' in line and 'status="404"' in line)
    assert float(line.rsplit(" ", 1)[1]) >= 2
    assert "metric-probe" not in text  # ids never become labels
    assert "genesis_api_request_duration_seconds_bucket" in text


def test_a_non_loopback_bind_without_tokens_refuses_to_start(tmp_path, sample_repo):
    import subprocess
    import sys

    from helpers import ROOT

    config = tmp_path / "genesis.yaml"
    config.write_text(json.dumps({"home": str(tmp_path), "nats": {"url": None}, "metrics_port": 0,
                                  "repos": {"monorepo": {"path": str(sample_repo)}},
                                  "api": {"address": "0.0.0.0", "port": free_port()}}))
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli.main", "--config", str(config), "serve",
                           "--no-nats"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "api.address 0.0.0.0 is not loopback: set api.tokens_file" in done.stderr and "(bad_config)" in done.stderr


def test_without_tokens_a_loopback_caller_is_the_local_operator_but_no_other_site_is(tmp_path, sample_repo):
    server = GenesisServer(tmp_path, sample_repo, with_tokens=False).start()
    try:
        with server.client(None) as local:
            assert local.get("/api/v1/whoami").json()["name"] == "local"
            body = request_body(instance_id=instance(), priority=-50)
            # A page of another site posting a "simple" request (no preflight) is refused...
            forged = local.post("/api/v1/experiments", content=json.dumps(body),
                                headers={"Origin": "https://evil.example", "Content-Type": "text/plain"})
            is_status(forged, 403, "csrf_failed")
            is_status(local.get(f"/api/v1/experiments/{body['experiment_id']}"), 404, "not_found")  # not recorded
            # ...the UI's own origin and callers without one (CLI, curl) are not.
            same = local.post("/api/v1/experiments", json=body, headers={"Origin": server.url})
            assert same.status_code == 201
            assert local.delete(f"/api/v1/experiments/{body['experiment_id']}").status_code == 202
    finally:
        server.stop()


def test_every_response_carries_the_security_headers(genesis_api):
    for path in ("/", "/api/v1/experiments", "/api/v1/nothing-here"):
        headers = httpx.get(f"{genesis_api.url}{path}").headers
        assert "default-src 'self'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"

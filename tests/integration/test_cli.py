"""The `genesis` CLI as an operator uses it, against real Docker and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from helpers import ROOT, request_body, sandboxes_of

pytestmark = pytest.mark.docker


@pytest.fixture
def cli(config_file, monkeypatch, capsys):
    """Run `genesis ARGS` in-process; returns (exit code, stdout, stderr)."""
    from orchestrator.cli.main import main

    monkeypatch.setenv("GENESIS_CONFIG", str(config_file))

    def run(*args: str):
        code = main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write(tmp_path, body: dict, suffix: str = ".json") -> str:
    path = tmp_path / f"{body.get('experiment_id', 'x')}{suffix}"
    path.write_text(yaml.safe_dump(body) if suffix == ".yaml" else json.dumps(body))
    return str(path)


def test_apply_get_describe_logs_round_trip(cli, tmp_path):
    body = request_body(instance_id=f"cli-{uuid.uuid4().hex[:6]}")
    path = write(tmp_path, body, ".yaml")
    assert cli("apply", "-f", path)[:2] == (0, f"experiment/{body['experiment_id']} created\n")
    assert cli("apply", "-f", path)[:2] == (0, f"experiment/{body['experiment_id']} unchanged\n")

    code, out, _ = cli("get", "experiments", "-l", f"instance_id={body['instance_id']}")
    assert code == 0 and body["experiment_id"] in out and "Pending" in out

    assert cli("serve", "--once")[0] == 0

    code, out, _ = cli("get", "experiment", body["experiment_id"], "-o", "json")
    doc = json.loads(out)
    assert doc["kind"] == "Experiment" and doc["status"]["phase"] == "Succeeded"
    assert doc["status"]["recommendation"] == "merge"
    assert cli("get", "experiments", "-l", f"instance_id={body['instance_id']}", "-o", "name")[1] == \
        f"experiment/{body['experiment_id']}\n"
    assert yaml.safe_load(cli("get", "experiment", body["experiment_id"], "-o", "yaml")[1])["metadata"]["name"] == \
        body["experiment_id"]

    code, out, _ = cli("describe", "experiment", body["experiment_id"])
    assert code == 0 and "Metrics:" in out and "Baseline" in out and "preserved" in out

    code, out, _ = cli("logs", body["experiment_id"])
    assert code == 0 and "20 passed" in out


def test_errors_are_one_clear_line_with_exit_code_1(cli, tmp_path):
    code, _, err = cli("describe", "experiment", "does-not-exist")
    assert code == 1 and err == 'Error from server (NotFound): experiments "does-not-exist" not found\n'

    hostile = request_body(changes={"files": [{"path": "/etc/passwd", "content": "x"}]})
    code, _, err = cli("apply", "-f", write(tmp_path, hostile))
    assert code == 1 and "(invalid_path)" in err and err.count("\n") == 1
    code, out, _ = cli("get", "experiment", hostile["experiment_id"], "-o", "json")
    assert json.loads(out)["status"]["reason"] == "invalid_path"

    code, _, err = cli("get", "widgets")
    assert code == 1 and "widgets" in err


def test_delete_pending_cancels_without_running(cli, tmp_path, docker_client):
    body = request_body()
    cli("apply", "-f", write(tmp_path, body))
    code, out, _ = cli("delete", "experiment", body["experiment_id"])
    assert code == 0 and "deleted (cancelling" in out
    # Intent only: the controller's planner fails it.
    assert json.loads(cli("get", "experiment", body["experiment_id"], "-o", "json")[1])["status"]["phase"] == "Pending"
    assert cli("serve", "--once")[0] == 0
    doc = json.loads(cli("get", "experiment", body["experiment_id"], "-o", "json")[1])
    assert doc["status"]["phase"] == "Failed" and doc["status"]["outcome"]["error"]["code"] == "cancelled"
    assert sandboxes_of(docker_client, body["experiment_id"]) == []


def test_delete_running_experiment_rolls_back(cli, tmp_path, config_file, docker_client):
    body = request_body(changes={"files": [{"path": "slow.py", "content": "import time\ntime.sleep(120)\n"}]},
                        validation={"command": ["python3", "slow.py"], "report": "exit_code"}, timeout_ms=300_000, priority=100)
    cli("apply", "-f", write(tmp_path, body))
    env = dict(os.environ, GENESIS_CONFIG=str(config_file))
    serve = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "serve"], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        phase = _wait_for(cli, body["experiment_id"], lambda d: d["status"]["phase"] == "Running"
                          and d["status"]["sandbox"] and sandboxes_of(docker_client, body["experiment_id"]))
        assert phase
        code, out, _ = cli("delete", "experiment", body["experiment_id"], "--wait", "--timeout", "90")
        assert code == 0 and out.endswith("Failed (cancelled), no sandbox kept\n")  # the controller has acted
        final = json.loads(cli("get", "experiment", body["experiment_id"], "-o", "json")[1])
        assert final["status"]["outcome"]["error"]["code"] == "cancelled"
        assert sandboxes_of(docker_client, body["experiment_id"]) == []
    finally:
        serve.terminate()
        serve.wait(timeout=30)


def test_delete_preserved_sandbox_removes_it(cli, tmp_path, docker_client):
    body = request_body()
    cli("apply", "-f", write(tmp_path, body))
    cli("serve", "--once")
    assert len(sandboxes_of(docker_client, body["experiment_id"])) == 1
    code, out, _ = cli("delete", "experiment", body["experiment_id"])
    assert code == 0 and "removes its preserved sandbox" in out
    assert len(sandboxes_of(docker_client, body["experiment_id"])) == 1  # intent only: the controller removes it
    assert cli("serve", "--once")[0] == 0
    assert sandboxes_of(docker_client, body["experiment_id"]) == []
    doc = json.loads(cli("get", "experiment", body["experiment_id"], "-o", "json")[1])
    assert doc["status"]["preservedUntil"] is None and doc["status"]["phase"] == "Succeeded"


def _wait_for(cli, experiment_id: str, predicate, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = json.loads(cli("get", "experiment", experiment_id, "-o", "json")[1])
        if predicate(doc):
            return doc
        time.sleep(0.3)
    raise AssertionError(f"{experiment_id} did not reach the expected state in {timeout_s}s: {doc['status']}")

"""``genesis --server URL ...``: the CLI over the HTTP API of a real ``genesis
serve`` (real Docker, SQLite), printing what local mode prints.

Local mode here is the server's own configuration (``genesis_api.config``):
the same SQLite database, read in-process, so remote and local answers can be
compared byte for byte (-o json|yaml), and tables modulo the AGE column.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid

import pytest
import yaml

from helpers import ROOT, Lines, request_body, wait_until

pytestmark = pytest.mark.docker

AGE = re.compile(r"(?<=\s)\d+[smhd](?=\s|$)", re.MULTILINE)  # "3s", "2m": may differ by a tick between calls
SLOW = {"changes": {"files": [{"path": "slow.py", "content": "import time\ntime.sleep(120)\n"}]},
        "validation": {"command": ["python3", "slow.py"], "report": "exit_code"}, "timeout_ms": 300_000,
        "priority": 100}


def _main(capsys, argv: list[str]):
    from orchestrator.cli.main import main

    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def remote(genesis_api, monkeypatch, capsys):
    """``genesis --server URL ARGS`` in-process with ``role``'s token (GENESIS_TOKEN); (exit code, stdout, stderr)."""
    def run(*args: str, role: str = "operator"):
        monkeypatch.setenv("GENESIS_TOKEN", genesis_api.tokens[role] if role in genesis_api.tokens else role)
        return _main(capsys, ["--server", genesis_api.url, *args])
    return run


@pytest.fixture
def local(genesis_api, capsys):
    """``genesis ARGS`` in local mode on the server's own configuration and database."""
    return lambda *args: _main(capsys, ["--config", str(genesis_api.config), *args])


def _modulo_age(text: str) -> list[list[str]]:
    """A table's cells with every age masked (a column's width follows its longest age)."""
    return [AGE.sub("AGE", line).split() for line in text.splitlines()]


def _write(tmp_path, body: dict) -> str:
    path = tmp_path / f"{body['experiment_id']}.yaml"
    path.write_text(yaml.safe_dump(body))
    return str(path)


def _doc(remote, experiment_id: str) -> dict:
    code, out, err = remote("get", "experiment", experiment_id, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def _wait(remote, experiment_id: str, predicate, *, timeout_s: float = 180) -> dict:
    found = {}

    def reached() -> bool:
        found["doc"] = _doc(remote, experiment_id)
        return predicate(found["doc"])
    wait_until(reached, timeout_s=timeout_s, what=f"{experiment_id} to reach the expected state", poll_s=0.5)
    return found["doc"]


def _running(doc: dict) -> bool:
    return doc["status"]["phase"] == "Running" and bool(doc["status"]["sandbox"])


def _cli_process(genesis_api, tmp_path, *args: str) -> subprocess.Popen:
    """``genesis --server URL ARGS`` as its own process (for what runs until stopped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENESIS_")}
    env.update(GENESIS_TOKEN=genesis_api.tokens["viewer"], GENESIS_CONTEXTS=str(tmp_path / "no-contexts"),
               PYTHONPATH=str(ROOT), PYTHONFAULTHANDLER="1")  # SIGABRT prints where each thread is
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "--server", genesis_api.url, *args],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _interrupt(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops a watch; one that does not end fails with where it was stuck."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(timeout=30)
        pytest.fail("the watch did not end at SIGINT; its threads:\n" + proc.stderr.read()[-6000:])


def test_remote_prints_what_local_prints(remote, local, tmp_path):
    instance = f"remote-{uuid.uuid4().hex[:6]}"
    body = request_body(instance_id=instance)
    eid = body["experiment_id"]
    assert remote("apply", "-f", _write(tmp_path, body)) == (0, f"experiment/{eid} created\n", "")
    assert remote("apply", "-f", _write(tmp_path, body)) == (0, f"experiment/{eid} unchanged\n", "")

    # A rejected request: exit 1, one line with its code, and a record of the refusal.
    hostile = request_body(instance_id=instance, changes={"files": [{"path": "/etc/passwd", "content": "x"}]})
    code, out, err = remote("apply", "-f", _write(tmp_path, hostile))
    assert (code, out) == (1, "") and err.startswith(f"error: experiment/{hostile['experiment_id']} rejected: ")
    assert err.endswith("(invalid_path)\n") and err.count("\n") == 1

    done = _wait(remote, eid, lambda d: d["status"]["phase"] in ("Succeeded", "Failed"))
    assert done["status"]["recommendation"] == "merge", done["status"]

    for args in (["get", "experiment", eid, "-o", "json"], ["get", "experiment", eid, "-o", "yaml"],
                 ["get", "experiments", "-l", f"instance_id={instance}", "-o", "json"],
                 ["get", "experiments", "-l", f"instance_id={instance}", "-o", "name"],
                 ["get", "experiments", "--field-selector", "status.phase=Failed,spec.instance_id=" + instance,
                  "-o", "yaml"],
                 ["logs", eid], ["logs", eid, "--tail", "3"], ["logs", eid, "--build"]):
        assert remote(*args) == local(*args), args
    for args in (["get", "experiments", "-l", f"instance_id={instance}"],
                 ["get", "experiments", "-l", f"instance_id={instance}", "-o", "wide"],
                 ["describe", "experiment", eid]):
        (rcode, rout, rerr), (lcode, lout, lerr) = remote(*args), local(*args)
        assert (rcode, _modulo_age(rout), rerr) == (lcode, _modulo_age(lout), lerr), args
    assert remote("get", "experiments", "-l", f"instance_id={instance}", "-o", "name")[1] == \
        f"experiment/{hostile['experiment_id']}\nexperiment/{eid}\n"  # newest first
    code, out, _ = remote("describe", "experiment", eid)
    assert code == 0 and "Metrics:" in out and "test-operator" in out  # the server records the token's name
    assert "20 passed" in remote("logs", eid)[1]

    # Pages: the same continue token either way, and the second page after it.
    first = remote("get", "experiments", "-l", f"instance_id={instance}", "--limit", "1", "-o", "name")
    assert first == local("get", "experiments", "-l", f"instance_id={instance}", "--limit", "1", "-o", "name")
    assert first[1] == f"experiment/{hostile['experiment_id']}\n"
    token = first[2].split("--continue ")[1].strip()
    assert remote("get", "experiments", "-l", f"instance_id={instance}", "--limit", "1", "--continue", token,
                  "-o", "name")[1] == f"experiment/{eid}\n"


def test_errors_are_the_same_lines_and_exit_codes(remote, local, genesis_api, tmp_path):
    missing = ("describe", "experiment", "does-not-exist")
    assert remote(*missing) == local(*missing) == \
        (1, "", 'Error from server (NotFound): experiments "does-not-exist" not found\n')
    assert remote("get", "experiment", "does-not-exist") == local("get", "experiment", "does-not-exist")
    assert remote("get", "widgets") == local("get", "widgets")
    assert remote("get", "experiments", "-l", "risk_level>low") == local("get", "experiments", "-l", "risk_level>low")

    body = request_body()
    assert remote("apply", "-f", _write(tmp_path, body))[0] == 0
    code, out, err = remote("delete", "experiment", body["experiment_id"], role="viewer")
    assert (code, out) == (1, "") and err.startswith("error: ") and err.endswith("(forbidden)\n")
    for token in ("expired", "not-a-token"):
        code, _, err = remote("get", "experiments", role=token)
        assert code == 1 and err.startswith("error: ") and err.endswith("(unauthorized)\n"), err
    code, _, err = remote("db", "current")
    assert code == 1 and err.endswith("(local_only)\n") and "--server" in err


def test_get_sandboxes_pools_images_and_reports_as_local(remote, local):
    for kind in ("sandboxes", "pools", "images", "reports"):
        for output in ([], ["-o", "json"], ["-o", "name"]):
            args = ["get", kind, *output]
            seen = {}

            def same() -> bool:  # a sandbox may come or go between the two calls: ask again
                seen["remote"], seen["local"] = remote(*args), local(*args)
                return _modulo_age(seen["remote"][1]) == _modulo_age(seen["local"][1])
            wait_until(same, timeout_s=60, what=f"the same {args} remote and local")
            assert seen["remote"][0] == 0, seen["remote"]


def test_watch_prints_a_change_of_a_submitted_experiment(remote, genesis_api, tmp_path):
    instance = f"watch-{uuid.uuid4().hex[:6]}"
    proc = _cli_process(genesis_api, tmp_path, "get", "experiments", "-w", "-l", f"instance_id={instance}")
    lines = Lines(proc.stdout)
    try:
        assert lines.next() == "No resources found.\n"
        # It runs for a second: longer than a watch poll, so it is seen on its way (a trivial
        # one can go from Pending to Running between two polls, with a warm pool).
        body = request_body(instance_id=instance, changes={"files": [{"path": "nap.py", "content":
                                                                     "import time\ntime.sleep(1.5)\n"}]},
                            validation={"command": ["python3", "nap.py"], "report": "exit_code"})
        assert remote("apply", "-f", _write(tmp_path, body))[0] == 0
        seen = lines.until(lambda line: line.split()[4:5] in (["Succeeded"], ["Failed"]), timeout_s=180)
    finally:
        _interrupt(proc)
    assert all(line.split()[0] == body["experiment_id"] for line in seen), seen
    # Added, then changed on its way; changes between two polls coalesce, so it may first show as
    # Building or Running, but it is seen before it ends.
    assert seen[0].split()[4] in ("Pending", "Building", "Running") and len(seen) >= 2, seen
    assert proc.returncode == 130, proc.stderr.read()


def test_logs_follow_streams_a_running_sandbox_until_it_ends(remote, genesis_api, tmp_path):
    ticker = "import time\nfor i in range(15):\n    print(f'tick {i}', flush=True)\n    time.sleep(1)\n"
    body = request_body(changes={"files": [{"path": "ticker.py", "content": ticker}]},
                        validation={"command": ["python3", "ticker.py"], "report": "exit_code"}, priority=100)
    assert remote("apply", "-f", _write(tmp_path, body))[0] == 0
    _wait(remote, body["experiment_id"], _running)
    proc = _cli_process(genesis_api, tmp_path, "logs", "-f", body["experiment_id"])
    lines = Lines(proc.stdout)
    try:
        seen = lines.until(lambda line: line == "tick 14\n", timeout_s=90)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()  # the stream ends with the sandbox
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ticks = [line for line in seen if line.startswith("tick ")]
    assert ticks == [f"tick {i}\n" for i in range(15 - len(ticks), 15)] and len(ticks) >= 2  # streamed, in order


def test_delete_wait_of_a_slow_experiment(remote, tmp_path, docker_client):
    body = request_body(**SLOW)
    eid = body["experiment_id"]
    assert remote("apply", "-f", _write(tmp_path, body))[0] == 0
    _wait(remote, eid, _running)
    code, out, err = remote("delete", "experiment", eid, "--wait", "--timeout", "90")
    assert code == 0, err
    assert out.startswith(f'experiment "{eid}" deleted (cancelling') and \
        out.endswith("Failed (cancelled), no sandbox kept\n")
    assert _doc(remote, eid)["status"]["outcome"]["error"]["code"] == "cancelled"


def test_a_context_names_the_server_and_its_token(genesis_api, tmp_path, monkeypatch, capsys):
    contexts_file = tmp_path / "contexts"
    token_file = tmp_path / "viewer.token"
    token_file.write_text(genesis_api.tokens["viewer"] + "\n")
    monkeypatch.delenv("GENESIS_TOKEN", raising=False)
    monkeypatch.setenv("GENESIS_CONTEXTS", str(contexts_file))
    assert _main(capsys, ["config", "set-context", "test", "--server", genesis_api.url, "--token-file",
                          str(token_file), "--current"])[0] == 0
    assert oct(contexts_file.stat().st_mode & 0o777) == "0o600"
    code, out, _ = _main(capsys, ["config", "get-contexts"])
    assert code == 0 and genesis_api.tokens["viewer"] not in out and genesis_api.url in out
    code, out, err = _main(capsys, ["get", "experiments", "--limit", "1", "-o", "json"])
    assert code == 0 and json.loads(out)["kind"] == "List", err
    code, _, err = _main(capsys, ["delete", "experiment", "anything"])  # the viewer's token went along
    assert code == 1 and err.endswith("(forbidden)\n")
    code, _, err = _main(capsys, ["tokens", "list"])
    assert code == 1 and err.endswith("(local_only)\n") and 'context "test"' in err

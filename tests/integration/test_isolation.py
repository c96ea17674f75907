"""Hostile sandboxes against a real Docker Engine (SPEC §5 isolation).

Each test submits a change that adds ``hostile.py`` and runs it as the
validation command. Figures the hostile code observes come back through
``/genesis/out/metrics.json`` (``metrics.custom``), so the assertions are
about what the sandbox could and could not do, not about exit codes alone.
"""

from __future__ import annotations

import uuid

import pytest

from helpers import hostile, run_experiment, sandboxes_of

pytestmark = pytest.mark.docker

REPORT = """
import json, os
def report(**figures):
    with open(os.path.join(os.environ.get("GENESIS_OUT", "/genesis/out"), "metrics.json"), "w") as f:
        json.dump(figures, f)
"""


def custom(view) -> dict:
    assert view.outcome is not None and view.outcome.metrics is not None, view.message
    return view.outcome.metrics.custom


def test_memory_hog_ends_oom_killed(app, docker_client):
    view = run_experiment(app, hostile(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 2**20))\n",
        resources={"cpu": 1, "memory": "96Mi", "pids": 64}))
    assert view.phase.value == "Failed"
    assert view.outcome.error.code == "oom_killed", view.message
    assert sandboxes_of(docker_client, view.id) == []


def test_fork_bomb_is_contained_by_the_pids_limit(app, docker_client):
    # A real fork bomb in its own session; the parent watches /proc for the
    # number of processes the sandbox ever reached, then kills the bomb.
    script = REPORT + """
import signal, time
bomb = os.fork()
if bomb == 0:
    os.setsid()
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
peak, eagain = 0, 0
deadline = time.time() + 4
while time.time() < deadline:
    peak = max(peak, sum(1 for p in os.listdir("/proc") if p.isdigit()))
    time.sleep(0.05)
try:
    child = os.fork()
except OSError:
    eagain = 1
else:
    if child == 0:
        os._exit(0)
os.killpg(bomb, signal.SIGKILL)
report(peak_processes=peak, parent_saw_eagain=eagain, parent_alive=1)
"""
    view = run_experiment(app, hostile(script, resources={"cpu": 1, "memory": "256Mi", "pids": 64}))
    figures = custom(view)
    assert figures["parent_alive"] == 1
    assert figures["peak_processes"] <= 64
    assert figures["peak_processes"] >= 32  # the bomb really ran into the limit
    assert figures["parent_saw_eagain"] == 1
    assert view.phase.value == "Succeeded"


def test_infinite_loop_ends_as_timeout_and_is_torn_down(app, docker_client):
    view = run_experiment(app, hostile("while True:\n    pass\n", timeout_ms=3000))
    assert view.outcome.error.code == "timeout"
    assert sandboxes_of(docker_client, view.id) == []
    actions = [h.action for h in app.store.history(view.id)]
    assert "deleted" in actions


def test_network_is_unreachable(app):
    script = REPORT + """
import socket
def fails(fn):
    try:
        fn()
    except OSError:
        return 1
    return 0
connect = fails(lambda: socket.create_connection(("1.1.1.1", 53), timeout=3))
resolve = fails(lambda: socket.getaddrinfo("deb.debian.org", 80))
report(connect_failed=connect, dns_failed=resolve, interfaces=len(os.listdir("/sys/class/net")))
"""
    figures = custom(run_experiment(app, hostile(script)))
    assert figures == {"connect_failed": 1.0, "dns_failed": 1.0, "interfaces": 1.0}  # loopback only


def test_writes_outside_the_workspace_fail(app):
    script = REPORT + """
targets = ["/etc/genesis-x", "/usr/genesis-x", "/genesis-x", "/opt/genesis/runner.py",
           "/genesis/in/bundle.json", "/var/tmp/genesis-x", "/root/genesis-x", "/home/genesis-x"]
blocked = 0
for path in targets:
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError:
        blocked += 1
allowed = 0
for path in ["/workspace/ok.txt", "/tmp/ok.txt"]:  # /genesis/out is the evidence: see the hostile corpus
    with open(path, "w") as f:
        f.write("x")
    allowed += 1
report(blocked=blocked, targets=len(targets), allowed=allowed)
"""
    figures = custom(run_experiment(app, hostile(script)))
    assert figures["blocked"] == figures["targets"] == 8
    assert figures["allowed"] == 2


def test_host_filesystem_and_privileges_are_out_of_reach(app, tmp_path):
    marker = f"/tmp/genesis-host-marker-{uuid.uuid4().hex}"
    with open(marker, "w") as handle:
        handle.write("host secret")
    try:
        script = REPORT + f"""
status = open("/proc/self/status").read()
fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
report(marker_visible=int(os.path.exists({marker!r})),
       docker_socket=int(os.path.exists("/var/run/docker.sock") or os.path.exists("/run/docker.sock")),
       uid=os.getuid(), cap_eff=int(fields["CapEff"].strip(), 16),
       no_new_privs=int(fields["NoNewPrivs"].strip()),
       sees_host_pids=int(any(p.isdigit() and int(p) > 1000 for p in os.listdir("/proc"))))
"""
        figures = custom(run_experiment(app, hostile(script)))
    finally:
        import os
        os.unlink(marker)
    assert figures["marker_visible"] == 0
    assert figures["docker_socket"] == 0
    assert figures["uid"] == 1000
    assert figures["cap_eff"] == 0
    assert figures["no_new_privs"] == 1
    assert figures["sees_host_pids"] == 0


def test_cpu_quota_is_enforced(app):
    # Two busy threads' worth of processes under a 0.5 CPU quota: the cgroup
    # accounting must show no more than about half a core over the run.
    script = REPORT + """
import multiprocessing, time
def burn(seconds):
    end = time.time() + seconds
    while time.time() < end:
        pass
procs = [multiprocessing.Process(target=burn, args=(2,)) for _ in range(2)]
start = time.time()
[p.start() for p in procs]
[p.join() for p in procs]
report(wall=time.time() - start)
"""
    view = run_experiment(app, hostile(script, resources={"cpu": 0.5, "memory": "256Mi", "pids": 64}))
    metrics = view.outcome.metrics
    assert metrics.cpu_usage_percent is not None
    assert metrics.cpu_usage_percent <= 60.0  # 50% quota, plus scheduler slack


def test_patch_that_does_not_apply_fails_with_patch_failed(app, docker_client):
    patch = ("diff --git a/sparc/mathutil.py b/sparc/mathutil.py\n--- a/sparc/mathutil.py\n"
             "+++ b/sparc/mathutil.py\n@@ -1,3 +1,3 @@\n-this line is not in the file\n+replacement\n"
             " neither is this\n")
    from helpers import request_body
    view = run_experiment(app, request_body(changes={"patch": patch}))
    assert view.phase.value == "Failed"
    assert view.outcome.error.code == "patch_failed"
    assert "git apply failed" in view.outcome.error.message
    assert sandboxes_of(docker_client, view.id) == []


def test_a_write_through_a_symlink_is_refused_even_inside_the_tree(app):
    # A patch may create a symlink that stays inside the tree (one that leaves
    # it is refused at intake, see tests/unit/test_paths.py), but no file of the
    # change is written through one: `link -> .` then `link/requirements.txt`
    # would rewrite another path than the one intake checked.
    patch = ("diff --git a/link b/link\nnew file mode 120000\n--- /dev/null\n+++ b/link\n@@ -0,0 +1 @@\n"
             "+sparc\n\\ No newline at end of file\n")
    from helpers import request_body
    view = run_experiment(app, request_body(changes={"patch": patch, "files": [
        {"path": "link/extra.py", "content": "x = 1\n"}]}))
    assert (view.phase.value, view.reason) == ("Failed", "patch_failed"), view.message
    assert "through a symlink" in view.message
"""One contract, two runtimes: every test here runs against the Docker runtime
(a real engine), under runc and under gVisor's runsc (``sandbox_runtime``),
and the kubernetes runtime (the real client, the API emulator, and the
Docker-backed test kubelet running the Pods it creates).

The contract is what the pipeline relies on (orchestrator/runtimes/base.py):
create delivers the bundle and does not start; start runs the runner; wait
returns the final state or None; kill stops but keeps the output readable;
collect returns /genesis/out and the log tail; list finds by labels; remove
is idempotent; OOM and isolation look the same from above.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest

from helpers import RUN_ID, TEST_LABEL
from orchestrator.errors import SandboxGone
from orchestrator.runtimes.base import LABEL_EXPERIMENT, SandboxSpec
from orchestrator.runtimes.docker import DockerRuntime

pytestmark = pytest.mark.docker
# This run's installation (tests/conftest.py): a `genesis serve` of the "default" installation on
# the same engine would reap sandboxes labelled as its own between create and inspect.
INSTALLATION = f"test-{RUN_ID}"


@pytest.fixture(params=["docker", "docker-runsc", "kubernetes"])
def runtime(request, app, docker_client):
    if request.param == "docker":
        return app.docker
    if request.param == "docker-runsc":  # the engine must have runsc registered (scripts/setup.sh)
        return DockerRuntime(docker_client, sandbox_runtime="runsc")
    request.getfixturevalue("kubelet")
    return request.getfixturevalue("kube_runtime")


def make_spec(runtime, image: str, script: str, **overrides) -> SandboxSpec:
    name = f"genesis-contract-{uuid.uuid4().hex[:10]}"
    bundle = {"changes": {"files": [{"path": "probe.py", "content": script}]},
              "validation": {"command": ["python3", "probe.py"]}}
    fields = dict(name=name, image=image, bundle=json.dumps(bundle).encode(), cpu=1, memory_bytes=256 * 2**20,
                  pids=128, timeout_s=120,
                  labels={"genesis.managed-by": "genesis", "genesis.installation": INSTALLATION, TEST_LABEL: RUN_ID,
                          LABEL_EXPERIMENT: name})
    fields.update(overrides)
    return SandboxSpec(**fields)


def run(coro):
    return asyncio.run(coro)


def run_to_end(runtime, spec: SandboxSpec, timeout_s: float = 90):
    run(runtime.create(spec))
    run(runtime.start(spec.name))
    state = run(runtime.wait(spec.name, timeout_s=timeout_s))
    assert state is not None, f"{spec.name} still running after {timeout_s}s"
    return state


def test_create_start_wait_collect_list_remove(runtime, snapshot_image):
    spec = make_spec(runtime, snapshot_image, "print('hello from the sandbox')\n")
    run(runtime.create(spec))
    assert run(runtime.inspect(spec.name)).status == "created"
    run(runtime.start(spec.name))
    state = run(runtime.wait(spec.name, timeout_s=90))
    assert state is not None and state.status == "exited" and state.exit_code == 0
    assert not state.oom_killed and not state.disrupted
    output = run(runtime.collect(spec.name, max_file_bytes=2**20))
    result = json.loads(output.files["result.json"])
    assert result["status"] == "completed" and result["exit_code"] == 0 and result["touched"] == ["probe.py"]
    assert "hello from the sandbox" in output.log_tail and "GENESIS-OUT" not in output.log_tail
    logs = "".join(run(_gather(runtime.logs(spec.name))))
    assert "hello from the sandbox" in logs
    # The runner's first marker precedes anything the validation printed.
    assert logs.index("GENESIS-APPLIED ") < logs.index("hello from the sandbox")
    listed = run(runtime.list({LABEL_EXPERIMENT: spec.name, "genesis.installation": INSTALLATION,
                               "genesis.managed-by": "genesis"}))
    assert [s.name for s in listed] == [spec.name] and listed[0].labels[LABEL_EXPERIMENT] == spec.name
    assert run(runtime.remove(spec.name)) is True
    assert run(runtime.inspect(spec.name)).status == "missing"
    assert run(runtime.remove(spec.name)) is False


def test_kill_and_remove_by_uid_reach_only_the_object_created(runtime, snapshot_image):
    # What a former leader holds is the id of what it created; a sandbox created
    # since under the same name (by the new leader) is out of its reach.
    spec = make_spec(runtime, snapshot_image, "import time\ntime.sleep(600)\n")
    old = run(runtime.create(spec))
    assert old and run(runtime.inspect(spec.name)).uid == old
    assert run(runtime.remove(spec.name, uid=old)) is True
    new = run(runtime.create(spec))
    assert new and new != old
    run(runtime.start(spec.name))
    assert run(runtime.remove(spec.name, uid=old)) is False
    with pytest.raises(SandboxGone):
        run(runtime.kill(spec.name, uid=old))
    assert run(runtime.wait(spec.name, timeout_s=2)) is None  # the new one still runs
    listed = run(runtime.list({LABEL_EXPERIMENT: spec.name}))
    assert [s.uid for s in listed] == [new]
    assert run(runtime.remove(spec.name, uid=new)) is True


async def _gather(stream):
    return [chunk async for chunk in stream]


def test_failing_validation_is_a_result_not_a_runtime_error(runtime, snapshot_image):
    spec = make_spec(runtime, snapshot_image, "import sys\nprint('failing on purpose')\nsys.exit(3)\n")
    state = run_to_end(runtime, spec)
    assert state.exit_code == 3  # the runtime records the validation's own exit status
    assert state.reason is None  # ... as an ordinary exit, not a disruption
    result = json.loads(run(runtime.collect(spec.name, max_file_bytes=2**20)).files["result.json"])
    assert result["exit_code"] == 3
    run(runtime.remove(spec.name))


def test_memory_hog_is_oom_killed(runtime, snapshot_image):
    spec = make_spec(runtime, snapshot_image, "blocks = []\nwhile True:\n    blocks.append(bytearray(2**24))\n",
                     memory_bytes=96 * 2**20)
    state = run_to_end(runtime, spec)
    assert state.oom_killed and state.reason == "oom_killed"
    run(runtime.remove(spec.name))


def test_kill_stops_but_keeps_output(runtime, snapshot_image):
    spec = make_spec(runtime, snapshot_image, "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    run(runtime.create(spec))
    run(runtime.start(spec.name))
    assert run(runtime.wait(spec.name, timeout_s=3)) is None  # still running
    run(runtime.kill(spec.name))
    state = run(runtime.wait(spec.name, timeout_s=60))
    assert state is not None and state.status == "exited" and state.exit_code != 0
    output = run(runtime.collect(spec.name, max_file_bytes=2**20))
    assert "sleeping" in output.log_tail
    assert "result.json" not in output.files  # killed before the runner could finish
    run(runtime.remove(spec.name))


ISOLATION_PROBE = r"""
import os, socket, json
report = {}
for path in ("/etc/genesis-probe", "/opt/genesis/probe", "/usr/probe", "/workspace-probe"):
    try:
        open(path, "w").write("x")
        report[path] = "written"
    except OSError as exc:
        report[path] = type(exc).__name__
try:
    socket.create_connection(("1.1.1.1", 53), timeout=3)
    report["network"] = "reached"
except OSError as exc:
    report["network"] = "blocked"
open("in-workspace.txt", "w").write("ok")
report["uid"] = os.getuid()
report["capeff"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
print("PROBE " + json.dumps(report))
"""


def test_isolation_holds(runtime, snapshot_image):
    spec = make_spec(runtime, snapshot_image, ISOLATION_PROBE)
    state = run_to_end(runtime, spec)
    assert state.exit_code == 0
    tail = run(runtime.collect(spec.name, max_file_bytes=2**20)).log_tail
    line = next(line for line in tail.splitlines() if line.startswith("PROBE "))
    report = json.loads(line[len("PROBE "):])
    assert report["uid"] == 1000 and int(report["capeff"], 16) == 0
    assert report["network"] == "blocked"
    assert all(report[p] != "written" for p in ("/etc/genesis-probe", "/opt/genesis/probe", "/usr/probe",
                                                 "/workspace-probe")), report
    run(runtime.remove(spec.name))


def test_unknown_sandbox(runtime):
    assert run(runtime.inspect("genesis-no-such-sandbox")).status == "missing"
    assert run(runtime.remove("genesis-no-such-sandbox")) is False
    with pytest.raises(SandboxGone):
        run(runtime.wait("genesis-no-such-sandbox", timeout_s=1))


def test_a_pooled_sandbox_takes_its_bundle_when_claimed(runtime, snapshot_image):
    """Made with no bundle (``bundle_stdin``), it runs the one ``deliver`` gives it: warm, started
    by the delivery (Kubernetes: the bundle written into the gated pod as its gate is lifted);
    hot where the runtime has them, already started with the runner waiting (Docker: stdin).
    Isolation is a fresh one's."""
    tiers = ["warm", "hot"] if runtime.capabilities.pools == "hot" else ["warm"]
    assert runtime.capabilities.pools != "none"
    for tier in tiers:
        spec = make_spec(runtime, snapshot_image, ISOLATION_PROBE, bundle=b"", bundle_stdin=True)
        run(runtime.create(spec))
        if tier == "hot":
            run(runtime.start(spec.name))
            assert run(runtime.inspect(spec.name)).status == "running"  # waiting, nothing to run yet
        else:
            assert run(runtime.inspect(spec.name)).status == "created"
        bundle = {"changes": {"files": [{"path": "probe.py", "content": ISOLATION_PROBE}]},
                  "validation": {"command": ["python3", "probe.py"]}}
        run(runtime.deliver(spec.name, json.dumps(bundle).encode(), start=tier == "warm"))
        state = run(runtime.wait(spec.name, timeout_s=90))
        assert state is not None and state.exit_code == 0, tier
        output = run(runtime.collect(spec.name, max_file_bytes=2**20))
        assert json.loads(output.files["result.json"])["touched"] == ["probe.py"]
        line = next(line for line in output.log_tail.splitlines() if line.startswith("PROBE "))
        report = json.loads(line[len("PROBE "):])
        assert report["uid"] == 1000 and int(report["capeff"], 16) == 0 and report["network"] == "blocked"
        run(runtime.remove(spec.name))


@pytest.fixture(params=["docker", "docker-runsc"])
def engine_runtime(request, app, docker_client):
    """The runtimes with exit events (``capabilities.exit_events``): Docker's."""
    return app.docker if request.param == "docker" else DockerRuntime(docker_client, sandbox_runtime="runsc")


def test_an_exit_is_told_once_the_listing_and_the_state_show_it(engine_runtime, snapshot_image):
    """A pass woken by an exit event lists the sandboxes, then collects with the sandbox's
    state: both agree with the event as soon as it is told. A removal forgets the state."""
    runtime = engine_runtime
    assert runtime.capabilities.exit_events
    spec = make_spec(runtime, snapshot_image, "print('bye')\n")
    run(runtime.create(spec))

    async def scenario():
        readers = sum(t.name == "genesis:docker-events" for t in threading.enumerate())
        told = runtime.exits({TEST_LABEL: RUN_ID})
        first = asyncio.ensure_future(anext(told))
        opened_by = time.monotonic() + 30
        while sum(t.name == "genesis:docker-events" for t in threading.enumerate()) == readers:
            assert not first.done() and time.monotonic() < opened_by, "the events stream did not open"
            await asyncio.sleep(0.01)  # its reader thread starts once the stream is open
        await runtime.start(spec.name)
        name = await asyncio.wait_for(first, 90)
        while name != spec.name:  # another sandbox of this run
            name = await asyncio.wait_for(anext(told), 90)
        listed = await runtime.list({LABEL_EXPERIMENT: spec.name})
        state = await runtime.inspect(spec.name)
        await told.aclose()
        return listed, state

    listed, state = run(scenario())
    assert [(s.name, s.status) for s in listed] == [(spec.name, "exited")]
    assert (state.status, state.exit_code, state.oom_killed) == ("exited", 0, False)
    assert run(runtime.remove(spec.name)) is True
    assert run(runtime.inspect(spec.name)).status == "missing"

"""The escape corpus: changes whose code tries to get out of its sandbox, or
at the host, other sandboxes or the runner that reports on it, each run for
real under runc and under gVisor (runsc) and asserted contained.

Every case's hostile code tries, and reports what it could do through
``/genesis/out/metrics.json`` (``metrics.custom``: 1 = it got through), so
the assertions are about what the sandbox could not do, not exit codes.
Seccomp (Docker's default profile under runc; gVisor's own kernel under
runsc) is shown active by syscalls it refuses: ``unshare``, ``keyctl``,
``mount``. Disk fill and the log flood are in ``test_disk_quota.py``.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid

import pytest

from helpers import RUN_ID, TEST_LABEL, drain, make_repo, request_body, run_experiment, sandboxes_of, wait_until

pytestmark = pytest.mark.docker

REPORT = """
import ctypes, errno, json, os, socket, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
figures = {}
def report():
    with open(os.path.join(os.environ.get("GENESIS_OUT", "/genesis/out"), "metrics.json"), "w") as f:
        json.dump(figures, f)
def tried(name, ok):
    figures[name] = 1 if ok else 0
"""


@pytest.fixture(scope="module", params=["runc", "runsc"])
def escape_app(request, tmp_path_factory, docker_client):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    home = tmp_path_factory.mktemp(f"escape-home-{request.param}")
    config = home / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(home), "extra_labels": {TEST_LABEL: RUN_ID}, "pass_interval_s": 0.2,
        "sandbox_runtime": request.param, "max_concurrent": 2,
        "installation": f"escape-{request.param}-{RUN_ID}",  # no other app's controller reaps its sandboxes
        "repos": {"monorepo": {"path": str(make_repo(home / "monorepo")), "allow_validation_override": True}},
    }))
    application = App(load_settings(config))
    yield application
    application.close()
    shutil.rmtree(home, ignore_errors=True)


def escape(script: str, **overrides) -> dict:
    """A request whose validation runs ``script``. It is not a ``.py`` file, so the verdict's
    static tamper scan (which would refuse its ctypes) leaves it to run: isolation must hold
    whatever code reaches the sandbox."""
    return request_body(changes={"files": [{"path": "escape.txt", "content": script}]},
                        validation={"command": ["python3", "escape.txt"], "report": "exit_code"}, **overrides)


def figures_of(app, script: str, **overrides) -> dict:
    view = run_experiment(app, escape(REPORT + script + "\nreport()\n", **overrides))
    assert view.outcome is not None and view.outcome.metrics is not None, (view.reason, view.message)
    return view.outcome.metrics.custom


def test_seccomp_refuses_unshare_keyctl_and_mount(escape_app):
    figures = figures_of(escape_app, """
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
tried("unshare_user", libc.unshare(CLONE_NEWUSER) == 0)
tried("unshare_mount", libc.unshare(CLONE_NEWNS) == 0)
KEYCTL_JOIN_SESSION_KEYRING, SYS_keyctl = 1, 250  # x86_64
tried("keyctl", libc.syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, None) >= 0)
os.makedirs("/tmp/m", exist_ok=True)
tried("mount", libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None) == 0)
tried("mount_cli", subprocess.run(["mount", "-t", "tmpfs", "none", "/tmp/m"], capture_output=True).returncode == 0)
""")
    if escape_app.runtime.capabilities.seccomp:
        assert figures == {"unshare_user": 0, "unshare_mount": 0, "keyctl": 0, "mount": 0, "mount_cli": 0}
    else:  # gVisor without --oci-seccomp: the calls reach gVisor's own kernel, never the host's; no mount
        assert escape_app.runtime.capabilities.kernel == "gvisor"
        assert figures["mount"] == 0 and figures["mount_cli"] == 0, figures


def test_proc_and_sys_writes_fail(escape_app):
    figures = figures_of(escape_app, """
def write(path, data):
    try:
        with open(path, "w") as f:
            f.write(data)
        return True
    except OSError:
        return False
tried("sysrq_trigger", write("/proc/sysrq-trigger", "c"))
tried("kernel_hostname", write("/proc/sys/kernel/hostname", "pwned"))
tried("vm_drop_caches", write("/proc/sys/vm/drop_caches", "3"))
tried("core_pattern", write("/proc/sys/kernel/core_pattern", "|/tmp/x"))
tried("sys_uevent", write("/sys/kernel/uevent_helper", "/tmp/x"))
tried("sys_power", write("/sys/power/state", "mem"))
""")
    assert set(figures.values()) == {0}, figures


def test_ptrace_reaches_only_the_validation_s_own_processes(escape_app):
    figures = figures_of(escape_app, """
PTRACE_ATTACH, PTRACE_DETACH = 16, 17
def attach(pid):
    ok = libc.ptrace(PTRACE_ATTACH, pid, None, None) == 0
    if ok:
        os.waitpid(pid, 0)
        libc.ptrace(PTRACE_DETACH, pid, None, None)
    return ok
child = subprocess.Popen(["sleep", "30"])
tried("own_child", attach(child.pid))  # the control: its own process is traceable
child.kill()
tried("runner", attach(os.getppid()))  # the runner that reports on it
tried("init", attach(1))
def readable(path):
    try:
        open(path, "rb").read(1)
        return True
    except OSError:
        return False
tried("runner_mem", readable(f"/proc/{os.getppid()}/mem"))
tried("runner_environ", readable(f"/proc/{os.getppid()}/environ"))
""")
    # The runner is the sandbox's init (PID 1) and not dumpable: neither attachable nor readable.
    gvisor = escape_app.runtime.capabilities.kernel == "gvisor"
    assert {k: v for k, v in figures.items() if not (gvisor and k == "runner_environ")} == \
        {"own_child": 1, "runner": 0, "init": 0, "runner_mem": 0, **({} if gvisor else {"runner_environ": 0})}
    # gVisor shows a non-dumpable process's environ (the sandbox's own variables, no secret in them).


def test_raw_sockets_dns_and_the_network_are_out_of_reach(escape_app):
    figures = figures_of(escape_app, """
def raw():
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return True
    except OSError:
        return False
def packet():
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()
        return True
    except (OSError, AttributeError):
        return False
def resolves(name):
    try:
        socket.getaddrinfo(name, 80)
        return True
    except OSError:
        return False
def connects(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return True
    except OSError:
        return False
tried("raw_icmp", raw())
tried("packet", packet())
tried("dns", resolves("example.com"))
tried("metadata", connects("169.254.169.254", 80))
tried("docker_bridge_gateway", connects("172.17.0.1", 2375))
interfaces = [name for _, name in socket.if_nameindex()]
tried("only_loopback", interfaces == ["lo"])
""")
    assert figures == {"raw_icmp": 0, "packet": 0, "dns": 0, "metadata": 0, "docker_bridge_gateway": 0,
                       "only_loopback": 1}, figures


def test_a_threads_fork_bomb_is_contained(escape_app):
    script = """
import threading
stop = threading.Event()
started = 0
try:
    for _ in range(10000):
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
except RuntimeError:
    pass
figures["threads_started"] = started
stop.set()
tried("survived", True)
"""
    view = run_experiment(escape_app, escape(REPORT + script + "\nreport()\n",
                                             resources={"cpu": 1, "memory": "512Mi", "pids": 64}))
    if escape_app.runtime.capabilities.kernel == "gvisor":
        # gVisor's threads are its own, not the host's: the pids limit does not count them
        # (ptrace platform); the memory limit ends the bomb instead.
        assert view.phase.value == "Failed" and view.outcome.error.code == "oom_killed", view.message
        return
    figures = view.outcome.metrics.custom
    assert figures["survived"] == 1
    assert figures["threads_started"] < 64  # threads count against the pids limit


def test_setuid_binaries_give_no_privileges(escape_app):
    figures = figures_of(escape_app, """
found = subprocess.run(["sh", "-c", "find / -xdev -perm -4000 -type f 2>/dev/null"], capture_output=True,
                       text=True).stdout.split()
figures["setuid_binaries"] = len(found)
su = subprocess.run(["sh", "-c", "command -v su && su -c id root < /dev/null"], capture_output=True, text=True)
tried("su_root", "uid=0" in su.stdout)
tried("euid_root", os.geteuid() == 0)
with open("/proc/self/status") as f:
    status = dict(line.split(":", 1) for line in f if ":" in line)
tried("no_new_privs", status.get("NoNewPrivs", "0").strip() == "1")
tried("capabilities", int(status.get("CapEff", "0").strip(), 16) != 0)
""")
    assert figures["su_root"] == 0 and figures["euid_root"] == 0 and figures["capabilities"] == 0, figures
    if escape_app.runtime.capabilities.kernel != "gvisor":  # gVisor's /proc/self/status has no NoNewPrivs line
        assert figures["no_new_privs"] == 1, figures  # setuid bits are ignored on exec


def submit(app, body: dict) -> str:
    result = app.intake.submit(json.dumps(body).encode())
    assert result.error is None, result.error
    return result.view.id


def running(app, experiment_id: str) -> bool:
    return app.store.get(experiment_id).phase.value == "Running"


def test_one_sandbox_cannot_see_another_s_files_or_processes(escape_app):
    app, secret = escape_app, f"genesis-secret-{uuid.uuid4().hex}"
    holder = submit(app, escape(f"""
import time
open("secret.txt", "w").write({secret!r})
open("/tmp/secret.txt", "w").write({secret!r})
time.sleep(90)
""", timeout_ms=180_000))
    controller = threading.Thread(target=drain, args=(app,), daemon=True)
    controller.start()  # one controller runs both (max_concurrent 2)
    wait_until(lambda: running(app, holder), timeout_s=180, what="the secret holder to run")
    prober = submit(app, escape(REPORT + f"""
hits = subprocess.run(["grep", "-rlsF", {secret!r}, "/", "--exclude-dir=proc", "--exclude-dir=sys"],
                      capture_output=True, text=True, timeout=150).stdout.split()
figures["files_with_secret"] = len([h for h in hits if not h.endswith("escape.txt") and "/genesis/" not in h])
cmdlines = {{}}
for p in (p for p in os.listdir("/proc") if p.isdigit()):
    try:
        cmdlines[int(p)] = open(f"/proc/{{p}}/cmdline", "rb").read()
    except OSError:
        pass
# Both run "python3 escape.txt": another one than itself would be the holder.
tried("sees_the_holder", any(b"escape.txt" in c for pid, c in cmdlines.items() if pid != os.getpid()))
figures["processes_seen"] = len(cmdlines)
report()
""", timeout_ms=170_000))
    wait_until(lambda: app.store.get(prober).phase.finished, timeout_s=200, what="the prober to finish")
    app.store.request_cancel(holder)
    controller.join(timeout=120)
    view = app.store.get(prober)
    assert view.outcome.metrics is not None, (view.reason, view.message)
    figures = view.outcome.metrics.custom
    assert figures["files_with_secret"] == 0 and figures["sees_the_holder"] == 0, figures
    assert figures["processes_seen"] < 20, figures  # a pid namespace of its own


def test_a_sandbox_that_ignores_sigterm_is_torn_down_within_a_second(escape_app, docker_client):
    app = escape_app
    experiment_id = submit(app, escape("""
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
while True:
    time.sleep(1)
""", timeout_ms=300_000))
    controller = threading.Thread(target=drain, args=(app,), daemon=True)
    controller.start()
    wait_until(lambda: running(app, experiment_id) and b"ignoring SIGTERM" in
               docker_client.containers.get(app.store.get(experiment_id).sandbox_name).logs(),
               timeout_s=180, what="the sandbox to ignore SIGTERM")
    app.store.request_cancel(experiment_id)
    controller.join(timeout=120)
    view = app.store.get(experiment_id)
    assert view.phase.value == "Failed" and view.outcome.error.code == "cancelled", view.message
    deleted = [h for h in app.store.history(experiment_id) if h.action == "deleted"]
    assert deleted and all(h.duration_ms < 1000 for h in deleted), [(h.sandbox_name, h.duration_ms) for h in deleted]
    assert sandboxes_of(docker_client, experiment_id) == []


@pytest.fixture(scope="module")
def strict_app(settings, docker_client):
    from orchestrator.app import App

    application = App(settings.model_copy(update={"sandbox_seccomp": "strict", "installation": f"strict-{RUN_ID}"}))
    yield application
    application.close()


def test_the_strict_seccomp_layer_refuses_what_the_default_profile_allows(strict_app):
    figures = figures_of(strict_app, """
PTRACE_TRACEME, SYS_io_uring_setup, SYS_personality = 0, 425, 135
tried("ptrace_traceme", libc.ptrace(PTRACE_TRACEME, 0, None, None) == 0)
params = ctypes.create_string_buffer(120)
tried("io_uring", libc.syscall(SYS_io_uring_setup, 8, params) >= 0)
tried("personality", libc.syscall(SYS_personality, 0xFFFFFFFF) >= 0)  # a query: allowed by Docker's default
tried("still_works", subprocess.run(["python3", "-c", "print(1)"], capture_output=True).stdout == b"1\\n")
""")
    assert figures == {"ptrace_traceme": 0, "io_uring": 0, "personality": 0, "still_works": 1}, figures
    # An ordinary change still runs its suite and merges under it.
    view = run_experiment(strict_app, request_body())
    assert view.recommendation.value == "merge", (view.reason, view.message)

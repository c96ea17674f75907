#!/usr/bin/env python3
"""Genesis sandbox runner: the entrypoint of every sandbox.

Runs inside the sandbox, as the unprivileged sandbox user, with only the
Python standard library (and ``python3 -I``: nothing from the workspace or
the environment can shadow its imports). It reads the bundle the
orchestrator delivered to ``/genesis/in/bundle.json``, applies the change
(file writes the orchestrator already computed from the request and the
snapshot) to ``/workspace``, the sandbox's own copy-on-write layer over the
snapshot image, and runs the validation command.

Evidence, and who can forge it: before any of the change's code runs, the
runner prints ``GENESIS-APPLIED`` (when the validation starts, what was
written) as the first marker of the log, which the change can append to
but never rewrite; the runner then exits with the validation's own exit
status, so the runtime's record of the sandbox's exit is the validation's.
Everything written afterwards (``/genesis/out``: the JUnit report,
``metrics.json``, and the runner's closing ``result.json`` with cgroup
figures, also printed behind ``GENESIS-RESULT``) is reachable by the
change's code, which runs as the same user, and the orchestrator only
cross-checks it (orchestrator/domain/evidence.py).

The validation runs with installed pytest plugins switched off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) except the repository's allow-list
(``PYTEST_PLUGINS``) and Genesis's per-test timeout
(``/opt/genesis/audit/genesis_timeout.py``), and with Genesis's audit hook
(``/opt/genesis/audit/sitecustomize.py``) loaded before any of its code.

On Kubernetes three environment variables adapt it to a pod whose root
filesystem is read-only: the bundle arrives gzip+base64 through the
downward API (``bundle.gz.b64``), ``GENESIS_SEED_FROM`` names the image's
workspace to copy into the writable ``GENESIS_WORKSPACE`` first, and
``GENESIS_OUT_TO_LOG`` (a byte budget) makes the runner print
``/genesis/out`` as a base64 tar.gz between ``GENESIS-OUT`` markers, just
before the ``GENESIS-RESULT`` line, since a pod's files die with it.

Exit codes: the validation's (a signal N is 128+N); 3 the change did not
apply, 4 the runner itself failed (told apart from a validation's 3 or 4 by
the absence of the ``GENESIS-APPLIED`` line).
"""

import base64
import gzip
import io
import shutil
import tarfile
import json
import os
import re
import subprocess
import sys
import time

WORKSPACE = os.environ.get("GENESIS_WORKSPACE", "/workspace")
IN_DIR = os.environ.get("GENESIS_IN", "/genesis/in")
OUT_DIR = os.environ.get("GENESIS_OUT", "/genesis/out")
RESULT_MARKER = "GENESIS-RESULT "
APPLIED_MARKER = "GENESIS-APPLIED "
AUDIT_DIR = os.environ.get("GENESIS_AUDIT_DIR", "/opt/genesis/audit")
OUT_MARKER = "GENESIS-OUT"
OUT_LINE_CHARS = 4096
EXIT_PATCH_FAILED, EXIT_RUNNER_FAILED = 3, 4


class ChangeFailed(Exception):
    pass


def now_ms():
    return int(time.time() * 1000)


def read_first(*paths):
    for path in paths:
        try:
            with open(path) as handle:
                return handle.read()
        except OSError:
            continue
    return None


def cgroup_usage():
    """CPU seconds, peak memory bytes and I/O operations of this sandbox's cgroup."""
    usage = {"cpu_seconds": None, "memory_peak_bytes": None, "io_operations": None}
    v1_cpu = read_first("/sys/fs/cgroup/cpuacct/cpuacct.usage", "/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage")
    if v1_cpu is not None:
        usage["cpu_seconds"] = int(v1_cpu) / 1e9
    else:
        stat = read_first("/sys/fs/cgroup/cpu.stat") or ""
        match = re.search(r"^usage_usec (\d+)", stat, re.M)
        if match:
            usage["cpu_seconds"] = int(match.group(1)) / 1e6
    peak = read_first("/sys/fs/cgroup/memory/memory.max_usage_in_bytes", "/sys/fs/cgroup/memory.peak")
    if peak is not None and peak.strip().isdigit():
        usage["memory_peak_bytes"] = int(peak)
    serviced = read_first("/sys/fs/cgroup/blkio/blkio.throttle.io_serviced")
    if serviced is not None:
        usage["io_operations"] = sum(int(line.split()[-1]) for line in serviced.splitlines() if line.startswith("Total"))
    else:
        iostat = read_first("/sys/fs/cgroup/io.stat")
        if iostat is not None:
            usage["io_operations"] = sum(int(n) for n in re.findall(r"\b[rw]ios=(\d+)", iostat))
    return usage


def safe_target(rel):
    """Absolute path for ``rel`` that provably stays inside the workspace."""
    if rel.startswith("/") or ".." in rel.split("/") or ".git" in rel.split("/"):
        raise ChangeFailed("path %r leaves the workspace" % rel)
    target = os.path.join(WORKSPACE, rel)
    root = os.path.realpath(WORKSPACE)
    # Through no symlink at all, even one inside the tree: a write to `link/x`
    # would land on another path than the one intake checked (`link -> .`).
    if os.path.realpath(os.path.dirname(target)) != os.path.normpath(os.path.join(root, os.path.dirname(rel))):
        raise ChangeFailed("path %r walks through a symlink" % rel)
    return target


def apply_file(change):
    target = safe_target(change["path"])
    if change.get("delete"):
        if not os.path.lexists(target):
            raise ChangeFailed("cannot delete %r: no such file" % change["path"])
        os.unlink(target)
        return
    if os.path.islink(target):
        os.unlink(target)  # replace the link itself, never write through it
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if change.get("symlink") is not None:
        if os.path.lexists(target):
            os.unlink(target)
        os.symlink(change["symlink"], target)
        return
    if change.get("content_b64") is not None:
        data = base64.b64decode(change["content_b64"])
    else:
        data = change.get("content", "").encode("utf-8")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if change.get("mode") in ("644", "755"):
        os.chmod(target, int(change["mode"], 8))


def apply_changes(changes):
    """Write the files the orchestrator computed; return the paths written."""
    files = changes.get("files") or []
    for change in files:
        safe_target(change["path"])
    for change in files:
        apply_file(change)
    return sorted(change["path"] for change in files)


def validation_env(bundle, written):
    """The validation's environment: no autoloaded plugins but the allow-list, the audit hook first."""
    env = dict(os.environ, GENESIS_OUT=OUT_DIR, HOME=os.environ.get("HOME", "/tmp"),
               PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
               GENESIS_AUDIT_FILES=json.dumps([os.path.join(WORKSPACE, p) for p in written]),
               GENESIS_AUDIT_RUNNER=str(os.getpid()))
    plugins = [p for p in bundle.get("pytest_plugins") or [] if re.match(r"^[A-Za-z0-9_.]+$", p)]
    if bundle.get("test_timeout_s") and os.path.isfile(os.path.join(AUDIT_DIR, "genesis_timeout.py")):
        plugins.append("genesis_timeout")  # one hanging test fails alone
        env["GENESIS_TEST_TIMEOUT_S"] = str(float(bundle["test_timeout_s"]))
    if plugins:
        env["PYTEST_PLUGINS"] = ",".join(plugins)
    else:
        env.pop("PYTEST_PLUGINS", None)
    if os.path.isdir(AUDIT_DIR):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [AUDIT_DIR, os.environ.get("PYTHONPATH")]))
    return env


def exit_status(returncode):
    """A shell's view of a child's status: a signal N is 128+N."""
    return 128 - returncode if returncode < 0 else min(returncode, 255)


def run_validation(validation, result, env, written):
    workdir = safe_target(validation.get("workdir", ".")) if validation.get("workdir", ".") != "." else WORKSPACE
    before = cgroup_usage()
    result["validation_started_ms"] = now_ms()
    # The first marker of the log, before any of the change's code runs.
    print(APPLIED_MARKER + json.dumps({"validation_started_ms": result["validation_started_ms"],
                                       "touched": written}, sort_keys=True), flush=True)
    print("genesis-runner: validation %s" % json.dumps(validation["command"]), flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(validation["command"], cwd=workdir, env=env)
        result["exit_code"] = exit_status(wait_reaping(proc.pid) if os.getpid() == 1 else proc.wait())
    except OSError as exc:  # command not found, not executable
        print("genesis-runner: cannot run validation: %s" % exc, flush=True)
        result["exit_code"] = 127
    result["runtime_ms"] = int((time.monotonic() - started) * 1000)
    after = cgroup_usage()
    result["memory_peak_bytes"] = after["memory_peak_bytes"]
    for key in ("cpu_seconds", "io_operations"):
        if after[key] is not None and before[key] is not None:
            result[key] = after[key] - before[key]


def wait_reaping(pid):
    """The exit status of ``pid``, as the sandbox's init (PID 1): the runner is its own
    init, so that nothing the change runs can trace it (it is not dumpable) or kill it
    (PID 1 takes no signal it has no handler for from inside its namespace). Orphans
    reparented to it meanwhile are reaped as they exit, so none is left a zombie
    holding a pid."""
    while True:
        reaped, status = os.waitpid(-1, 0)
        if reaped == pid:
            return os.waitstatus_to_exitcode(status)


def read_bundle():
    """bundle.json (Docker) or bundle.gz.b64 (a Kubernetes downward-API file)."""
    plain = os.path.join(IN_DIR, "bundle.json")
    if os.path.exists(plain):
        with open(plain) as handle:
            return json.load(handle)
    with open(os.path.join(IN_DIR, "bundle.gz.b64"), "rb") as handle:
        return json.loads(gzip.decompress(base64.b64decode(handle.read())))


def seed_workspace():
    """Copy the image's workspace into the writable one (read-only root filesystems)."""
    source = os.environ.get("GENESIS_SEED_FROM")
    if source and os.path.realpath(source) != os.path.realpath(WORKSPACE):
        started = time.monotonic()
        shutil.copytree(source, WORKSPACE, symlinks=True, dirs_exist_ok=True)
        return int((time.monotonic() - started) * 1000)
    return None


def out_archive(budget):
    """/genesis/out as tar.gz; files past ``budget`` bytes (compressed) are left out."""
    buffer = io.BytesIO()
    skipped = []
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for root, dirs, files in os.walk(OUT_DIR):
            dirs.sort()
            for name in sorted(files):
                path = os.path.join(root, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                if buffer.tell() + os.path.getsize(path) // 4 > budget:
                    skipped.append(os.path.relpath(path, OUT_DIR))
                    continue
                tar.add(path, arcname="out/" + os.path.relpath(path, OUT_DIR), recursive=False)  # as Docker archives it
    return buffer.getvalue(), skipped


def print_out_files(budget):
    data, skipped = out_archive(budget)
    text = base64.b64encode(data).decode()
    print("%s-BEGIN %d %s" % (OUT_MARKER, len(data), json.dumps(skipped)), flush=True)
    for start in range(0, len(text), OUT_LINE_CHARS):
        print("%s %s" % (OUT_MARKER, text[start:start + OUT_LINE_CHARS]))
    print("%s-END" % OUT_MARKER, flush=True)


def not_traceable():
    """Make this process non-dumpable: the validation runs as the same user, and a
    dumpable runner could be attached with ptrace (Docker's default seccomp profile
    allows it) and have its memory and file descriptors rewritten. The flag is not
    inherited across execve, so the validation's own processes stay traceable by it
    (debuggers, pytest's faulthandler)."""
    import ctypes
    pr_set_dumpable = 4
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def main():
    result = {"runner_started_ms": now_ms(), "status": "runner_failed"}
    code = EXIT_RUNNER_FAILED
    try:
        not_traceable()
        bundle = read_bundle()
        seeded_ms = seed_workspace()
        if seeded_ms is not None:
            result["workspace_copy_ms"] = seeded_ms
        try:
            result["touched"] = apply_changes(bundle.get("changes") or {})
        except ChangeFailed as exc:
            result.update(status="patch_failed", message=str(exc))
            code = EXIT_PATCH_FAILED
        else:
            result["applied_ms"] = now_ms()
            run_validation(bundle["validation"], result, validation_env(bundle, result["touched"]),
                           result["touched"])
            result["status"] = "completed"
            code = result["exit_code"]
    except Exception as exc:  # the runner must always leave a result behind
        result["message"] = "%s: %s" % (type(exc).__name__, exc)
    result["finished_ms"] = now_ms()
    document = json.dumps(result, sort_keys=True)
    try:
        with open(os.path.join(OUT_DIR, "result.json"), "w") as handle:
            handle.write(document)
        if os.environ.get("GENESIS_OUT_TO_LOG"):
            print_out_files(int(os.environ["GENESIS_OUT_TO_LOG"]))
    finally:
        print(RESULT_MARKER + document, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())

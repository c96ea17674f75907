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

A pooled sandbox is started before its change exists: with
``GENESIS_BUNDLE_STDIN`` the runner waits for the bundle on stdin (written
through the engine's attach stream, then closed) and its clock starts when
the bundle has arrived. Its validation sees neither that stdin nor the
variable: it runs as in a sandbox made for it.

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
    env.pop("GENESIS_BUNDLE_STDIN", None)
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


def run_validation(validation, result, env, written, strict=False):
    workdir = safe_target(validation.get("workdir", ".")) if validation.get("workdir", ".") != "." else WORKSPACE
    before = cgroup_usage()
    result["validation_started_ms"] = now_ms()
    # The first marker of the log, before any of the change's code runs.
    print(APPLIED_MARKER + json.dumps({"validation_started_ms": result["validation_started_ms"],
                                       "touched": written}, sort_keys=True), flush=True)
    print("genesis-runner: validation %s" % json.dumps(validation["command"]), flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(validation["command"], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                preexec_fn=install_strict_seccomp if strict else None)
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
    """bundle.json (Docker), stdin (a pooled sandbox) or bundle.gz.b64 (a Kubernetes downward-API file)."""
    if os.environ.get("GENESIS_BUNDLE_STDIN"):
        data = sys.stdin.buffer.read()
        os.close(0)
        os.open(os.devnull, os.O_RDONLY)  # fd 0 again, on nothing
        return json.loads(data)
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


# Genesis's stricter seccomp layer (bundle "seccomp": "strict"): system calls the validation
# is refused (EPERM) on top of the engine's own profile. Filters stack: the kernel applies
# every one installed, so this can only take away. Numbers per architecture (audit arch).
STRICT_DENIED = {
    0xC000003E: {  # x86_64
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "personality": 135,
        "userfaultfd": 323, "perf_event_open": 298, "bpf": 321, "keyctl": 250, "add_key": 248,
        "request_key": 249, "unshare": 272, "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155,
        "chroot": 161, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_by_handle_at": 304, "name_to_handle_at": 303, "kexec_load": 246, "init_module": 175,
        "finit_module": 313, "delete_module": 176, "iopl": 172, "ioperm": 173, "syslog": 103, "acct": 163,
        "swapon": 167, "swapoff": 168, "quotactl": 179, "lookup_dcookie": 212, "vhangup": 153,
    },
    0xC00000B7: {  # aarch64 (the generic table)
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "personality": 92,
        "userfaultfd": 282, "perf_event_open": 241, "bpf": 280, "keyctl": 219, "add_key": 217,
        "request_key": 218, "unshare": 97, "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41,
        "chroot": 51, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
        "open_by_handle_at": 265, "name_to_handle_at": 264, "kexec_load": 104, "init_module": 105,
        "finit_module": 273, "delete_module": 106, "syslog": 116, "acct": 89, "swapon": 224, "swapoff": 225,
        "quotactl": 60, "lookup_dcookie": 18, "vhangup": 58,
    },
}
X32_SYSCALL_BIT = 0x40000000


def strict_filter(arch):
    """The BPF program of the strict layer for ``arch``: another architecture's calls (i386
    on x86_64) and x32 calls are refused whole, the listed ones refused, the rest allowed."""
    import struct
    ld_abs, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    denied = sorted(STRICT_DENIED[arch].values())
    # [0] load arch; [1] arch ok: skip; [2] deny; [3] load nr; [4] x32: jump to deny; [5..] each nr
    prog = [(ld_abs, 0, 0, 4), (jeq, 1, 0, arch), (ret, 0, 0, deny), (ld_abs, 0, 0, 0)]
    last = 4 + 1 + len(denied)  # index of the final "allow"; "deny" follows it
    prog.append((jge, last + 1 - 5, 0, X32_SYSCALL_BIT))
    for i, number in enumerate(denied):
        here = 5 + i
        prog.append((jeq, last + 1 - here - 1, 0, number))
    prog += [(ret, 0, 0, allow), (ret, 0, 0, deny)]
    return b"".join(struct.pack("HBBI", *instruction) for instruction in prog), len(prog)


def install_strict_seccomp():
    """Stack the strict layer on this process (the validation, between fork and exec)."""
    import ctypes
    import platform
    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
    if arch is None:
        raise OSError("the strict seccomp layer knows no system call table for %s" % platform.machine())
    code, length = strict_filter(arch)
    program = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(length, ctypes.cast(program, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_no_new_privs, pr_set_seccomp, seccomp_mode_filter = 38, 22, 2
    if libc.prctl(pr_set_no_new_privs, 1, 0, 0, 0) != 0 or \
            libc.prctl(pr_set_seccomp, seccomp_mode_filter, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "installing the strict seccomp layer failed")


def main():
    result = {"runner_started_ms": now_ms(), "status": "runner_failed"}
    code = EXIT_RUNNER_FAILED
    try:
        not_traceable()
        bundle = read_bundle()
        result["runner_started_ms"] = now_ms()  # a pooled sandbox's clock starts at its claim
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
                           result["touched"], strict=bundle.get("seccomp") == "strict")
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
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and flushed: no interpreter teardown between the result and the
    # exit the engine reports (the experiment waits on it; PID 1's exit ends whatever is left).
    os._exit(status)

#!/usr/bin/env python3
"""Genesis sandbox runner: the entrypoint of every sandbox.

Runs inside the sandbox, as the unprivileged sandbox user, with only the
Python standard library. It reads the bundle the orchestrator delivered to
``/genesis/in/bundle.json``, applies the change to ``/workspace`` (the
sandbox's own copy-on-write layer over the snapshot image), runs the
validation command, and writes ``/genesis/out/result.json``. The same
document is printed as the last line of the log behind ``GENESIS-RESULT``,
so a runtime that can read logs but not files (a Kubernetes pod) gets it too.

On Kubernetes three environment variables adapt it to a pod whose root
filesystem is read-only: the bundle arrives gzip+base64 through the
downward API (``bundle.gz.b64``), ``GENESIS_SEED_FROM`` names the image's
workspace to copy into the writable ``GENESIS_WORKSPACE`` first, and
``GENESIS_OUT_TO_LOG`` (a byte budget) makes the runner print
``/genesis/out`` as a base64 tar.gz between ``GENESIS-OUT`` markers, just
before the ``GENESIS-RESULT`` line, since a pod's files die with it.

It does not judge anything: scoring happens in the orchestrator, which
treats everything written here as untrusted.

Exit codes: 0 validation ran (whatever its result), 3 the change did not
apply, 4 the runner itself failed.
"""

import base64
import difflib
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
OUT_MARKER = "GENESIS-OUT"
OUT_LINE_CHARS = 4096
EXIT_OK, EXIT_PATCH_FAILED, EXIT_RUNNER_FAILED = 0, 3, 4


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


def patch_paths(patch):
    paths = set()
    for line in patch.splitlines():
        match = re.match(r"^diff --git a/(\S+) b/(\S+)$", line)
        if match:
            paths.update(match.groups())
    return paths


def snapshot_files(paths, side):
    """Copy the current version of each touched file to out/changes/<side>/."""
    texts = {}
    for rel in sorted(paths):
        source = os.path.join(WORKSPACE, rel)
        if os.path.isfile(source) and not os.path.islink(source):
            with open(source, "rb") as handle:
                data = handle.read()
            dest = os.path.join(OUT_DIR, "changes", side, rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            with open(dest, "wb") as handle:
                handle.write(data)
            texts[rel] = data
    return texts


def apply_patch(patch):
    path = os.path.join(OUT_DIR, "change.patch")
    with open(path, "w") as handle:
        handle.write(patch if patch.endswith("\n") else patch + "\n")
    proc = subprocess.run(
        ["git", "apply", "--verbose", "--whitespace=nowarn", path],
        cwd=WORKSPACE, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise ChangeFailed("git apply failed: " + (proc.stderr.strip() or proc.stdout.strip())[-2000:])


def apply_file(change):
    target = safe_target(change["path"])
    if change.get("delete"):
        if not os.path.lexists(target):
            raise ChangeFailed("cannot delete %r: no such file" % change["path"])
        os.unlink(target)
        return
    if change.get("content_b64") is not None:
        data = base64.b64decode(change["content_b64"])
    else:
        data = change.get("content", "").encode("utf-8")
    if os.path.islink(target):
        os.unlink(target)  # replace the link itself, never write through it
    os.makedirs(os.path.dirname(target), exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    if change.get("mode") == "755":
        os.chmod(target, 0o755)


def write_diff(before, after):
    chunks = []
    for rel in sorted(set(before) | set(after)):
        old = before.get(rel, b"").decode("utf-8", "replace").splitlines(keepends=True)
        new = after.get(rel, b"").decode("utf-8", "replace").splitlines(keepends=True)
        chunks.extend(difflib.unified_diff(
            old, new,
            fromfile="a/" + rel if rel in before else "/dev/null",
            tofile="b/" + rel if rel in after else "/dev/null",
        ))
    with open(os.path.join(OUT_DIR, "change.diff"), "w") as handle:
        handle.writelines(chunks)


def apply_changes(changes):
    files = changes.get("files") or []
    patch = changes.get("patch") or ""
    touched = patch_paths(patch) | {f["path"] for f in files}
    for rel in touched:
        safe_target(rel)
    before = snapshot_files(touched, "before")
    if patch.strip():
        apply_patch(patch)
    for change in files:
        apply_file(change)
    after = snapshot_files(touched, "after")
    write_diff(before, after)
    return sorted(touched)


def run_validation(validation, result):
    workdir = safe_target(validation.get("workdir", ".")) if validation.get("workdir", ".") != "." else WORKSPACE
    env = dict(os.environ, GENESIS_OUT=OUT_DIR, HOME=os.environ.get("HOME", "/tmp"))
    before = cgroup_usage()
    result["validation_started_ms"] = now_ms()
    print("genesis-runner: validation %s" % json.dumps(validation["command"]), flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(validation["command"], cwd=workdir, env=env)
        result["exit_code"] = proc.returncode
    except OSError as exc:  # command not found, not executable
        print("genesis-runner: cannot run validation: %s" % exc, flush=True)
        result["exit_code"] = 127
    result["runtime_ms"] = int((time.monotonic() - started) * 1000)
    after = cgroup_usage()
    result["memory_peak_bytes"] = after["memory_peak_bytes"]
    for key in ("cpu_seconds", "io_operations"):
        if after[key] is not None and before[key] is not None:
            result[key] = after[key] - before[key]


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


def main():
    result = {"runner_started_ms": now_ms(), "status": "runner_failed"}
    code = EXIT_RUNNER_FAILED
    try:
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
            run_validation(bundle["validation"], result)
            result["status"] = "completed"
            code = EXIT_OK
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

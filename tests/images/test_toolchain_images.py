"""Node and Rust toolchains built through Genesis's own path (SnapshotBuilder
on DockerImages), a snapshot of a small repository on each, and a sandbox
from it run by DockerRuntime: the change is applied by the runner and the
validation runs as uid 1000 with no network, as in any experiment.

The CUDA toolchain cannot be built here (its base is on a registry); its
Dockerfile is built on the offline Debian base instead, which checks every
step but the CUDA libraries, and the contract is checked on it the same way.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from helpers import ROOT, RUN_ID, TEST_LABEL
from images_support import LABELS, TIMINGS

pytestmark = pytest.mark.docker

GIT = ["-c", "user.name=genesis", "-c", "user.email=genesis@localhost"]

NODE_REPO = {
    "package.json": json.dumps({"name": "demo", "version": "1.0.0", "private": True,
                                "scripts": {"test": "node --test"}}, indent=2) + "\n",
    "lib/greet.js": "exports.greet = (name) => `hello ${name}`;\n",
}
NODE_TEST = """\
const test = require('node:test');
const assert = require('node:assert');
const os = require('node:os');
const { greet } = require('../lib/greet');

test('greets', () => assert.strictEqual(greet('genesis'), 'hello genesis'));
test('runs as the sandbox user', () => assert.strictEqual(process.getuid(), 1000));
test('has no network but loopback', () => assert.deepStrictEqual(Object.keys(os.networkInterfaces()), ['lo']));
"""

RUST_REPO = {
    "Cargo.toml": '[package]\nname = "demo"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n',
    "src/lib.rs": "pub fn add(a: u64, b: u64) -> u64 {\n    a + b\n}\n",
}
RUST_TEST = """\
use std::fs;

#[test]
fn adds() {
    assert_eq!(demo::add(2, 2), 4);
}

#[test]
fn runs_as_the_sandbox_user() {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    assert!(status.lines().any(|l| l.starts_with("Uid:\\t1000\\t")), "{}", status);
}

#[test]
fn has_no_network_but_loopback() {
    let dev = fs::read_to_string("/proc/net/dev").unwrap();
    let names: Vec<&str> = dev.lines().skip(2).map(|l| l.split(':').next().unwrap().trim()).collect();
    assert_eq!(names, vec!["lo"]);
}
"""

CUDA_REPO = {"test_cuda.py": "import os\n\n\ndef test_no_gpu_unless_granted():\n"
                             "    assert os.environ['NVIDIA_VISIBLE_DEVICES'] == 'void'\n"
                             "    assert os.getuid() == 1000\n"}


def make_repo(path: Path, files: dict[str, str]) -> tuple[Path, str]:
    """A git repository with one commit on main; returns it and the commit."""
    for name, content in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(content)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), *GIT, "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), *GIT, "commit", "-q", "-m", "demo"], check=True)
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    return path, commit


def run_sandbox(docker_client, image: str, *, files: dict[str, str], command: list[str],
                memory_bytes: int = 1 << 30) -> tuple[dict, str]:
    """One sandbox through DockerRuntime: the runner applies ``files`` and runs
    ``command``; returns result.json and the log tail."""
    from orchestrator.runtimes.base import SandboxSpec
    from orchestrator.runtimes.docker import DockerRuntime

    runtime = DockerRuntime(docker_client)  # shares the session's client: never closed here
    name = f"genesis-test-images-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    bundle = {"changes": {"files": [{"path": p, "content": c} for p, c in files.items()]},
              "validation": {"command": command}}
    spec = SandboxSpec(name=name, image=image, labels=dict(LABELS), bundle=json.dumps(bundle).encode(),
                       cpu=1.0, memory_bytes=memory_bytes, pids=512)

    async def run():
        await runtime.create(spec)
        try:
            await runtime.start(name)
            state = await runtime.wait(name, timeout_s=300)
            assert state is not None, "the sandbox was still running after 300 s"
            output = await runtime.collect(name, max_file_bytes=1 << 20)
        finally:
            await runtime.remove(name)
        return json.loads(output.files["result.json"]), output.log_tail

    return asyncio.run(run())


@pytest.fixture(scope="session")
def node_snapshot(toolchains, tmp_path_factory):
    repo, commit = make_repo(tmp_path_factory.mktemp("node-repo"), NODE_REPO)
    return toolchains.snapshot("node", repo=repo, commit=commit)


@pytest.fixture(scope="session")
def rust_snapshot(toolchains, tmp_path_factory):
    repo, commit = make_repo(tmp_path_factory.mktemp("rust-repo"), RUST_REPO)
    return toolchains.snapshot("rust", repo=repo, commit=commit)


@pytest.fixture(scope="session")
def cuda_on_debian(toolchains):
    """toolchain-cuda's Dockerfile built with the offline Debian base in place of
    NVIDIA's (the builder would pass only BASE_IMAGE, which this file ignores)."""
    from orchestrator.snapshots.builder import toolchain_context

    context, digest = toolchain_context(ROOT / "images", "cuda")
    tag = f"genesis-test/toolchain-cuda:{digest}-{RUN_ID}"
    started = time.monotonic()
    asyncio.run(toolchains.images.build(io.BytesIO(context), tag=tag, labels=dict(LABELS),
                                        buildargs={"CUDA_BASE_IMAGE": toolchains.base_image}))
    toolchains.tags["cuda-on-debian"] = tag  # removed with the others
    TIMINGS["toolchain-cuda on the Debian base"] = f"{time.monotonic() - started:.1f} s"
    return tag


def test_node_toolchain_runs_node_test_offline_as_the_sandbox_user(docker_client, node_snapshot):
    result, log = run_sandbox(docker_client, node_snapshot, files={"test/greet.test.js": NODE_TEST},
                              command=["node", "--test"])
    assert (result["status"], result["exit_code"]) == ("completed", 0), log
    assert "# pass 3" in log and "# fail 0" in log, log


def test_node_toolchain_reports_a_failing_npm_test(docker_client, node_snapshot):
    failing = NODE_TEST.replace("'hello genesis'", "'goodbye genesis'")
    result, log = run_sandbox(docker_client, node_snapshot, files={"test/greet.test.js": failing},
                              command=["npm", "test"])
    assert result["status"] == "completed" and result["exit_code"] != 0, log
    assert "# pass 2" in log and "# fail 1" in log, log


def test_rust_toolchain_runs_cargo_test_offline_as_the_sandbox_user(docker_client, rust_snapshot):
    result, log = run_sandbox(docker_client, rust_snapshot, files={"tests/sandbox.rs": RUST_TEST},
                              command=["cargo", "test", "--offline"])
    assert (result["status"], result["exit_code"]) == ("completed", 0), log
    assert "test result: ok. 3 passed; 0 failed" in log, log


def test_rust_toolchain_compiles_with_rustc_alone(docker_client, rust_snapshot):
    hello = 'fn main() {\n    println!("hello from rustc {}", 6 * 7);\n}\n'
    result, log = run_sandbox(docker_client, rust_snapshot, files={"hello.rs": hello},
                              command=["sh", "-c", "rustc -o hello hello.rs && ./hello"])
    assert (result["status"], result["exit_code"]) == ("completed", 0), log
    assert "hello from rustc 42" in log, log


def test_cuda_template_runs_pytest_and_grants_no_gpu_by_default(docker_client, cuda_on_debian):
    # No snapshot: the runner writes the test into the toolchain's own /workspace.
    result, log = run_sandbox(docker_client, cuda_on_debian, files=CUDA_REPO, command=[
        "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=/genesis/out/junit.xml"])
    assert (result["status"], result["exit_code"]) == ("completed", 0), log
    assert "1 passed" in log, log


@pytest.mark.parametrize("toolchain", ["node", "rust", "cuda-on-debian"])
def test_toolchain_keeps_the_sandbox_contract(request, docker_client, toolchains, toolchain):
    """The contract of images/README.md, read from the built image."""
    request.getfixturevalue({"node": "node_snapshot", "rust": "rust_snapshot",
                             "cuda-on-debian": "cuda_on_debian"}[toolchain])
    image = toolchains.tags[toolchain]
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == "1000:1000" and config["WorkingDir"] == "/workspace"
    assert config["Entrypoint"] == ["python3", "/opt/genesis/runner.py"]
    assert {k: config["Labels"].get(k) for k in ("genesis.managed-by", "genesis.kind")} == {
        "genesis.managed-by": "genesis", "genesis.kind": "toolchain"}
    assert {"HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])

    script = ("find / -xdev -type d -perm -0002; "
              "stat -c '%u:%g %n' /workspace /genesis/out /genesis/in /opt/genesis/runner.py; "
              "getent passwd 1000 | cut -d: -f1; command -v git")
    out = docker_client.containers.run(image, ["-c", script], entrypoint="sh", user="0:0", network_mode="none",
                                       remove=True, labels={TEST_LABEL: RUN_ID}).decode().split("\n")
    assert out == ["/tmp", "1000:1000 /workspace", "1000:1000 /genesis/out", "0:0 /genesis/in",
                   "0:0 /opt/genesis/runner.py", "sandbox", "/usr/bin/git", ""]
    runner = docker_client.containers.run(image, ["/opt/genesis/runner.py"], entrypoint="cat", network_mode="none",
                                          remove=True, labels={TEST_LABEL: RUN_ID})
    assert runner == (ROOT / "orchestrator" / "sandbox" / "runner.py").read_bytes()

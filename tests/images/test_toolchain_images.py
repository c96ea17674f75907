"""Node and Rust toolchains built through Genesis's own path (SnapshotBuilder
on DockerImages), a snapshot of a small repository on each, and a sandbox
from it run by DockerRuntime: the change is applied by the runner and the
validation runs as uid 1000 with no network, as in any experiment.

Also the toolchains' parts for environment images: the Python toolchain's
virtual environment and uv (installing as root, read-only to the sandbox),
the Rust toolchain's JUnit converter (genesis-cargo-test), and `npm ci` in an
environment-like build (root, network, the host's CA bundle) whose
node_modules a sandbox then uses offline.

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
    result, log, _ = run_sandbox_files(docker_client, image, files=files, command=command, memory_bytes=memory_bytes)
    return result, log


def run_sandbox_files(docker_client, image: str, *, files: dict[str, str], command: list[str],
                      memory_bytes: int = 1 << 30) -> tuple[dict, str, dict[str, bytes]]:
    """:func:`run_sandbox`, also returning the files the sandbox left in /genesis/out."""
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
        return json.loads(output.files["result.json"]), output.log_tail, dict(output.files)

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
    assert config["Entrypoint"] == ["python3", "-I", "/opt/genesis/runner.py"]
    assert {k: config["Labels"].get(k) for k in ("genesis.managed-by", "genesis.kind")} == {
        "genesis.managed-by": "genesis", "genesis.kind": "toolchain"}
    assert {"HOME=/tmp", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])

    script = ("find / -xdev -type d -perm -0002; "
              "stat -c '%u:%g %n' /workspace /genesis/out /genesis/in /opt/genesis/runner.py "
              "/opt/genesis/audit/sitecustomize.py /opt/genesis/audit/genesis_timeout.py; "
              "getent passwd 1000 | cut -d: -f1; command -v git")
    out = docker_client.containers.run(image, ["-c", script], entrypoint="sh", user="0:0", network_mode="none",
                                       remove=True, labels={TEST_LABEL: RUN_ID}).decode().split("\n")
    assert out == ["/tmp", "1000:1000 /workspace", "1000:1000 /genesis/out", "0:0 /genesis/in",
                   "0:0 /opt/genesis/runner.py", "0:0 /opt/genesis/audit/sitecustomize.py",
                   "0:0 /opt/genesis/audit/genesis_timeout.py", "sandbox",
                   "/usr/bin/git", ""]
    runner = docker_client.containers.run(image, ["/opt/genesis/runner.py"], entrypoint="cat", network_mode="none",
                                          remove=True, labels={TEST_LABEL: RUN_ID})
    assert runner == (ROOT / "orchestrator" / "sandbox" / "runner.py").read_bytes()


# --- Environment-image parts of the toolchains --------------------------------

def _wheel(name: str, version: str, module: str) -> tuple[str, bytes]:
    """A minimal pure-Python wheel (file name, bytes), so installing needs no registry."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name}-{version}.dist-info"
    members = {f"{module}.py": "ANSWER = 42\n",
               f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
               f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: genesis-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in members.items()]
    members[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, text in members.items():
            archive.writestr(path, text)
    return f"{name}-{version}-py3-none-any.whl", buffer.getvalue()


def _container(docker_client, image: str, script: str, *, user: str, network: str = "none",
               binds: dict[str, str] | None = None, **kwargs):
    """Run ``sh -ec script`` to its end; returns (exit code, output, container). The caller removes it.

    ``binds`` (host path -> container path, read-only) become mounts, not ``volumes=``: the SDK would
    also declare each as a VOLUME in the container's config, which a commit would carry into the image."""
    from docker.types import Mount

    mounts = [Mount(target, source, type="bind", read_only=True) for source, target in (binds or {}).items()]
    container = docker_client.containers.run(image, ["-ec", script], entrypoint="sh", user=user, network_mode=network,
                                             detach=True, labels={TEST_LABEL: RUN_ID}, mounts=mounts, **kwargs)
    code = container.wait(timeout=300)["StatusCode"]
    return code, container.logs().decode(), container


def test_python_toolchain_installs_into_a_venv_the_sandbox_cannot_change(docker_client, toolchains, tmp_path):
    """As in an environment build, root installs with `uv pip install` (and pip) into
    /opt/venv; the sandbox user then imports the package, still has Debian's
    pytest, and can write nothing in /opt/venv."""
    image = toolchains.toolchain("python")
    name, data = _wheel("genesis_probe", "1.0", "genesis_probe")
    (tmp_path / name).write_bytes(data)
    tmp_path.chmod(0o755)
    script = (f"uv pip install --offline /wheels/{name} && python3 -m pip install --no-index -q /wheels/{name} "
              "&& python3 -m pip --version")
    code, log, container = _container(docker_client, image, script, user="0",
                                      binds={str(tmp_path): "/wheels"})
    try:
        assert code == 0, log
        assert "/opt/venv" in log, log
        committed = container.commit(changes=["USER 1000:1000", f"LABEL {TEST_LABEL}={RUN_ID}"])
    finally:
        container.remove(force=True)
    try:
        probe = ("import genesis_probe, pytest, sys, os; "
                 "print(sys.prefix, genesis_probe.ANSWER, pytest.__file__.startswith('/usr/lib/python3/'), "
                 "os.access(genesis_probe.__file__, os.W_OK), os.access(os.path.dirname(genesis_probe.__file__), os.W_OK), "
                 "os.environ['VIRTUAL_ENV'])")
        out = docker_client.containers.run(
            committed.id, ["-ec", f"python3 -c \"{probe}\"; command -v python3; command -v uv; "
                                  "find /opt/venv -writable | head -1; uv --version >/dev/null && echo uv-ok"],
            entrypoint="sh", network_mode="none", remove=True, labels={TEST_LABEL: RUN_ID}).decode().split("\n")
    finally:
        docker_client.images.remove(committed.id, force=True)
    assert out == ["/opt/venv 42 True False False /opt/venv", "/opt/venv/bin/python3", "/usr/local/bin/uv", "uv-ok", ""]
    config = docker_client.images.get(image).attrs["Config"]
    assert config["User"] == "1000:1000" and "VIRTUAL_ENV=/opt/venv" in config["Env"]


RUST_MIXED_TEST = """\
#[test]
fn adds() {
    assert_eq!(demo::add(2, 2), 4);
}

#[test]
fn fails_on_purpose() {
    assert_eq!(demo::add(2, 2), 5, "two and two");
}

#[test]
#[ignore]
fn ignored() {}
"""
RUST_DOC_LIB = "/// ```\n/// assert_eq!(demo::add(1, 2), 3);\n/// ```\npub fn add(a: u64, b: u64) -> u64 {\n    a + b\n}\n"


def _junit_cases(xml: bytes) -> dict[str, str]:
    """{classname::name: outcome} from a JUnit document."""
    import xml.etree.ElementTree as ET

    cases = {}
    for case in ET.fromstring(xml).iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        cases[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return cases


def test_genesis_cargo_test_writes_junit_for_passing_failing_and_doc_tests(docker_client, rust_snapshot):
    result, log, files = run_sandbox_files(
        docker_client, rust_snapshot, files={"tests/mixed.rs": RUST_MIXED_TEST, "src/lib.rs": RUST_DOC_LIB},
        command=["genesis-cargo-test", "--no-fail-fast"])
    assert result["status"] == "completed" and result["exit_code"] == 101, log  # cargo's own status
    assert "test fails_on_purpose ... FAILED" in log, log  # cargo's output is echoed
    cases = _junit_cases(files["junit.xml"])
    assert cases == {"mixed::adds": "passed", "mixed::fails_on_purpose": "failure", "mixed::ignored": "skipped",
                     "doc-tests demo::src/lib.rs - add (line 1)": "passed"}, cases
    assert b"two and two" in files["junit.xml"]  # the failure's captured output


def test_genesis_cargo_test_reports_a_build_failure_as_an_error(docker_client, rust_snapshot):
    result, log, files = run_sandbox_files(docker_client, rust_snapshot, files={"src/lib.rs": "pub fn add( {\n"},
                                           command=["genesis-cargo-test"])
    assert result["status"] == "completed" and result["exit_code"] == 101, log
    assert _junit_cases(files["junit.xml"]) == {"cargo::build": "error"}
    assert b"error" in files["junit.xml"]


def test_npm_ci_in_an_environment_build_then_offline_in_the_sandbox(docker_client, node_snapshot, toolchains):
    """`npm ci` as root with network and the host's CA bundle (NPM_CONFIG_OFFLINE=false
    overriding the toolchain's true); the sandbox then uses node_modules offline.
    Without the override, npm ci fails at once for want of a cache."""
    from projects import NODE_LOCK, NODE_PACKAGE

    ca = "/etc/ssl/certs/ca-certificates.crt"
    package = {**NODE_PACKAGE, "devDependencies": {}}
    lock = json.loads(json.dumps(NODE_LOCK))
    lock["packages"][""]["devDependencies"] = {}
    del lock["packages"]["node_modules/@reporters/junit"]
    write = (f"cat > package.json <<'EOF'\n{json.dumps(package)}\nEOF\n"
             f"cat > package-lock.json <<'EOF'\n{json.dumps(lock)}\nEOF\n")
    image = toolchains.tags["node"]
    offline_code, offline_log, container = _container(docker_client, image, write + "npm ci", user="0",
                                                      network="bridge", working_dir="/workspace")
    container.remove(force=True)
    assert offline_code != 0 and "ENOTCACHED" in offline_log, offline_log
    # Exported by the script, not set on the container: the committed image keeps the toolchain's environment.
    build_env = "export NODE_EXTRA_CA_CERTS=/genesis-ca.crt npm_config_cafile=/genesis-ca.crt NPM_CONFIG_OFFLINE=false\n"
    code, log, container = _container(docker_client, image, build_env + write + "npm ci && npm cache clean --force",
                                      user="0", network="bridge", working_dir="/workspace",
                                      binds={ca: "/genesis-ca.crt"})
    try:
        assert code == 0 and "added 1 package" in log, log
        committed = container.commit(changes=["USER 1000:1000", f"LABEL {TEST_LABEL}={RUN_ID}"])
    finally:
        container.remove(force=True)
    try:
        out = docker_client.containers.run(
            committed.id, ["-ec", "node -p \"require('semver').maxSatisfying(['1.2.0', '1.10.0'], '^1')\"; "
                                  "env | grep -c '^NPM_CONFIG_OFFLINE=true$'"],
            entrypoint="sh", network_mode="none", remove=True, labels={TEST_LABEL: RUN_ID})
    finally:
        docker_client.images.remove(committed.id, force=True)
    assert out.decode().split("\n") == ["1.10.0", "1", ""]

"""The orchestrator image, built by images/orchestrator/build.sh and run the
way the Kubernetes Deployment runs it: uid 1000, read-only root file
system, tmpfs for /var/lib/genesis and /tmp.

What only a cluster would show (the Deployment's probes, a mounted Docker
socket's group, PostgreSQL over the network) is not tested here.
"""

from __future__ import annotations

import json
import subprocess
import time
import tomllib

import pytest

from helpers import ROOT, RUN_ID, TEST_LABEL
from images_support import TIMINGS, build_orchestrator_image

pytestmark = pytest.mark.docker

# How the Deployment runs it: nothing writable but these two tmpfs mounts.
READ_ONLY = ["--read-only", "--tmpfs", "/var/lib/genesis:uid=1000,gid=1000", "--tmpfs", "/tmp",
             "--network", "none", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
VERBS = ("apply", "get", "describe", "logs", "delete", "top", "serve", "db")


def docker_run(image: str, *args: str, options: tuple[str, ...] = (), entrypoint: str | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess:
    command = ["docker", "run", "--rm", "--label", f"{TEST_LABEL}={RUN_ID}", *options]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return subprocess.run([*command, image, *args], capture_output=True, text=True, timeout=timeout)


def test_image_metadata_says_how_it_runs(orchestrator_image, docker_client):
    attrs = docker_client.images.get(orchestrator_image).attrs
    config = attrs["Config"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert config["User"] == "1000:1000"  # numeric, so runAsNonRoot can check it
    assert config["Entrypoint"] == ["genesis"] and config["Cmd"] == ["serve"]
    assert "9464/tcp" in config["ExposedPorts"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["GENESIS_HOME"] == "/var/lib/genesis"
    assert env["PATH"].startswith("/opt/genesis/venv/bin:")
    labels = config["Labels"]
    assert labels["genesis.kind"] == "orchestrator"
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.revision"] == revision
    assert labels["org.opencontainers.image.title"] == "genesis-orchestrator"
    assert "genesis.managed-by" not in labels  # not a sandbox, snapshot or toolchain image


def test_rebuilding_an_unchanged_tree_reuses_every_layer(orchestrator_image, docker_client):
    first = docker_client.images.get(orchestrator_image).id
    seconds = build_orchestrator_image()
    TIMINGS["orchestrator image rebuild (cached)"] = f"{seconds:.1f} s"
    assert docker_client.images.get(orchestrator_image).id == first


def test_help_lists_the_subcommands(orchestrator_image):
    proc = docker_run(orchestrator_image, "--help", options=tuple(READ_ONLY))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: genesis")
    for verb in VERBS:
        assert f"\n    {verb} " in proc.stdout, f"{verb} missing from:\n{proc.stdout}"


def test_db_upgrade_on_a_read_only_root_as_uid_1000(orchestrator_image):
    from orchestrator.store.db import head_revision

    head = head_revision()
    url = ["--env", "GENESIS_DATABASE_URL=sqlite:////var/lib/genesis/x.db"]
    started = time.monotonic()
    proc = docker_run(orchestrator_image, "db", "upgrade", options=(*READ_ONLY, *url))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"database at revision {head} (head {head})"
    TIMINGS["`genesis db upgrade` in a fresh container"] = f"{time.monotonic() - started:.1f} s"

    script = "id -u; genesis db upgrade >/dev/null && genesis db current; stat -c '%u %s' /var/lib/genesis/x.db"
    proc = docker_run(orchestrator_image, "-c", script, options=(*READ_ONLY, *url), entrypoint="sh")
    assert proc.returncode == 0, proc.stderr
    uid, current, stat = proc.stdout.split("\n")[:3]
    owner, size = stat.split()
    assert (uid, current, owner) == ("1000", head, "1000") and int(size) > 0


def test_root_file_system_is_read_only_to_it(orchestrator_image):
    script = "touch /opt/genesis/x 2>/dev/null && echo wrote-opt; touch /var/lib/genesis/ok && echo wrote-home"
    proc = docker_run(orchestrator_image, "-c", script, options=tuple(READ_ONLY), entrypoint="sh")
    assert proc.stdout.split() == ["wrote-home"]


def test_toolchains_and_migrations_are_found_from_the_installed_package(orchestrator_image):
    """Default settings find the toolchain Dockerfiles, and hash them (with the
    packaged runner) exactly as a checkout does: both build the same toolchain tags."""
    from orchestrator.snapshots.builder import toolchain_context

    names = ["python", "node", "rust", "cuda"]
    script = ("import json, sys; from orchestrator.settings import load_settings; "
              "from orchestrator.snapshots.builder import toolchain_context; from orchestrator.store import db; "
              "s = load_settings(); "
              "print(json.dumps({'images_dir': str(s.images_dir), 'head': db.head_revision(), "
              "'digests': {n: toolchain_context(s.images_dir, n)[1] for n in sys.argv[1:]}}))")
    proc = docker_run(orchestrator_image, "-c", script, *names, options=tuple(READ_ONLY), entrypoint="python")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)

    from orchestrator.store.db import head_revision
    assert found["head"] == head_revision()
    assert found["digests"] == {n: toolchain_context(ROOT / "images", n)[1] for n in names}
    proc = docker_run(orchestrator_image, "/opt/genesis/images/toolchain-python/Dockerfile",
                      options=tuple(READ_ONLY), entrypoint="cat")
    assert proc.stdout == (ROOT / "images" / "toolchain-python" / "Dockerfile").read_text()


def test_git_reads_a_repository_owned_by_another_user(orchestrator_image, sample_repo):
    """Repositories are mounted read-only and owned by someone else; git must
    still read them (no "dubious ownership" refusal) as Genesis does."""
    expected = subprocess.run(["git", "-C", str(sample_repo), "rev-parse", "main"],
                              capture_output=True, text=True, check=True).stdout.strip()
    script = ("import io, sys; from pathlib import Path; from orchestrator.snapshots import git; "
              "commit = git.resolve_commit(Path('/repo'), 'main'); buffer = io.BytesIO(); "
              "git.write_archive(Path('/repo'), commit, buffer); print(commit, buffer.tell())")
    proc = docker_run(orchestrator_image, "-c", script, entrypoint="python",
                      options=(*READ_ONLY, "--volume", f"{sample_repo}:/repo:ro"))
    assert proc.returncode == 0, proc.stderr
    commit, archive_bytes = proc.stdout.split()
    assert sample_repo.stat().st_uid != 1000
    assert commit == expected and int(archive_bytes) > 10_000


def test_no_build_tools_pip_or_apt_lists_are_left(orchestrator_image, docker_client, settings):
    script = ("for tool in gcc cc make pip pip3; do command -v $tool; done; "
              "ls /var/lib/apt/lists | grep -v -x -e lock -e partial; "
              "ls /opt/genesis/venv/lib/python3.11/site-packages | grep -i '^pip' ; true")
    proc = docker_run(orchestrator_image, "-c", script, options=tuple(READ_ONLY), entrypoint="sh")
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout
    base = docker_client.images.get(settings.base_image).attrs["Size"]  # build.sh reads the same variable
    added = docker_client.images.get(orchestrator_image).attrs["Size"] - base
    # The virtual environment is about 230 MB, most of it the kubernetes client.
    assert added < 300e6, f"the image adds {added / 1e6:.0f} MB to its base"

"""Environment figures: the dependency tier built once and reused, a real
suite's experiment beside the same tests run by hand, and disk per tier.

1. environment build once vs reuse, per toolchain (python, node, rust), on
   the real projects of ``tests/projects.py`` with a SnapshotBuilder over
   Docker and the host's CA bundle: ``ensure`` of the base commit (the
   environment and the snapshot built cold) against ``ensure`` of commits
   that leave the inputs alone (the environment reused, only the snapshot
   built) and against a full cache hit (nothing built).
2. experiment overhead on a real suite of over a minute: networkx (sdist
   from PyPI, downloaded now) through a real App (intake → controller →
   environment, snapshot, cached baseline, sandbox, collect, verdict), from
   submit to finalized, against ``docker run --rm`` of the same test
   command in the same snapshot image with the same limits. One experiment
   first fills the baseline cache; then timed experiments and direct runs
   alternate.
3. disk per tier, per toolchain: what the environment adds over the
   toolchain image, what the snapshot adds over the environment (beside the
   tree's own files), and the sandbox's writable layer after running the
   project's good change (beside the whole snapshot image it is a layer over).

Everything created carries ``genesis.bench=<run>`` and is removed; the
toolchain images (shared, keyed by their files) stay.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import docker

from benchmarks.common import BENCH_LABEL, RUN_ID, Report, git, stats_ms
from orchestrator.domain.environment import EnvironmentConfig
from orchestrator.domain.models import Validation
from orchestrator.runtimes.base import SandboxSpec
from orchestrator.runtimes.docker import DockerRuntime
from orchestrator.runtimes.docker_images import DockerImages
from orchestrator.settings import PROJECT_ROOT, BuildSettings, RepoConfig
from orchestrator.snapshots.builder import SnapshotBuilder

HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NETWORKX = "3.6.1"  # pure Python, ~6,000 tests, about 70 s on one core of this machine
NETWORKX_ENV = {"setup": ["uv pip install -r requirements/test.txt"], "inputs": ["requirements/test.txt"]}
NETWORKX_TEST = ["python3", "-m", "pytest", "-q", "-p", "no:cacheprovider",
                 "--junitxml=/genesis/out/junit.xml", "networkx"]
# The same limits for a Genesis sandbox and the direct run, so only the orchestration differs.
CPU, MEMORY, PIDS = 2, "2Gi", 512
COMMIT_AS = ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "commit.gpgsign=false"]
MB = 1e6


def _ratio(value: float, base: float) -> str:
    if base <= 0:
        return "-"
    r = value / base
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def _mb(size: float) -> str:
    """Megabytes: two decimals, or three significant digits below 1 MB (a tree of a few KB)."""
    return f"{size / MB:.2f}" if abs(size) >= MB else f"{size / MB:.3g}"


def _tree_bytes(repo: Path, commit: str) -> int:
    """The bytes of every file at ``commit``: the tree a snapshot adds."""
    listing = git(repo, "ls-tree", "-r", "-l", commit).splitlines()
    return sum(int(line.split()[3]) for line in listing if line.split()[3].isdigit())


def _more_commits(repo: Path, count: int) -> list[str]:
    """``count`` commits on top of main that touch no environment input."""
    commits = []
    for index in range(count):
        (repo / "BENCH_NOTE.txt").write_text(f"benchmark commit {index}\n")
        git(repo, "add", "BENCH_NOTE.txt")
        git(repo, *COMMIT_AS, "commit", "-q", "-m", f"bench {index}: code only")
        commits.append(git(repo, "rev-parse", "HEAD").strip())
    return commits


def _projects(scratch: Path) -> list:
    from tests.projects import node_project, python_project, rust_project

    cache = scratch / "cache"
    cache.mkdir()
    made = []
    for make in (python_project, node_project, rust_project):
        folder = scratch / make.__name__
        folder.mkdir()
        made.append(make(folder, cache))
    return made


# --- 1 and 3: tiers per toolchain ----------------------------------------------

async def _timed_ensure(builder: SnapshotBuilder, name: str, repo: RepoConfig, commit: str):
    started = time.perf_counter()
    snap = await builder.ensure(repo_name=name, repo=repo, commit=commit)
    return snap, time.perf_counter() - started


async def _sandbox_disk(runtime: DockerRuntime, image: str, project) -> tuple[int, dict]:
    """Run the project's good change in a Genesis sandbox; its writable layer (SizeRw) and result."""
    name = f"genesis-bench-env-{RUN_ID}-{project.toolchain}"
    bundle = {"changes": project.good.changes, "validation": {"command": project.validation, "workdir": "."}}
    spec = SandboxSpec(name=name, image=image, labels={BENCH_LABEL: RUN_ID}, bundle=json.dumps(bundle).encode(),
                       cpu=CPU, memory_bytes=2 * 2**30, pids=PIDS)
    await runtime.create(spec)
    try:
        await runtime.start(name)
        state = await runtime.wait(name, timeout_s=600)
        output = await runtime.collect(name, max_file_bytes=2**20)
        result = json.loads(output.files.get("result.json") or "{}")
        listed = runtime.client.api.containers(all=True, size=True, filters={"name": f"^{name}$"})
        size = (listed[0].get("SizeRw") or 0) if listed else 0
        return size, {"exit_code": state.exit_code if state else None,
                      "validation_exit_code": result.get("exit_code"), "status": result.get("status")}
    finally:
        await runtime.remove(name)


async def _tiers(report: Report, projects: list, *, runs: int, reuse_n: int, scratch: Path) -> None:
    runtime = DockerRuntime()
    base_image = os.environ.get("GENESIS_BASE_IMAGE", "genesis/base:bookworm")
    builder = SnapshotBuilder(DockerImages(runtime.client), images_dir=PROJECT_ROOT / "images",
                              base_image=base_image, extra_labels={BENCH_LABEL: RUN_ID},
                              build=BuildSettings(ca_bundle=HOST_BUNDLE), logs_dir=scratch / "build-logs")
    disk_rows = []
    try:
        for project in projects:
            tc = project.toolchain
            repo = RepoConfig(path=project.repo, toolchain=tc, environment=EnvironmentConfig(**project.environment),
                              snapshot_setup=project.snapshot_setup, validation=Validation(command=project.validation))
            name = f"bench-{RUN_ID}-{tc}"
            toolchain = await builder.toolchain(tc)  # shared and kept: built (if at all) before timing
            cold, cold_s = await _timed_ensure(builder, name, repo, project.base)
            assert cold.built and cold.environment_built, f"{tc}: the cold ensure reused an image"
            reuse, hit = [], []
            for commit in [project.head, *_more_commits(project.repo, reuse_n - 1)]:
                snap, seconds = await _timed_ensure(builder, name, repo, commit)
                assert snap.built and not snap.environment_built and snap.environment == cold.environment, \
                    f"{tc}: a commit that leaves the inputs alone rebuilt the environment"
                reuse.append(seconds * 1000)
            for _ in range(runs):
                snap, seconds = await _timed_ensure(builder, name, repo, project.head)
                assert not snap.built and not snap.environment_built, f"{tc}: a repeated ensure built something"
                hit.append(seconds * 1000)
            r, h = stats_ms(reuse), stats_ms(hit)
            cold_ms = cold_s * 1000
            report.data.setdefault("environment_reuse", {})[tc] = {
                "project": project.name, "cold_s": cold_s, "cold_environment_s": cold.environment_seconds,
                "reuse_snapshot_only": r, "full_cache_hit": h}
            report.add(f"env reuse, {tc} ({project.name}): new commit, same inputs, median of {len(reuse)} (s)",
                       f"{r['median_ms'] / 1000:.2f}",
                       f"{cold_s:.1f} cold (env {cold.environment_seconds:.1f} + snapshot)",
                       _ratio(r["median_ms"], cold_ms))
            report.add(f"  full cache hit, median of {runs} (ms)", f"{h['median_ms']:.1f}", f"{cold_ms:.0f} cold",
                       _ratio(h["median_ms"], cold_ms))
            # 3. disk per tier
            tool_info = await builder.images.get(toolchain)
            assert tool_info is not None
            env_adds = cold.environment_bytes - tool_info.size_bytes
            snap_adds = cold.size_bytes - cold.environment_bytes
            tree = _tree_bytes(project.repo, project.base)
            rw, ran = await _sandbox_disk(runtime, cold.tag, project)
            report.data.setdefault("disk_per_tier", {})[tc] = {
                "toolchain_bytes": tool_info.size_bytes, "environment_bytes": cold.environment_bytes,
                "snapshot_bytes": cold.size_bytes, "environment_adds": env_adds, "snapshot_adds": snap_adds,
                "tree_bytes": tree, "sandbox_size_rw": rw, "sandbox_run": ran}
            disk_rows.append((tc, project.name, tool_info.size_bytes, env_adds, snap_adds, tree, cold.size_bytes,
                              rw, ran))
    finally:
        runtime.close()
    for tc, pname, tool, env_adds, snap_adds, tree, snapshot, rw, ran in disk_rows:
        report.add(f"disk, {tc} ({pname}): environment tier adds (MB)", _mb(env_adds),
                   f"{tool / MB:.0f} (toolchain image)", _ratio(env_adds, tool))
        report.add("  snapshot tier adds (MB)", _mb(snap_adds), f"{_mb(tree)} (the tree's files)",
                   _ratio(snap_adds, tree))
        report.add(f"  sandbox writable layer after a run (MB; validation exit {ran['validation_exit_code']})",
                   _mb(rw), f"{snapshot / MB:.0f} (whole snapshot image)", _ratio(rw, snapshot))


# --- 2: a real suite of over a minute through Genesis --------------------------

def _networkx_repo(scratch: Path) -> Path:
    """networkx's sdist from PyPI, downloaded now, as a one-commit git repository."""
    download = scratch / "pypi"
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                    "-d", str(download), f"networkx=={NETWORKX}"], check=True, capture_output=True, timeout=300)
    (archive,) = download.glob("networkx-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(scratch / "unpacked", filter="data")
    repo = scratch / "unpacked" / f"networkx-{NETWORKX}"
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, *COMMIT_AS, "commit", "-q", "-m", f"networkx {NETWORKX} (sdist from PyPI)")
    return repo


def _direct_run(image: str) -> tuple[float, int, str]:
    """The validation command in a container of ``image``: wall seconds, exit code, pytest's summary."""
    command = ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000",
               "--label", f"{BENCH_LABEL}={RUN_ID}", "--cpus", str(CPU), "--memory", MEMORY.replace("Gi", "g"),
               "--memory-swap", MEMORY.replace("Gi", "g"), "--pids-limit", str(PIDS), "--cap-drop", "ALL",
               "--security-opt", "no-new-privileges", "--init", "--tmpfs", "/tmp:rw,nosuid,nodev,size=256m",
               # uid/gid, not mode=1777: this engine (20.10) keeps a tmpfs root 0755 root-owned whatever the mode.
               "--tmpfs", "/genesis/out:rw,nosuid,nodev,uid=1000,gid=1000",
               "--entrypoint", NETWORKX_TEST[0], image, *NETWORKX_TEST[1:]]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    return wall, done.returncode, summary


def _experiment(app, repo: Path, index: int) -> dict:
    from orchestrator.domain.models import Phase

    readme = (repo / "README.rst").read_text()
    body = {"experiment_id": str(uuid.uuid4()), "instance_id": "bench", "repo": "networkx", "base_ref": "main",
            "changes": {"files": [{"path": "README.rst", "content": readme + f"\n.. benchmark note {index}\n"}]},
            "resources": {"cpu": CPU, "memory": MEMORY, "pids": PIDS}, "timeout_ms": 900_000}
    started = time.perf_counter()
    result = app.intake.submit(json.dumps(body).encode())
    assert result.error is None, f"rejected: {result.error}"
    asyncio.run(app.controller(leader=False).run_until_idle(timeout_s=900))
    drained = time.perf_counter() - started
    view = app.store.get(result.view.id)
    assert view.phase is Phase.SUCCEEDED and view.outcome and view.outcome.metrics, \
        f"networkx experiment ended {view.phase.value} {view.reason}: {view.message}"
    assert view.finished_at is not None
    metrics = view.outcome.metrics
    return {"wall_s": (view.finished_at - view.created_at).total_seconds(), "drained_s": drained,
            "validation_s": metrics.runtime_ms / 1000, "tests": metrics.test_count, "failures": metrics.failures,
            "recommendation": view.recommendation.value if view.recommendation else None, "image": view.image}


def _suite(report: Report, scratch: Path, *, n: int) -> None:
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    repo = _networkx_repo(scratch)
    config = scratch / "genesis.yaml"
    config.write_text(json.dumps({
        # An installation of its own: another Genesis on this engine (a test run's
        # `genesis serve`) reaps only its own installation's sandboxes, and so does this one.
        "home": str(scratch / "home"), "installation": f"bench-{RUN_ID}", "extra_labels": {BENCH_LABEL: RUN_ID},
        "preserve_ttl_s": 0,
        "metrics_port": 0, "build": {"ca_bundle": str(HOST_BUNDLE)},
        "repos": {"networkx": {"path": str(repo), "toolchain": "python", "environment": NETWORKX_ENV,
                               "validation": {"command": NETWORKX_TEST}}}}))
    app = App(load_settings(config))
    try:
        first = _experiment(app, repo, 0)  # builds the environment and snapshot, runs and caches the baseline
        ours, direct = [], []
        for index in range(n):  # interleaved: drift hits both columns alike
            ours.append(_experiment(app, repo, index + 1))
            direct.append(_direct_run(first["image"]))
        client = app.docker.client  # the tiers of this real project too: snapshot → environment → toolchain
        snapshot = client.images.get(first["image"])
        environment = client.images.get(snapshot.labels["genesis.parent"])
        toolchain = client.images.get(environment.labels["genesis.parent"])
        sizes = [int(i.attrs["Size"]) for i in (toolchain, environment, snapshot)]
    finally:
        app.close()
    for wall, code, summary in direct:
        assert code == 0, f"the direct run exited {code}: {summary}"
    g = stats_ms([o["wall_s"] * 1000 for o in ours])
    v = stats_ms([o["validation_s"] * 1000 for o in ours])
    d = stats_ms([w * 1000 for w, _, _ in direct])
    report.data["experiment_overhead"] = {"project": f"networkx=={NETWORKX}", "first": first, "genesis": ours,
                                          "direct": [{"wall_s": w, "exit_code": c, "summary": s} for w, c, s in direct],
                                          "genesis_wall": g, "validation": v, "direct_wall": d}
    report.add(f"experiment, networkx {NETWORKX} ({ours[0]['tests']} tests), baseline cached: submit to "
               f"finalized, median of {n} (s)", f"{g['median_ms'] / 1000:.1f}",
               f"{d['median_ms'] / 1000:.1f} (docker run --rm, same image)", _ratio(g["median_ms"], d["median_ms"]))
    report.add("  min / max (s)", f"{g['min_ms'] / 1000:.1f} / {g['max_ms'] / 1000:.1f}",
               f"{d['min_ms'] / 1000:.1f} / {d['max_ms'] / 1000:.1f}", "goal <= 1.05x")
    report.add("  validation runtime Genesis measured (s)", f"{v['median_ms'] / 1000:.1f}",
               f"{d['median_ms'] / 1000:.1f} (direct run)", _ratio(v["median_ms"], d["median_ms"]))
    report.add("  first experiment: environment, snapshot, baseline and run (s)", f"{first['wall_s']:.1f}",
               f"{d['median_ms'] / 1000:.1f} (direct run)", _ratio(first["wall_s"] * 1000, d["median_ms"]))
    tool, env_adds, snap_adds, tree = sizes[0], sizes[1] - sizes[0], sizes[2] - sizes[1], _tree_bytes(repo, "HEAD")
    report.data.setdefault("disk_per_tier", {})["networkx"] = {"toolchain_bytes": tool, "environment_adds": env_adds,
                                                "snapshot_adds": snap_adds, "tree_bytes": tree}
    report.add(f"disk, python (networkx {NETWORKX}): environment tier adds (MB)", _mb(env_adds),
               f"{tool / MB:.0f} (toolchain image)", _ratio(env_adds, tool))
    report.add("  snapshot tier adds (MB)", _mb(snap_adds), f"{_mb(tree)} (the tree's files)",
               _ratio(snap_adds, tree))


def _remove_images() -> None:
    """This run's images, snapshots before the environments they are FROM (a parent
    with children cannot be removed); toolchain images carry no bench label and stay."""
    client = docker.from_env()
    try:
        for container in client.containers.list(all=True, filters={"label": f"{BENCH_LABEL}={RUN_ID}"}):
            container.remove(force=True)
        order = {"snapshot": 0, "environment": 1}
        images = client.images.list(filters={"label": f"{BENCH_LABEL}={RUN_ID}"})
        for image in sorted(images, key=lambda i: order.get((i.labels or {}).get("genesis.kind", ""), 2)):
            try:
                client.images.remove(image.id, force=True)
            except docker.errors.ImageNotFound:
                pass
    finally:
        client.close()


def run(report: Report, *, runs: int) -> None:
    n = max(1, min(3, runs))  # experiments of over a minute each: at most three
    with tempfile.TemporaryDirectory(prefix="genesis-bench-env-") as scratch_dir:
        scratch = Path(scratch_dir)
        try:
            projects = _projects(scratch)
            asyncio.run(_tiers(report, projects, runs=runs, reuse_n=n, scratch=scratch))
            (scratch / "networkx").mkdir()
            _suite(report, scratch / "networkx", n=n)
        finally:
            _remove_images()

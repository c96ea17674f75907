"""Sandbox figures on the Docker runtime, beside raw Docker on the same image.

1. start: Genesis's cold path (create with the change delivered, start, the
   runner applies the change, up to the moment the validation command
   starts) against ``docker run --rm IMAGE true`` (CLI, create to removal).
2. setup vs repo size: the same one-file change on a 10 MB and a 500 MB
   synthetic monorepo: per-experiment setup time and the sandbox's own disk
   (its writable layer), which should not grow with the repository.
3. teardown: removing a finished sandbox (rollback), median and max.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import BENCH_LABEL, RUN_ID, Report, git, stats_ms
from orchestrator.runtimes.base import SandboxSpec
from orchestrator.runtimes.docker import DockerRuntime
from orchestrator.runtimes.docker_images import DockerImages
from orchestrator.snapshots.builder import SnapshotBuilder
from orchestrator.settings import PROJECT_ROOT, RepoConfig

CHANGE = {"files": [{"path": "lib/changed.py", "content": "VALUE = 42\n" * 50}]}
VALIDATION = {"command": ["true"], "workdir": "."}


def synthetic_repo(root: Path, *, megabytes: int) -> Path:
    """A git repo of incompressible files totalling ``megabytes`` MB."""
    repo = root / f"mono-{megabytes}mb"
    (repo / "lib").mkdir(parents=True)
    (repo / "data").mkdir()
    file_mb = 1 if megabytes >= 100 else 0.1
    for index in range(int(megabytes / file_mb)):
        (repo / "data" / f"blob{index:05d}.bin").write_bytes(os.urandom(int(file_mb * 2**20)))
    (repo / "lib" / "changed.py").write_text("VALUE = 1\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "core.compression=0",
        "commit", "-q", "-m", "synthetic")
    return repo


async def genesis_start(runtime: DockerRuntime, image: str, index: int) -> tuple[float, int]:
    """Cold path in ms (create → validation started) and the sandbox's disk in bytes: as a
    cold sandbox starts on Docker (``Sandboxes.launch``), its bundle on stdin at the start."""
    name = f"genesis-bench-{RUN_ID}-{index}"
    spec = SandboxSpec(name=name, image=image, labels={BENCH_LABEL: RUN_ID},
                       bundle=json.dumps({"changes": CHANGE, "validation": VALIDATION}).encode(),
                       cpu=1, memory_bytes=512 * 2**20, pids=256, bundle_stdin=True)
    created_wall_ms = time.time() * 1000
    uid = await runtime.create(spec)
    await runtime.deliver(name, spec.bundle, uid=uid, start=True, timeout_s=60)
    await runtime.wait(name, timeout_s=60)
    output = await runtime.collect(name, max_file_bytes=2**20)
    result = json.loads(output.files["result.json"])
    listed = runtime.client.api.containers(all=True, size=True, filters={"name": f"^{name}$"})
    size = listed[0].get("SizeRw") or 0 if listed else 0
    await runtime.remove(name)
    return result["validation_started_ms"] - created_wall_ms, size


def docker_run_true(image: str) -> float:
    started = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--network", "none", "--label", f"{BENCH_LABEL}={RUN_ID}",
                    "--entrypoint", "true", image], check=True)
    return (time.perf_counter() - started) * 1000


async def teardown_sample(runtime: DockerRuntime, image: str, index: int) -> float:
    name = f"genesis-bench-td-{RUN_ID}-{index}"
    spec = SandboxSpec(name=name, image=image, labels={BENCH_LABEL: RUN_ID},
                       bundle=json.dumps({"changes": CHANGE, "validation": VALIDATION}).encode(),
                       cpu=1, memory_bytes=512 * 2**20, pids=256)
    await runtime.create(spec)
    await runtime.start(name)
    await runtime.wait(name, timeout_s=60)
    started = time.perf_counter()
    await runtime.remove(name)
    return (time.perf_counter() - started) * 1000


async def run(report: Report, *, runs: int, big_mb: int) -> None:
    runtime = DockerRuntime()
    base_image = os.environ.get("GENESIS_BASE_IMAGE", "genesis/base:bookworm")
    builder = SnapshotBuilder(DockerImages(runtime.client), images_dir=PROJECT_ROOT / "images",
                              base_image=base_image, extra_labels={BENCH_LABEL: RUN_ID})
    with tempfile.TemporaryDirectory(prefix="genesis-bench-") as scratch:
        small = synthetic_repo(Path(scratch), megabytes=10)
        snap_small = await builder.ensure(repo_name=f"bench-{RUN_ID}-10mb", repo=RepoConfig(path=small),
                                          commit=git(small, "rev-parse", "HEAD").strip())
        # 1. start overhead, interleaved so drift hits both sides alike
        ours, raw = [], []
        for index in range(runs):
            ours.append((await genesis_start(runtime, snap_small.tag, index))[0])
            raw.append(docker_run_true(snap_small.tag))
        o, r = stats_ms(ours), stats_ms(raw)
        report.data["start"] = {"genesis_cold_path": o, "docker_run_rm_true": r}
        report.add(f"sandbox start, median of {runs} (ms)", f"{o['median_ms']:.0f}", f"{r['median_ms']:.0f}",
                   f"{o['median_ms'] / r['median_ms']:.2f}x")
        report.add("  p90 / max (ms)", f"{o['p90_ms']:.0f} / {o['max_ms']:.0f}",
                   f"{r['p90_ms']:.0f} / {r['max_ms']:.0f}", "")
        # 2. setup cost against repository size
        big = synthetic_repo(Path(scratch), megabytes=big_mb)
        snap_big = await builder.ensure(repo_name=f"bench-{RUN_ID}-{big_mb}mb", repo=RepoConfig(path=big),
                                        commit=git(big, "rev-parse", "HEAD").strip())
        samples: dict[str, list] = {"10MB": [], f"{big_mb}MB": []}
        for index in range(runs):  # interleaved, as above
            for label, snap in (("10MB", snap_small), (f"{big_mb}MB", snap_big)):
                samples[label].append(await genesis_start(runtime, snap.tag, 1000 + 2 * index + len(label)))
        snaps = {"10MB": snap_small, f"{big_mb}MB": snap_big}
        sizes = {label: (stats_ms([s[0] for s in got]), max(s[1] for s in got), snaps[label])
                 for label, got in samples.items()}
        (s_ms, s_disk, s_snap), (b_ms, b_disk, b_snap) = sizes["10MB"], sizes[f"{big_mb}MB"]
        report.data["setup_vs_repo"] = {k: {"setup": v[0], "sandbox_disk_bytes": v[1], "image_bytes": v[2].size_bytes,
                                            "snapshot_build_s": v[2].seconds} for k, v in sizes.items()}
        report.add(f"setup per experiment, {big_mb}MB vs 10MB repo (ms)", f"{b_ms['median_ms']:.0f}",
                   f"{s_ms['median_ms']:.0f}", f"{b_ms['median_ms'] / s_ms['median_ms']:.2f}x")
        report.add(f"sandbox disk, {big_mb}MB vs 10MB repo (KiB)", f"{b_disk / 1024:.0f}", f"{s_disk / 1024:.0f}",
                   f"{b_disk / max(s_disk, 1):.2f}x")
        report.add(f"  repo size ratio (snapshot build, once: {b_snap.seconds:.1f}s vs {s_snap.seconds:.1f}s)",
                   f"{big_mb}MB", "10MB", f"{big_mb / 10:.0f}x")
        # 3. teardown (rollback) of a finished sandbox
        removal = stats_ms([await teardown_sample(runtime, snap_small.tag, i) for i in range(runs)])
        report.data["teardown"] = removal
        report.add(f"teardown (rollback), median / max of {runs} (ms)",
                   f"{removal['median_ms']:.0f} / {removal['max_ms']:.0f}", "target < 1000", "")

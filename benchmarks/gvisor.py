"""gVisor (``sandbox_runtime: runsc``) beside runc, on this host: what a user-space kernel costs.

1. cold start: ``docker run --rm --network none IMAGE true`` under each (CLI, create to removal).
2. Genesis's cold path: create with the change delivered, start, the runner applies
   it, up to the moment the validation command starts (benchmarks/sandbox.py's figure).
3. a real pytest suite: the sample monorepo's (scripts/make-sample-repo.sh, 9 tests)
   as Genesis runs it in a sandbox, its snapshot image, the repository's default
   validation (``python3 -m pytest -q ... --junitxml``): the ``runtime_ms`` the runner
   measures, the figure the verdict compares against the baseline.

Each pair is interleaved, so drift on a shared host hits both runtimes alike. The
engine must have runsc registered (scripts/register-runsc.sh); KVM is not available
on these machines, so runsc uses its ptrace platform, the slowest of its platforms.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report, git, stats_ms
from benchmarks.sandbox import genesis_start
from orchestrator.runtimes.base import SandboxSpec
from orchestrator.runtimes.docker import DockerRuntime
from orchestrator.runtimes.docker_images import DockerImages
from orchestrator.settings import DEFAULT_VALIDATION, PROJECT_ROOT, RepoConfig
from orchestrator.snapshots.builder import SnapshotBuilder

RUNTIMES = ("runc", "runsc")


def docker_run_true(image: str, runtime: str) -> float:
    started = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", "--runtime", runtime, "--network", "none",
                    "--label", f"{BENCH_LABEL}={RUN_ID}", "--entrypoint", "true", image], check=True)
    return (time.perf_counter() - started) * 1000


async def suite_ms(runtime: DockerRuntime, image: str, index: int) -> float:
    """The validation's run time (the runner's ``runtime_ms``) of the repository's own pytest suite."""
    name = f"genesis-bench-gv-{RUN_ID}-{runtime.sandbox_runtime}-{index}"
    bundle = {"changes": {"files": []}, "validation": DEFAULT_VALIDATION.model_dump()}
    spec = SandboxSpec(name=name, image=image, labels={BENCH_LABEL: RUN_ID}, bundle=json.dumps(bundle).encode(),
                       cpu=1, memory_bytes=512 * 2**20, pids=256)
    await runtime.create(spec)
    await runtime.start(name)
    await runtime.wait(name, timeout_s=300)
    result = json.loads((await runtime.collect(name, max_file_bytes=2**20)).files["result.json"])
    await runtime.remove(name)
    assert result["exit_code"] == 0, result
    return float(result["runtime_ms"])


def _row(report: Report, name: str, figures: dict[str, dict]) -> None:
    runc, runsc = figures["runc"]["median_ms"], figures["runsc"]["median_ms"]
    report.add(name, f"{runsc:.0f}", f"{runc:.0f}", f"{runsc / runc:.2f}x")


async def run(report: Report, *, runs: int) -> None:
    runtimes = {name: DockerRuntime(sandbox_runtime=name) for name in RUNTIMES}
    runtimes["runsc"].capabilities  # refuses at once when the engine has no runsc registered
    builder = SnapshotBuilder(DockerImages(runtimes["runc"].client), images_dir=PROJECT_ROOT / "images",
                              base_image="genesis/base:bookworm", extra_labels={BENCH_LABEL: RUN_ID})
    with tempfile.TemporaryDirectory(prefix="genesis-bench-gv-") as scratch:
        repo = Path(scratch) / "monorepo"
        subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(repo)], check=True,
                       capture_output=True)
        snapshot = await builder.ensure(repo_name=f"bench-{RUN_ID}-gvisor", repo=RepoConfig(path=repo),
                                        commit=git(repo, "rev-parse", "HEAD").strip())
    samples: dict[str, dict[str, list[float]]] = {figure: {name: [] for name in RUNTIMES}
                                                  for figure in ("docker_run", "cold_path", "suite")}
    for index in range(runs):
        for name, runtime in runtimes.items():
            samples["docker_run"][name].append(docker_run_true(snapshot.tag, name))
            samples["cold_path"][name].append((await genesis_start(runtime, snapshot.tag, 2000 + 2 * index
                                                                   + (name == "runsc")))[0])
            samples["suite"][name].append(await suite_ms(runtime, snapshot.tag, index))
    figures = {figure: {name: stats_ms(got) for name, got in by_runtime.items()}
               for figure, by_runtime in samples.items()}
    report.data["gvisor"] = figures
    report.add("gVisor: runsc (genesis column) vs runc (baseline column)", "", "", "")
    _row(report, f"  docker run --rm true, median of {runs} (ms)", figures["docker_run"])
    _row(report, f"  Genesis cold path to validation start, median of {runs} (ms)", figures["cold_path"])
    _row(report, f"  sample monorepo's pytest suite (9 tests), median of {runs} (ms)", figures["suite"])
    for runtime in runtimes.values():
        runtime.close()

"""What isolation costs, on this host (``--only isolation``).

1. Disk quota on sandbox start: ``docker run --rm --network none IMAGE true``
   (create to removal) on a dockerd of its own on btrfs with quotas, with
   ``--storage-opt size=1G`` beside the same without it; the main daemon's
   overlay2 run beside them for scale. The btrfs daemon is tests/btrfsdocker.py's
   (a loop file, its own bridge; everything undone at the end).
2. The orchestrator's memory during a 1 GB log flood: a real experiment (an App
   in this process: the orchestrator) whose validation writes 1 GB to stdout;
   the peak growth of this process's resident memory while it runs, sampled
   every 50 ms, beside the same for a quiet experiment. Also the stored log's
   size (capped) and the engine's log files at their peak.

Runs are interleaved. Needs root (loop devices, mount) and btrfs-progs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report, stats_ms

sys.path.insert(0, str(ROOT / "tests"))
from btrfsdocker import btrfs_docker  # noqa: E402 - the btrfs daemon lives with the tests

IMAGE = "genesis/base:bookworm"
MB = 2**20


def run_true(host: str | None, *, quota: bool) -> float:
    argv = ["docker", *(["-H", host] if host else []), "run", "--rm", "--network", "none",
            "--label", f"{BENCH_LABEL}={RUN_ID}", *(["--storage-opt", "size=1G"] if quota else []),
            "--entrypoint", "true", IMAGE]
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return (time.perf_counter() - started) * 1000


def disk_quota(report: Report, *, runs: int) -> None:
    samples: dict[str, list[float]] = {"btrfs+quota": [], "btrfs": [], "overlay2": []}
    with btrfs_docker(load=(IMAGE,)) as url:
        for _ in range(2):  # warm both daemons
            run_true(url, quota=True), run_true(None, quota=False)
        for _ in range(runs):
            samples["btrfs+quota"].append(run_true(url, quota=True))
            samples["btrfs"].append(run_true(url, quota=False))
            samples["overlay2"].append(run_true(None, quota=False))
    figures = {name: stats_ms(values)["median_ms"] for name, values in samples.items()}
    report.add("sandbox start, btrfs with a 1G quota (median ms)", f"{figures['btrfs+quota']:.0f}",
               f"{figures['btrfs']:.0f} (btrfs, none)", f"{figures['btrfs+quota'] / figures['btrfs']:.2f}x")
    report.add("  the same beside overlay2 without quota (median ms)", f"{figures['btrfs+quota']:.0f}",
               f"{figures['overlay2']:.0f} (overlay2)", f"{figures['btrfs+quota'] / figures['overlay2']:.2f}x")


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _peak_growth(work) -> tuple[int, object]:
    """``work()``'s result and how far this process's resident memory rose while it ran."""
    base, peak, stop = _rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss())
            stop.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = work()
    finally:
        stop.set()
        sampler.join()
    return max(peak[0] - base, 0), result


def log_flood(report: Report, *, flood_mb: int = 1024) -> None:
    from orchestrator.app import App
    from orchestrator.pipeline import artifacts
    from orchestrator.settings import load_settings

    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import make_repo, request_body, run_experiment

    home = Path(tempfile.mkdtemp(prefix="genesis-bench-flood-"))
    config = home / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(home), "extra_labels": {BENCH_LABEL: RUN_ID}, "installation": f"bench-{RUN_ID}",
        "repos": {"monorepo": {"path": str(make_repo(home / "monorepo")), "allow_validation_override": True}}}))
    app = App(load_settings(config))
    flood = f"""
import sys
line = b"x" * 1023 + b"\\n"
for _ in range({flood_mb} * 1024):
    sys.stdout.buffer.write(line)
"""
    body = lambda script: request_body(  # noqa: E731
        changes={"files": [{"path": "flood.py", "content": script}]},
        validation={"command": ["python3", "flood.py"], "report": "exit_code"},
        resources={"cpu": 1, "memory": "256Mi", "pids": 64}, timeout_ms=600_000)
    try:
        run_experiment(app, body("print('warm')\n"))  # imports, snapshot, baseline
        quiet, _ = _peak_growth(lambda: run_experiment(app, body("print('quiet')\n")))
        grown, view = _peak_growth(lambda: run_experiment(app, body(flood)))
        stored = (app.settings.artifacts_dir / view.id / artifacts.LOG_FILE).stat().st_size
        assert view.phase.value == "Succeeded", view.message
    finally:
        app.close()
        subprocess.run(["rm", "-rf", str(home)], check=False)
    report.add(f"orchestrator memory growth, {flood_mb} MB on stdout (MB)", f"{grown / MB:.0f}",
               f"{quiet / MB:.0f} (a quiet run)", f"{grown / max(quiet, MB):.1f}x")
    report.add("  stored log of the flood (MB)", f"{stored / MB:.1f}", f"{flood_mb} (written)",
               f"{stored / (flood_mb * MB):.4f}x")


def run(report: Report, *, runs: int) -> None:
    disk_quota(report, runs=runs)
    log_flood(report)

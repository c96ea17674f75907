"""Cost of the metrics path.

1. /metrics scrape duration and size with 50 running sandboxes and 10,000
   finished experiments, beside the same endpoint with none of either.
2. Orchestrator CPU per controller pass with 50 running sandboxes, with
   per-sandbox sampling on every pass, beside the same passes with sampling off.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report, stats_ms

SANDBOXES = int(__import__("os").environ.get("GENESIS_BENCH_SANDBOXES", "50"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _scrape(port: int, runs: int) -> tuple[dict, int]:
    samples, size = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            size = len(response.read())
        samples.append((time.perf_counter() - started) * 1000)
    return stats_ms(samples), size


def _running_records(app, names: list[str], commit: str) -> list[str]:
    from datetime import timedelta

    from orchestrator.domain.intake import parse_request
    from orchestrator.domain.models import Phase
    from orchestrator.store.repository import utcnow

    ids = []
    for name in names:
        body = {"experiment_id": name.removeprefix("genesis-bench-sb-"), "instance_id": "bench", "repo": "monorepo",
                "base_ref": commit, "changes": {"files": [{"path": "x", "content": "x"}]},
                "resources": {"cpu": 0.01, "memory": "16Mi"}}
        request = parse_request(body, app.settings.intake_limits(app.runtime.capabilities))
        view, _ = app.store.submit(request, commit=commit)
        app.store.admit(view.id, gpus=(), actor="bench")
        app.store.transition(view.id, Phase.RUNNING, reason="Bench", sandbox_name=name,
                             deadline_at=utcnow() + timedelta(hours=1))
        ids.append(view.id)
    return ids


def run(report: Report, *, runs: int) -> None:
    import docker
    from prometheus_client import start_http_server

    from orchestrator.app import App
    from orchestrator.settings import load_settings
    from orchestrator.telemetry import metrics

    port = _free_port()
    start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    empty, empty_size = _scrape(port, runs)
    client = docker.from_env()
    image = next(i for i in client.images.list(filters={"label": "genesis.kind=toolchain"})).tags[0]
    with tempfile.TemporaryDirectory(prefix="genesis-bench-obs-") as scratch:
        home = Path(scratch)
        subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(home / "repo")], check=True)
        commit = subprocess.run(["git", "-C", str(home / "repo"), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        (home / "g.yaml").write_text(json.dumps({"home": str(home), "repos": {"monorepo": {"path": str(home / "repo")}},
                                                 "max_concurrent": 100}))
        (home / "g.yaml").write_text(json.dumps({"home": str(home), "repos": {"monorepo": {"path": str(home / "repo")}},
                                                 "max_concurrent": 100, "pass_interval_s": 1.0,
                                                 "installation": f"bench-{RUN_ID}"}))
        app = App(load_settings(home / "g.yaml"))
        names = [f"genesis-bench-sb-{RUN_ID}-{i:02d}" for i in range(SANDBOXES)]
        ids = _running_records(app, names, commit)
        for name, experiment_id in zip(names, ids):
            client.containers.run(image, ["600"], entrypoint="sleep", name=name, detach=True, network_mode="none",
                                  labels={BENCH_LABEL: RUN_ID, "genesis.managed-by": "genesis",
                                          "genesis.installation": f"bench-{RUN_ID}",
                                          "genesis.experiment-id": experiment_id})
        for index in range(10_000):  # finished experiments: bounded labels, so a constant number of series
            metrics.observe_finished(status="success" if index % 5 else "failed",
                                     recommendation=("merge", "rollback", "merge_with_adaptations")[index % 3],
                                     reason=None if index % 5 else "timeout", experiment_type=f"type-{index % 12}",
                                     risk_level=("low", "medium", "high")[index % 3], duration_s=index % 600)
        async def cpu_per_second(sampling: bool, seconds: float = 10.0) -> tuple[float, float]:
            """Orchestrator CPU seconds per wall second: passes every 1 s, sampler on or off."""
            controller = app.controller(leader=False)
            controller.sample_interval_s = 1.0 if sampling else 0.0
            cpu0, wall0 = time.process_time(), time.perf_counter()
            runner = asyncio.create_task(controller.run())
            await asyncio.sleep(seconds)
            controller.shutdown()
            await runner
            return (time.process_time() - cpu0) / (time.perf_counter() - wall0), 0.0

        async def one_round() -> float:
            from concurrent.futures import ThreadPoolExecutor
            asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))  # as run() does
            controller = app.controller(leader=False)
            started = time.perf_counter()
            count = await controller.sample_sandboxes()
            assert count == SANDBOXES, count
            return time.perf_counter() - started

        off_cpu, _ = asyncio.run(cpu_per_second(False))
        on_cpu, _ = asyncio.run(cpu_per_second(True))
        round_s = asyncio.run(one_round())
        full, full_size = _scrape(port, runs)
        series = sum(1 for line in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
                     .splitlines() if line.startswith("genesis_sandbox_"))
        app.close()
    report.data["observability"] = {"scrape_empty": empty, "scrape_full": full, "bytes_empty": empty_size,
                                    "bytes_full": full_size, "sandbox_series": series,
                                    "cpu_per_second": {"sampling": on_cpu, "no_sampling": off_cpu},
                                    "sampling_round_s": round_s}
    report.add(f"/metrics scrape, {SANDBOXES} sandboxes + 10k finished (ms)", f"{full['median_ms']:.1f}",
               f"{empty['median_ms']:.1f} (empty)", f"{full['median_ms'] / empty['median_ms']:.2f}x")
    report.add("  /metrics size (KiB)", f"{full_size / 1024:.1f}", f"{empty_size / 1024:.1f}",
               f"{full_size / empty_size:.2f}x")
    report.add(f"orchestrator CPU, {SANDBOXES} running, sampling every 1 s (%)", f"{on_cpu * 100:.1f}",
               f"{off_cpu * 100:.1f} (no sampling)", f"{on_cpu / off_cpu:.2f}x")
    report.add(f"  one sampling round of {SANDBOXES} sandboxes, concurrent (s)", f"{round_s:.2f}", "", "")

"""Shared bits: a labelled scratch area, statistics and the result table."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH_LABEL = "genesis.bench"
RUN_ID = uuid.uuid4().hex[:10]
ROOT = Path(__file__).resolve().parents[1]


def stats_ms(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {"n": len(ordered), "median_ms": statistics.median(ordered), "min_ms": ordered[0],
            "max_ms": ordered[-1], "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]}


@dataclass
class Report:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def add(self, name: str, genesis: str, baseline: str, ratio: str) -> None:
        self.rows.append((name, genesis, baseline, ratio))

    def print(self) -> None:
        headers = ("figure", "genesis", "baseline", "ratio")
        widths = [max(len(r[i]) for r in [headers, *self.rows]) for i in range(4)]
        for row in [headers, *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.data, indent=2, default=str))


def raw_docker_runs(image: str, count: int, level: int = 1) -> float:
    """Seconds for ``count`` raw ``docker run --rm`` of ``image`` (``true``, no network),
    ``level`` at a time (1: one after another, the raw loop)."""
    script = (f"seq {count} | xargs -P {level} -I{{}} docker run --rm --network none --label "
              f"{BENCH_LABEL}={RUN_ID} --entrypoint true {image} >/dev/null")
    started = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - started


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def cleanup(client) -> None:
    selector = {"label": f"{BENCH_LABEL}={RUN_ID}"}
    for container in client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    for image in client.images.list(filters=selector):
        client.images.remove(image.id, force=True)

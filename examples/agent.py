"""An agent, as Genesis sees one: send experiment requests over NATS and await
their outcomes. Copy this to start an agent of your own.

    python examples/agent.py [--nats nats://127.0.0.1:4222] REQUEST.yaml [REQUEST.yaml ...]

Each request gets a fresh experiment id (the same id twice would be a
duplicate and not run again). Prints each outcome: the recommendation, the
metrics beside the baseline, and the error when it failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from orchestrator.client import GenesisClient  # noqa: E402

FIGURES = ("success_rate", "regression", "llm_reduction", "performance_delta", "runtime_ms", "test_count",
           "failures", "memory_peak_mb", "cpu_usage_percent")


def show(name: str, outcome: dict) -> str:
    lines = [f"{name}: {outcome['status']} -> {outcome['recommendation']}  (experiment {outcome['experiment_id']})"]
    if outcome.get("error"):
        lines.append(f"  error {outcome['error']['code']}: {outcome['error']['message']}")
    metrics, baseline = outcome.get("metrics") or {}, outcome.get("baseline") or {}
    for figure in FIGURES:
        if figure in metrics:
            beside = f"   baseline {baseline[figure]}" if figure in baseline else ""
            lines.append(f"  {figure:<18} {metrics[figure]}{beside}")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--out", help="also write the outcomes here, as JSON")
    parser.add_argument("requests", nargs="+")
    args = parser.parse_args()
    bodies = []
    for path in args.requests:
        body = yaml.safe_load(Path(path).read_text())
        body["experiment_id"] = str(uuid.uuid4())
        bodies.append((Path(path).stem, body))
    async with await GenesisClient.connect(args.nats) as genesis:
        outcomes = await asyncio.gather(*(genesis.run(body, timeout=args.timeout) for _, body in bodies))
    for (name, _), outcome in zip(bodies, outcomes):
        print(show(name, outcome))
    if args.out:
        Path(args.out).write_text(json.dumps({name: o for (name, _), o in zip(bodies, outcomes)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

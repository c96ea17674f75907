"""``python -m benchmarks``: run the benchmarks and print the table.

Options: ``--runs N`` (default 20), ``--big-mb M`` (default 500).
Everything created carries the label ``genesis.bench=<run>`` and is removed.
"""

from __future__ import annotations

import argparse
import asyncio

import docker

from benchmarks import sandbox
from benchmarks.common import ROOT, Report, cleanup


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=500)
    args = parser.parse_args()
    report = Report()
    client = docker.from_env()
    try:
        asyncio.run(sandbox.run(report, runs=args.runs, big_mb=args.big_mb))
    finally:
        cleanup(client)
    report.print()
    report.save(ROOT / "benchmarks" / "results" / "latest.json")


if __name__ == "__main__":
    main()

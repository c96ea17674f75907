"""``python -m benchmarks``: run the benchmarks and print the table.

Options: ``--runs N`` (default 20), ``--big-mb M`` (default 500),
``--only sandbox,controller,throughput,pools,intake,observability,kubernetes,environments,verdicts,fencing,api,peer``
(default: all),
``--count N`` experiments per throughput level (default 16). ``environments`` runs at most three
experiments of over a minute each (``min(3, --runs)``); ``verdicts`` at most three per change
kind and 50 for the flaky suite.
Everything created carries the label ``genesis.bench=<run>`` and is removed.
"""

from __future__ import annotations

import argparse
import asyncio

import docker

from benchmarks import (api, controller, environments, fencing, intake, kubernetes, observability, peer, pools,
                        sandbox, verdicts)
from benchmarks.common import ROOT, Report, cleanup


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=500)
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--only", default="sandbox,controller,throughput,intake,observability,kubernetes,"
                                          "pools,environments,verdicts,fencing,api,peer")
    args = parser.parse_args()
    only = set(args.only.split(","))
    report = Report()
    client = docker.from_env()
    try:
        if "sandbox" in only:
            asyncio.run(sandbox.run(report, runs=args.runs, big_mb=args.big_mb))
        if "controller" in only:
            controller.pass_figures(report, runs=args.runs)
        if "throughput" in only:
            controller.throughput(report, count=args.count, levels=(2, 4, 8))
        if "pools" in only:
            pools.run(report, runs=args.runs)
        if "intake" in only:
            intake.run(report)
        if "observability" in only:
            observability.run(report, runs=args.runs)
        if "kubernetes" in only:
            kubernetes.run(report, runs=args.runs, big_mb=args.big_mb)
        if "environments" in only:
            environments.run(report, runs=args.runs)
        if "verdicts" in only:
            verdicts.run(report, runs=args.runs)
        if "fencing" in only:
            fencing.run(report, runs=args.runs)
        if "api" in only:
            api.run(report, runs=args.runs)
        if "peer" in only:
            peer.run(report, runs=args.runs)
        if "isolation" in only:  # opt-in (--only isolation): needs root, loop devices and btrfs-progs
            from benchmarks import isolation
            isolation.run(report, runs=args.runs)
        if "gvisor" in only:  # opt-in (--only gvisor): needs runsc registered, scripts/register-runsc.sh
            from benchmarks import gvisor
            asyncio.run(gvisor.run(report, runs=args.runs))
    finally:
        cleanup(client)
        report.print()  # what was measured before a failure is still worth seeing
        report.save(ROOT / "benchmarks" / "results" / "latest.json")


if __name__ == "__main__":
    main()

"""``genesis top``: running sandboxes with live CPU, memory against the limit,
pids, and elapsed time against the timeout, refreshed in place.

Figures come from the runtime's cgroup accounting (the same samples as
/metrics), through the backend (local, or the server's ``/usage``); CPU % is the CPU time used between two refreshes over the
wall time between them.
"""

from __future__ import annotations

import asyncio
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from orchestrator.store.repository import utcnow


def register(sub) -> None:
    p = sub.add_parser("top", help="live resource use of running sandboxes")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    p.add_argument("--once", action="store_true", help="print one table and exit")
    p.set_defaults(run=run)


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f}Mi"


async def snapshot(backend, previous: dict[str, tuple[float, float]]) -> list[list[str]]:
    """One row per running experiment; ``previous`` keeps (cpu_seconds, time) per sandbox."""
    rows = []
    now = utcnow()
    for view, usage in await backend.running():
        stamp = time.monotonic()
        cpu0, t0 = previous.get(view.sandbox_name, (usage.cpu_seconds, stamp))
        cpu_percent = 100 * (usage.cpu_seconds - cpu0) / (stamp - t0) if stamp > t0 else 0.0
        previous[view.sandbox_name] = (usage.cpu_seconds, stamp)
        elapsed = (now - view.started_at).total_seconds() if view.started_at else 0.0
        limit = usage.memory_limit_bytes or view.spec.resources.memory_bytes
        rows.append([view.id, view.instance_id, f"{cpu_percent:.0f}% / {view.spec.resources.cpu:g}",
                     f"{_mib(usage.memory_working_set_bytes)} / {_mib(limit)}",
                     f"{100 * usage.memory_working_set_bytes / limit:.0f}%" if limit else "-",
                     f"{usage.pids} / {view.spec.resources.pids}",
                     f"{elapsed:.0f}s / {view.spec.timeout_ms / 1000:.0f}s"])
    return rows


def table(rows: list[list[str]]) -> Table:
    out = Table(title=f"genesis top — {len(rows)} running", title_justify="left")
    for header in ("EXPERIMENT", "INSTANCE", "CPU / LIMIT", "MEMORY / LIMIT", "MEM%", "PIDS / LIMIT",
                   "ELAPSED / TIMEOUT"):
        out.add_column(header, no_wrap=True)
    for row in rows:
        out.add_row(*row)
    return out


async def run(backend, args) -> int:
    interval = args.interval
    previous: dict[str, tuple[float, float]] = {}
    console = Console()
    if args.once:
        await snapshot(backend, previous)
        await asyncio.sleep(min(interval, 1.0))  # a second sample, for CPU %
        console.print(table(await snapshot(backend, previous)))
        return 0
    with Live(table(await snapshot(backend, previous)), console=console, refresh_per_second=4) as live:
        while True:
            await asyncio.sleep(interval)
            live.update(table(await snapshot(backend, previous)))

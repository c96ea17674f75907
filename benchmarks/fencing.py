"""Fencing figures: the controller's pass on both backends, and the event loop
through a database stall.

1. A pass's reads and decision (``store.desired()``, ``store.baselines()``,
   ``plan``) with 10,000 records of which 1,000 active, on SQLite and on
   PostgreSQL (goal < 100 ms), each beside the same pass at 1,000 / 100.
2. Event-loop lag (how late a 100 ms timer fires, as the controller's own
   probe measures it) while the database stalls for 10 s: a TCP proxy holds
   every byte both ways, closing nothing, then delivers them. Genesis: a
   worker reaching the store through :class:`AsyncStore` (goal p99 < 50 ms);
   baseline: the same calls made synchronously on the loop.

PostgreSQL is a throw-away server started the way the tests start theirs
(``tests/pgserver.py``, needs ``initdb``/``pg_ctl``), one fresh database per
measurement, stopped at the end. No Docker, no controller, no leases: this
measures the store's path off the loop, not leadership itself.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import create_engine, make_url, text, update

from benchmarks.common import Report
from benchmarks.controller import fill_store, store_pass
from orchestrator.domain.models import ExperimentRequest
from orchestrator.errors import StoreError
from orchestrator.store.aio import AsyncStore
from orchestrator.store.db import make_engine, upgrade
from orchestrator.store.repository import Store
from orchestrator.store.tables import ExperimentRow
from tests.chaos.netproxy import Proxy
from tests.pgserver import _start_owned_server

PROBE_S = 0.1        # the controller's LAG_PROBE_S
WORKER_PAUSE_S = 0.25  # "a few store calls a second", like a pass plus its steps
WARM_S, STALL_S, AFTER_S = 2.0, 10.0, 3.0
BIG, SMALL = (10_000, 1_000), (1_000, 100)
READ_ID = "exp-000000"  # the record the worker reads by id


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank: with ~100 probes in a stall, p99 is the second-worst."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """An empty database on the server, dropped afterwards (``postgres_url`` of the tests)."""
    name = f"genesis_b_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def pass_rows(report: Report, server_url: str, runs: int) -> None:
    data: dict = {}
    report.data["fencing"]["store_pass"] = data
    for backend in ("SQLite", "PostgreSQL"):
        figures = {}
        for total, active in (BIG, SMALL):
            if backend == "SQLite":
                figures[total] = store_pass(total, active, runs)
            else:
                with fresh_database(server_url) as url:
                    figures[total] = store_pass(total, active, runs, url=url)
        big, small = figures[BIG[0]][0], figures[SMALL[0]][0]
        data[backend] = {"10k_1k_active": big, "1k_100_active": small, "peak_bytes": figures[BIG[0]][1]}
        report.add(f"pass with the {backend} store, 10k / 1k active (ms, goal < 100)", f"{big['median_ms']:.1f}",
                   f"{small['median_ms']:.1f} (1k/100)", f"{big['median_ms'] / small['median_ms']:.1f}x")


async def _probe(samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """(when it slept, how late it woke) per 100 ms timer, as ``Controller._watch_lag``."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(PROBE_S)
        samples.append((before, max(loop.time() - before - PROBE_S, 0.0)))


async def _worker(store: Store, *, threaded: bool, calls: list[float], errors: list[str],
                  stop: asyncio.Event) -> None:
    """A pass's read and one record's, a few times a second: off the loop, or on it (the old way).
    A failed call is counted and the next one made, as the controller backs off a failed pass."""
    astore = AsyncStore(store)
    while not stop.is_set():
        try:
            if threaded:
                await astore.desired()
                await astore.get(READ_ID)
            else:
                store.desired()
                store.get(READ_ID)
            calls.append(time.monotonic())
        except StoreError as exc:
            errors.append(f"{type(exc.__cause__).__name__}: {str(exc)[:200]}")
        await asyncio.sleep(WORKER_PAUSE_S)


async def _stalled_run(store: Store, proxy: Proxy, *, threaded: bool) -> dict:
    samples: list[tuple[float, float]] = []
    calls: list[float] = []
    errors: list[str] = []
    marks: dict[str, float] = {}
    stop = asyncio.Event()

    def at(name: str, action) -> threading.Timer:
        # From a thread: in the baseline the loop itself is what the stall blocks.
        def fire() -> None:
            action()
            marks[name] = time.monotonic()
        timer = threading.Timer(dict(partition=WARM_S, heal=WARM_S + STALL_S)[name], fire)
        timer.start()
        return timer

    probe = asyncio.create_task(_probe(samples, stop))
    worker = asyncio.create_task(_worker(store, threaded=threaded, calls=calls, errors=errors, stop=stop))
    timers = [at("partition", proxy.partition), at("heal", proxy.heal)]
    try:
        await asyncio.sleep(WARM_S + STALL_S + AFTER_S)
    finally:
        for timer in timers:
            timer.join()  # a heal that never ran would leave the worker's call held forever
        stop.set()
        await asyncio.wait_for(worker, timeout=30)  # its held call returns once healed
        await probe
    start, end = marks["partition"], marks["heal"]
    # A probe counts when its sleep overlaps the stall: the baseline's one
    # wake-up 10 s late slept before the heal and woke after it.
    during = [lag for before, lag in samples if before < end and before + PROBE_S + lag > start]
    outside = [lag for before, lag in samples if before + PROBE_S + lag <= start or before >= end]
    return {"stall_s": end - start, "probes_in_stall": len(during),
            "calls_in_stall": sum(start <= t <= end for t in calls), "calls": len(calls),
            "errors": errors,
            "lag_ms": {"p50": 1000 * percentile(during, 0.5), "p99": 1000 * percentile(during, 0.99),
                       "max": 1000 * max(during)},
            "lag_outside_ms": {"p99": 1000 * percentile(outside, 0.99), "max": 1000 * max(outside)},
            "raw_lag_s": [lag for _, lag in samples]}


def stall(server_url: str, *, threaded: bool) -> dict:
    with fresh_database(server_url) as url:
        direct = make_engine(url)  # migrated and filled around the proxy: only the measured calls go through it
        upgrade(direct)
        fill_store(Store(direct), *BIG, random.Random(BIG[0]))
        with direct.begin() as conn:  # fill_store's specs are padding; ``get`` parses the one it reads
            conn.execute(update(ExperimentRow).where(ExperimentRow.id == READ_ID).values(spec=ExperimentRequest(
                experiment_id=READ_ID, instance_id="inst-0", repo="monorepo", base_ref="main",
                changes={"files": [{"path": "x.txt", "content": "x"}]}).model_dump(mode="json")))
        direct.dispose()
        target = make_url(url)
        proxy = Proxy((target.host, target.port))
        engine = make_engine(target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
        try:
            return asyncio.run(_stalled_run(Store(engine), proxy, threaded=threaded))
        finally:
            engine.dispose()
            proxy.close()


def lag_rows(report: Report, server_url: str) -> None:
    genesis = stall(server_url, threaded=True)
    baseline = stall(server_url, threaded=False)
    report.data["fencing"]["stall"] = {"async_store": genesis, "sync_on_loop": baseline}
    for figure, goal in (("p99", ", goal < 50"), ("max", ""), ("p50", "")):
        ours, theirs = genesis["lag_ms"][figure], baseline["lag_ms"][figure]
        name = (f"event-loop lag {figure}, 10 s database stall (ms{goal})" if figure == "p99"
                else f"  lag {figure} during the stall (ms)")
        report.add(name, f"{ours:.1f}", f"{theirs:.1f} (sync store on the loop)",
                   f"{ours / theirs:.2g}x" if theirs else "")
    report.add("  lag probes during the stall (a few: the loop was blocked)", str(genesis["probes_in_stall"]),
               str(baseline["probes_in_stall"]), "")


def run(report: Report, *, runs: int) -> None:
    report.data.setdefault("fencing", {})
    with contextmanager(_start_owned_server)() as server:
        pass_rows(report, server.url, runs)
        lag_rows(report, server.url)

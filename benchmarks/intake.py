"""Intake over NATS: requests durably recorded per second, publish → ack
latency, and memory under a backlog.

Genesis's intake (decode, validate, resolve the commit, record the fetch's
batch in one transaction, then ack) beside a bare JetStream consumer that
only acks (the floor set by NATS itself), on the same server:

1. a burst of ``count`` (10,000) requests queued before either consumer
   starts, drained on SQLite and on PostgreSQL (goal ≥ 2,000 a second);
2. publish → ack latency at a steady 500 requests a second (goal p99 < 50 ms);
3. the intake's resident memory while it drains a backlog of 100,000, beside
   the same for 10,000 (goal: flat).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import nats

from benchmarks.common import ROOT, Report

STEADY_RATE, STEADY_S = 500, 6
BACKLOG = 100_000


def _nats(scratch: Path) -> tuple[subprocess.Popen, str]:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = scratch / "nats.conf"
    conf.write_text(f'listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: "{scratch}/js" }}\n')
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "nats-server"), "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"nats://127.0.0.1:{port}"


def _body(commit: str) -> bytes:
    return json.dumps({"experiment_id": str(uuid.uuid4()), "instance_id": "bench", "repo": "monorepo",
                       "base_ref": commit, "changes": {"files": [{"path": "x.txt", "content": "x"}]}}).encode()


async def _queue(url: str, bodies: list[bytes], *, first: int = 0) -> dict[str, float]:
    """Publish ``bodies`` as fast as JetStream acks them (many in flight); send times by index."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sent: dict[str, float] = {}

    async def one(index: int, body: bytes) -> None:
        sent[str(index)] = time.perf_counter()
        await js.publish("genesis.experiment.request.bench", body, headers={"Bench-Index": str(index)})

    for start in range(0, len(bodies), 500):
        await asyncio.gather(*(one(first + start + i, b) for i, b in enumerate(bodies[start:start + 500])))
    await nc.close()
    return sent


async def _steady(url: str, bodies: list[bytes], rate: int) -> dict[str, float]:
    """Publish at ``rate`` a second, each on time whatever the last one's ack took."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    sent: dict[str, float] = {}
    started = time.perf_counter()
    pending = []
    for index, body in enumerate(bodies):
        delay = started + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent[str(index)] = time.perf_counter()
        pending.append(asyncio.create_task(js.publish("genesis.experiment.request.bench", body,
                                                      headers={"Bench-Index": str(index)})))
    await asyncio.gather(*pending)
    await nc.close()
    return sent


class _Acks:
    def __init__(self, expected: int) -> None:
        self.at: dict[str, float] = {}
        self.expected = expected
        self.done = asyncio.Event()

    def __call__(self, index: str) -> None:
        self.at[index] = time.perf_counter()
        if len(self.at) >= self.expected:
            self.done.set()


async def _bare(url: str, acks: _Acks) -> None:
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind("genesis-intake", "GENESIS_REQUESTS")
    try:
        while True:
            try:
                for message in await sub.fetch(64, timeout=1):
                    await message.ack()
                    acks(message.headers["Bench-Index"])
            except nats.errors.TimeoutError:
                continue
    finally:
        await nc.close()


async def _genesis(app, acks: _Acks) -> None:
    from orchestrator.messaging.connection import connect
    from orchestrator.messaging.intake import NatsIntake

    nc = await connect(app.settings.nats)
    intake = NatsIntake(nc.jetstream(), app.intake, app.settings.nats)
    original = intake.handle

    async def handle(messages):
        recorded = await original(messages)  # records the batch, then acks each
        for message in messages:
            acks(message.headers["Bench-Index"])
        return recorded

    intake.handle = handle
    try:
        await intake.run()
    finally:
        await nc.close()


async def _drain(consume, acks: _Acks, *, timeout_s: float = 900) -> float:
    """Start ``consume`` on a queued backlog; seconds until every message is acked."""
    started = time.perf_counter()
    task = asyncio.create_task(consume(acks))
    try:
        await asyncio.wait_for(acks.done.wait(), timeout=timeout_s)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return time.perf_counter() - started


async def _while_publishing(consume, url: str, bodies: list[bytes]) -> list[float]:
    """Publish at a steady rate while ``consume`` runs; publish → ack in ms."""
    acks = _Acks(len(bodies))
    task = asyncio.create_task(consume(acks))
    await asyncio.sleep(0.3)
    try:
        sent = await _steady(url, bodies, STEADY_RATE)
        await asyncio.wait_for(acks.done.wait(), timeout=120)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return [(acks.at[i] - sent[i]) * 1000 for i in sent]


async def _setup_streams(app) -> None:
    from orchestrator.messaging.connection import connect, ensure_streams
    nc = await connect(app.settings.nats)
    await ensure_streams(nc.jetstream(), app.settings.nats)
    await nc.close()


def _app(scratch: Path, url: str, name: str, database_url: str | None):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    config = scratch / f"{name}.yaml"
    config.write_text(json.dumps({"home": str(scratch / name), "repos": {"monorepo": {"path": str(scratch / "repo")}},
                                  "nats": {"url": url}, **({"database_url": database_url} if database_url else {})}))
    app = App(load_settings(config))
    asyncio.run(_setup_streams(app))
    return app


def _rss_mib() -> float:
    """This process's resident memory now (not the peak), from /proc."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


async def _drain_sampling(app, url: str, count: int, commit: str) -> tuple[float, float, float]:
    """Queue ``count``, drain them through Genesis; (seconds, RSS before, highest RSS sampled) in MiB."""
    await _queue(url, [_body(commit) for _ in range(count)])
    before, peak = _rss_mib(), 0.0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _rss_mib())
            await asyncio.sleep(0.2)

    sampler = asyncio.create_task(sample())
    seconds = await _drain(lambda acks: _genesis(app, acks), _Acks(count))
    stop.set()
    await sampler
    return seconds, before, peak


def run(report: Report, *, count: int = 10_000, backlog: int = BACKLOG) -> None:
    from tests.pgserver import _start_owned_server
    from benchmarks.fencing import fresh_database

    with tempfile.TemporaryDirectory(prefix="genesis-bench-intake-") as scratch_dir:
        scratch = Path(scratch_dir)
        proc, url = _nats(scratch)
        try:
            subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(scratch / "repo")], check=True,
                           capture_output=True)
            commit = subprocess.run(["git", "-C", str(scratch / "repo"), "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
            sqlite = _app(scratch, url, "sqlite", None)
            asyncio.run(_queue(url, [_body(commit) for _ in range(count)]))
            bare_s = asyncio.run(_drain(lambda acks: _bare(url, acks), _Acks(count)))
            burst = {}
            asyncio.run(_queue(url, [_body(commit) for _ in range(count)]))
            burst["SQLite"] = asyncio.run(_drain(lambda acks: _genesis(sqlite, acks), _Acks(count)))
            with contextlib.contextmanager(_start_owned_server)() as server, fresh_database(server.url) as db:
                postgres = _app(scratch, url, "postgres", db)
                asyncio.run(_queue(url, [_body(commit) for _ in range(count)]))
                burst["PostgreSQL"] = asyncio.run(_drain(lambda acks: _genesis(postgres, acks), _Acks(count)))
                pg_recorded = postgres.store.count()
                postgres.close()
            steady = STEADY_RATE * STEADY_S
            bare_lat = asyncio.run(_while_publishing(lambda acks: _bare(url, acks), url,
                                                     [_body(commit) for _ in range(steady)]))
            ours_lat = asyncio.run(_while_publishing(lambda acks: _genesis(sqlite, acks), url,
                                                     [_body(commit) for _ in range(steady)]))
            small = asyncio.run(_drain_sampling(sqlite, url, count, commit))
            big = asyncio.run(_drain_sampling(sqlite, url, backlog, commit))
            recorded = sqlite.store.count()
            sqlite.close()
        finally:
            proc.terminate()
            proc.wait()
    assert recorded == 2 * count + steady + backlog, f"{recorded} recorded on SQLite"
    assert pg_recorded == count, f"{pg_recorded} of {count} recorded on PostgreSQL"
    p99 = lambda xs: sorted(xs)[int(0.99 * (len(xs) - 1))]  # noqa: E731
    report.data["intake"] = {
        "count": count, "bare_s": bare_s, "genesis_s": burst,
        "steady_rate": STEADY_RATE, "genesis_latency_ms": {"median": statistics.median(ours_lat), "p99": p99(ours_lat)},
        "bare_latency_ms": {"median": statistics.median(bare_lat), "p99": p99(bare_lat)},
        "memory_mib": {str(count): {"s": small[0], "before": small[1], "peak": small[2]},
                       str(backlog): {"s": big[0], "before": big[1], "peak": big[2]}}}
    for backend, seconds in burst.items():
        report.add(f"intake, burst of {count:,} queued, {backend}: recorded+acked per second",
                   f"{count / seconds:.0f}", f"{count / bare_s:.0f} (ack only)", f"{bare_s / seconds:.2f}x")
    report.add(f"  publish → ack at a steady {STEADY_RATE}/s, median / p99 (ms)",
               f"{statistics.median(ours_lat):.1f} / {p99(ours_lat):.1f}",
               f"{statistics.median(bare_lat):.1f} / {p99(bare_lat):.1f} (ack only)", "")
    report.add(f"  intake RSS draining {backlog:,} queued: growth over the drain (MiB)",
               f"{big[2] - big[1]:.1f} ({backlog / big[0]:.0f}/s)",
               f"{small[2] - small[1]:.1f} ({count:,}: {count / small[0]:.0f}/s)", "")

"""Intake over NATS: requests durably recorded per second, and publish → ack latency.

Genesis's intake (decode, validate, resolve the commit, insert the record in
SQLite, then ack) beside a bare JetStream consumer that only acks (the
floor set by NATS itself), on the same server and the same 1,000 messages.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import nats

from benchmarks.common import ROOT, Report


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


async def _publish(url: str, bodies: list[bytes]) -> dict[str, float]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sent = {}
    for index, body in enumerate(bodies):
        sent[str(index)] = time.perf_counter()
        await js.publish("genesis.experiment.request.bench", body, headers={"Bench-Index": str(index)})
    await nc.close()
    return sent


async def _measure(url: str, bodies: list[bytes], handle) -> tuple[float, list[float]]:
    """Burst-publish while a consumer runs; (seconds to ack all, latencies in ms)."""
    acked: dict[str, float] = {}
    done = asyncio.Event()

    async def on_acked(index: str) -> None:
        acked[index] = time.perf_counter()
        if len(acked) == len(bodies):
            done.set()

    consumer = asyncio.create_task(handle(on_acked))
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    sent = await _publish(url, bodies)
    await asyncio.wait_for(done.wait(), timeout=600)
    consumer.cancel()
    return max(acked.values()) - started, [(acked[i] - sent[i]) * 1000 for i in sent]


async def _bare(url: str, on_acked) -> None:
    nc = await nats.connect(url)
    sub = await nc.jetstream().pull_subscribe_bind("genesis-intake", "GENESIS_REQUESTS")
    try:
        while True:
            try:
                for message in await sub.fetch(64, timeout=1):
                    await message.ack()
                    await on_acked(message.headers["Bench-Index"])
            except nats.errors.TimeoutError:
                continue
    finally:
        await nc.close()


async def _genesis(app, url: str, on_acked) -> None:
    from orchestrator.messaging.connection import connect
    from orchestrator.messaging.intake import NatsIntake

    nc = await connect(app.settings.nats)
    intake = NatsIntake(nc.jetstream(), app.intake, app.settings.nats)
    original = intake.handle

    async def handle(message):
        await original(message)  # records, then acks
        await on_acked(message.headers["Bench-Index"])

    intake.handle = handle
    try:
        await intake.run()
    finally:
        await nc.close()


async def _setup_streams(app) -> None:
    from orchestrator.messaging.connection import connect, ensure_streams
    nc = await connect(app.settings.nats)
    await ensure_streams(nc.jetstream(), app.settings.nats)
    await nc.close()


def run(report: Report, *, count: int) -> None:
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="genesis-bench-intake-") as scratch_dir:
        scratch = Path(scratch_dir)
        proc, url = _nats(scratch)
        try:
            subprocess.run([str(ROOT / "scripts" / "make-sample-repo.sh"), str(scratch / "repo")], check=True)
            commit = subprocess.run(["git", "-C", str(scratch / "repo"), "rev-parse", "HEAD"], check=True,
                                    capture_output=True, text=True).stdout.strip()
            config = scratch / "genesis.yaml"
            config.write_text(json.dumps({"home": str(scratch / "home"),
                                          "repos": {"monorepo": {"path": str(scratch / "repo")}},
                                          "nats": {"url": url}}))
            app = App(load_settings(config))
            asyncio.run(_setup_streams(app))
            bare_s, bare_lat = asyncio.run(_measure(url, [_body(commit) for _ in range(count)],
                                                    lambda cb: _bare(url, cb)))
            ours_s, ours_lat = asyncio.run(_measure(url, [_body(commit) for _ in range(count)],
                                                    lambda cb: _genesis(app, url, cb)))
            recorded = app.store.count()
            app.close()
        finally:
            proc.terminate()
            proc.wait()
    assert recorded == count, f"{recorded} of {count} recorded"
    p99 = lambda xs: sorted(xs)[int(0.99 * (len(xs) - 1))]  # noqa: E731
    report.data["intake"] = {"count": count, "genesis_s": ours_s, "bare_s": bare_s,
                             "genesis_latency_ms": {"median": statistics.median(ours_lat), "p99": p99(ours_lat)},
                             "bare_latency_ms": {"median": statistics.median(bare_lat), "p99": p99(bare_lat)}}
    report.add(f"intake, burst of {count}: recorded+acked per second", f"{count / ours_s:.0f}",
               f"{count / bare_s:.0f} (ack only)", f"{bare_s / ours_s:.2f}x")
    report.add("  publish → ack latency, median / p99 (ms)",
               f"{statistics.median(ours_lat):.0f} / {p99(ours_lat):.0f}",
               f"{statistics.median(bare_lat):.0f} / {p99(bare_lat):.0f}", "")

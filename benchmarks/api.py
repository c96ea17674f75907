"""HTTP API figures, beside the local CLI.

1. Read latency p50/p99 over a store of 10,000 experiments: ``GET
   /api/v1/experiments/{name}`` and ``GET /api/v1/experiments?limit=1000``
   through one kept-alive client, beside ``genesis get experiments NAME -o json``
   and ``genesis get experiments --limit 1000 -o json`` as the operator runs
   them locally (a process each, start included), and beside the same
   :class:`LocalBackend` call in-process (with the JSON an answer is made of).
2. SSE fan-out: 100 watchers of ``/api/v1/watch/experiments``, experiments
   written to the store (a commit from this process), the delay from each
   commit to each watcher's receipt and the server's CPU meanwhile, beside
   one watcher. The server polls the store once per ``api.watch_interval_s``
   however many watch (``orchestrator/api/watch.py``), so the delay is mostly
   that interval; the default (0.5 s) is kept.
3. The web UI's experiments page in headless Chromium, signed in: from
   navigation to the table's first rows (the frame after they enter the DOM),
   and first-contentful-paint, with 10,000 records beside 100.

Two ``genesis serve`` (10,000 and 100 records, SQLite in a temp dir, no NATS,
an installation of their own, no pass for an hour, a rate limit far above what
is sent) are started here and stopped by their PIDs; the browser is closed and
the temp dir removed, whatever fails. No sandbox is made: every record is
finished, and the writes of the fan-out are recorded rejections (Failed).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from benchmarks.common import BENCH_LABEL, ROOT, RUN_ID, Report

BIG, SMALL = 10_000, 100
WATCHERS = 100
PAGE = 1000
CHROMIUM = "/usr/bin/chromium"
TICK = os.sysconf("SC_CLK_TCK")


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank: with 20 samples, p99 is the worst one."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(q * len(ordered))) - 1))]


def summary(samples: list[float]) -> dict:
    return {"n": len(samples), "p50_ms": percentile(samples, 0.5), "p99_ms": percentile(samples, 0.99),
            "max_ms": max(samples)}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def seed(db_url: str, total: int) -> list[str]:
    """``total`` finished experiments, one insert; names newest last. Older than the
    watch's 10 s look-back, so no watcher is sent them."""
    from orchestrator.domain.models import ExperimentRequest, Metrics, Outcome, Recommendation
    from orchestrator.store.db import make_engine, upgrade
    from orchestrator.store.tables import ExperimentRow

    spec = ExperimentRequest.model_validate({
        "experiment_id": "x", "instance_id": "bench", "experiment_type": "refactor", "risk_level": "low",
        "description": "a refactor of the parser's error paths", "repo": "monorepo", "base_ref": "main",
        "changes": {"patch": "diff --git a/a.py b/a.py\n--- a/a.py\n+++ b/a.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n"},
    }).model_dump(mode="json")
    end = datetime.now(timezone.utc) - timedelta(minutes=5)
    rng = random.Random(total)
    rows, names = [], []
    for index in range(total):
        name = f"bench-{index:06d}"
        at = end - timedelta(seconds=30 * (total - index))
        good = rng.random() < 0.7
        recommendation = Recommendation.MERGE if good else Recommendation.ROLLBACK
        outcome = Outcome(experiment_id=name, instance_id=f"inst-{index % 50}", status="success" if good else "failed",
                          recommendation=recommendation, timestamp=at,
                          metrics=Metrics(success_rate=1.0 if good else 0.9, regression=0.0 if good else 0.1,
                                          runtime_ms=4000, test_count=120)).model_dump(mode="json")
        rows.append(dict(id=name, instance_id=f"inst-{index % 50}", experiment_type="refactor", risk_level="low",
                         repo="monorepo", base_ref="main", commit="0" * 40, spec=dict(spec, experiment_id=name),
                         body_sha256="0" * 64, phase="Succeeded" if good else "Failed", conditions=[],
                         recommendation=recommendation.value, outcome=outcome, priority=0, attempt=1,
                         cancel_requested=False, created_at=at, updated_at=at, started_at=at, finished_at=at,
                         phase_since=at))
        names.append(name)
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        with engine.begin() as conn:
            conn.execute(ExperimentRow.__table__.insert(), rows)
    finally:
        engine.dispose()
    return names


class Serve:
    """``genesis serve --no-nats`` over its own home; stopped by its PID (SIGTERM, then SIGKILL)."""

    def __init__(self, home: Path) -> None:
        from orchestrator.domain.access import digest, new_token

        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = new_token()
        tokens = home / "tokens.json"
        tokens.write_text(json.dumps({"tokens": [{"name": "bench", "role": "operator", "sha256": digest(self.token)}]}))
        self.config = home / "genesis.yaml"
        self.config.write_text(json.dumps({
            "home": str(home), "installation": f"bench-{RUN_ID}", "extra_labels": {BENCH_LABEL: RUN_ID},
            "pass_interval_s": 3600.0,  # nothing to run: the records are finished
            "nats": {"url": None}, "metrics_port": 0,
            # far above what is sent, so the limiter is never what is measured
            "api": {"port": self.port, "tokens_file": str(tokens), "rate_limit_per_s": 100000.0,
                    "rate_limit_burst": 100000},
        }))
        from orchestrator.settings import load_settings
        self.settings = load_settings(self.config)
        self.log = home / "serve.log"
        self.process: subprocess.Popen | None = None

    def env(self) -> dict:
        """The local CLI's environment: this config, no server or context to send it elsewhere."""
        env = {k: v for k, v in os.environ.items() if k not in ("GENESIS_SERVER", "GENESIS_TOKEN")}
        return env | {"GENESIS_CONFIG": str(self.config), "GENESIS_CONTEXTS": str(self.home / "no-contexts"),
                      "PYTHONPATH": str(ROOT)}

    def start(self) -> "Serve":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli.main", "serve", "--no-nats"],
                                            env=self.env(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"genesis serve exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"genesis serve not ready in 60 s (log: {self.log})")

    def cpu_s(self) -> float:
        """utime + stime of the server process, from /proc."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# -- 1. reads --------------------------------------------------------------------

def reads(server: Serve, names: list[str], runs: int) -> dict:
    """Interleaved per run: API one, CLI one, in-process one, API list, CLI list, in-process list."""
    from orchestrator.app import App
    from orchestrator.backends.local import LocalBackend
    from orchestrator.domain import resources

    cli = [sys.executable, "-m", "orchestrator.cli.main", "--config", str(server.config), "get", "experiments"]
    samples: dict[str, list[float]] = {k: [] for k in ("api_one", "cli_one", "local_one",
                                                       "api_list", "cli_list", "local_list")}
    app = App(server.settings)
    backend = LocalBackend(app)
    loop = asyncio.new_event_loop()
    rng = random.Random(runs)
    data_bytes = 0

    def timed(key: str, call) -> None:
        started = time.perf_counter()
        call()
        samples[key].append((time.perf_counter() - started) * 1000)

    def run_cli(*args: str, items: int) -> None:
        done = subprocess.run([*cli, *args, "-o", "json"], env=server.env(), cwd=ROOT, capture_output=True)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        body = json.loads(done.stdout)
        assert len(body.get("items", [body])) == items, len(body.get("items", []))

    def api_get(client: httpx.Client, path: str, items: int) -> None:
        response = client.get(path)
        response.raise_for_status()
        body = response.json()
        assert len(body.get("items", [body])) == items

    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                          timeout=60) as client:
            # Each path once, untimed: connect, and the first call's imports and threads.
            api_get(client, f"/api/v1/experiments/{names[0]}", 1)
            api_get(client, f"/api/v1/experiments?limit={PAGE}", PAGE)
            loop.run_until_complete(backend.get(names[0]))
            loop.run_until_complete(backend.page(limit=PAGE))
            data_bytes = len(client.get(f"/api/v1/experiments?limit={PAGE}").content)
            for _ in range(runs):
                name = rng.choice(names)
                timed("api_one", lambda: api_get(client, f"/api/v1/experiments/{name}", 1))
                timed("cli_one", lambda: run_cli(name, items=1))
                timed("local_one", lambda: json.dumps(resources.experiment(loop.run_until_complete(backend.get(name)))))
                timed("api_list", lambda: api_get(client, f"/api/v1/experiments?limit={PAGE}", PAGE))
                timed("cli_list", lambda: run_cli("--limit", str(PAGE), items=PAGE))
                timed("local_list", lambda: json.dumps(resources.as_list(
                    [resources.experiment(v) for v in loop.run_until_complete(backend.page(limit=PAGE)).items])))
    finally:
        loop.close()
        app.close()
    return {key: summary(values) for key, values in samples.items()} | {"list_bytes": data_bytes}


# -- 2. SSE fan-out -------------------------------------------------------------------

async def _watcher(client: httpx.AsyncClient, received: dict, ready: asyncio.Event, count: list[int],
                   watchers: int) -> None:
    async with client.stream("GET", "/api/v1/watch/experiments") as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            at = time.perf_counter()  # before parsing: the client's own work is not the server's delay
            if line.startswith(": watching"):
                count[0] += 1
                if count[0] == watchers:
                    ready.set()
            elif line.startswith("data: "):
                name = json.loads(line[6:])["object"]["metadata"]["name"]
                received.setdefault(name, []).append(at)


async def fan_out(server: Serve, *, watchers: int, events: int, tag: str) -> dict:
    """``watchers`` streams open, then ``events`` writes at random spacing; delays commit -> receipt."""
    from orchestrator.store.db import make_engine
    from orchestrator.store.repository import Store

    engine = make_engine(server.settings.db_url)
    store = Store(engine)
    received: dict[str, list[float]] = {}
    committed: dict[str, float] = {}
    ready, count = asyncio.Event(), [0]
    rng = random.Random(f"{tag}-{watchers}")

    def write(name: str) -> None:
        store.record_rejected(experiment_id=name, instance_id="bench", code="bad_input",
                              message="a benchmark write", raw_excerpt="{}", actor="bench")
        committed[name] = time.perf_counter()

    limits = httpx.Limits(max_connections=watchers + 10, max_keepalive_connections=watchers + 10)
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"},
                                 timeout=httpx.Timeout(10.0, read=None), limits=limits) as client:
        tasks = [asyncio.create_task(_watcher(client, received, ready, count, watchers)) for _ in range(watchers)]
        try:
            await asyncio.wait_for(ready.wait(), timeout=30)
            cpu0, wall0 = server.cpu_s(), time.perf_counter()
            for index in range(events):
                await asyncio.to_thread(write, f"watch-{RUN_ID}-{tag}-{watchers}-{index:03d}")
                await asyncio.sleep(rng.uniform(0.2, 0.6))  # commits fall at every phase of the poll
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sum(len(received.get(n, ())) for n in committed) < watchers * events:
                await asyncio.sleep(0.05)
            cpu, wall = server.cpu_s() - cpu0, time.perf_counter() - wall0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            engine.dispose()
    delays = [(at - committed[name]) * 1000 for name in committed for at in received.get(name, ())]
    return {"delays_ms": delays, "expected": watchers * events, "cpu_s": cpu, "wall_s": wall}


def sse(server: Serve, runs: int) -> dict:
    """Rounds of 100 watchers and of 1, interleaved; ``runs`` writes each in all."""
    rounds = 2
    per_round = max(1, runs // rounds)
    totals = {n: {"delays_ms": [], "expected": 0, "cpu_s": 0.0, "wall_s": 0.0} for n in (WATCHERS, 1)}
    for index in range(rounds):
        for watchers in (WATCHERS, 1):
            result = asyncio.run(fan_out(server, watchers=watchers, events=per_round, tag=str(index)))
            total = totals[watchers]
            total["delays_ms"] += result["delays_ms"]
            for key in ("expected", "cpu_s", "wall_s"):
                total[key] += result[key]
    return {n: {**summary(t["delays_ms"]), "received": len(t["delays_ms"]), "expected": t["expected"],
                "cpu_pct": 100 * t["cpu_s"] / t["wall_s"]} for n, t in totals.items()}


# -- 3. web UI -------------------------------------------------------------------------

# Injected before the page's own scripts (by the driver, so the page's CSP does not
# apply): when the list's first row enters the table, the time, and the next frame's.
# Rows the watch adds are marked .flash: a new watch is also sent the changes of the
# 10 s before it (watch.py's look-back), which would otherwise count as "first rows".
ROWS_PROBE = """
new MutationObserver((_, observer) => {
  if (!document.querySelector('#experiments-body tr:not(.flash)')) return;  // the list's, not the watch's
  observer.disconnect();
  window.__rowsAt = performance.now();
  requestAnimationFrame(() => { window.__rowsFrame = performance.now(); });
}).observe(document, {subtree: true, childList: true});
"""


def _until_rows(page, timeout_s: float = 60.0) -> None:
    """Polled from here: the page's CSP refuses the string evaluation ``wait_for_function`` uses.
    The time itself is the page's, so the polling adds nothing to it."""
    deadline = time.monotonic() + timeout_s
    while page.evaluate("() => window.__rowsFrame === undefined"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no rows on {page.url} in {timeout_s} s")
        time.sleep(0.02)


def first_paint(servers: dict[int, Serve], runs: int) -> dict:
    """Per run and server (interleaved): a new page of a signed-in context opened at
    ``#/experiments``; navigation to the first rows' frame, and first-contentful-paint."""
    from playwright.sync_api import sync_playwright

    samples = {total: {"rows_ms": [], "fcp_ms": [], "shown": 0} for total in servers}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            contexts = {}
            for total, server in servers.items():
                context = browser.new_context(viewport={"width": 1400, "height": 1000})
                context.add_init_script(ROWS_PROBE)
                page = context.new_page()
                page.goto(f"{server.url}/")
                page.fill("#token", server.token)
                page.click("#sign-in button[type=submit]")
                page.wait_for_selector("#experiments-body tr")  # signed in; the cookie stays with the context
                page.close()
                contexts[total] = context
            for _ in range(runs):
                for total, server in servers.items():
                    page = contexts[total].new_page()
                    page.goto(f"{server.url}/#/experiments")
                    _until_rows(page)
                    figures = page.evaluate("""() => ({
                        rows: window.__rowsFrame,
                        fcp: (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime,
                        shown: document.querySelectorAll('#experiments-body tr').length})""")
                    samples[total]["rows_ms"].append(figures["rows"])
                    samples[total]["fcp_ms"].append(figures["fcp"])
                    samples[total]["shown"] = figures["shown"]
                    page.close()
            for context in contexts.values():
                context.close()
        finally:
            browser.close()
    return samples


def run(report: Report, *, runs: int) -> None:
    data: dict = {}
    report.data["api"] = data
    servers: dict[int, Serve] = {}
    with tempfile.TemporaryDirectory(prefix="genesis-bench-api-") as scratch:
        try:
            names = {}
            for total in (BIG, SMALL):
                server = Serve(Path(scratch) / f"home-{total}")
                started = time.perf_counter()
                names[total] = seed(server.settings.db_url, total)
                data[f"seed_{total}_s"] = time.perf_counter() - started
                servers[total] = server.start()
            data["reads"] = reads(servers[BIG], names[BIG], runs)
            data["ui"] = first_paint(servers, min(runs, 7))  # before the fan-out's writes
            data["sse"] = sse(servers[BIG], runs)
        finally:
            for server in servers.values():
                server.stop()
    _rows(report, data)


def _rows(report: Report, data: dict) -> None:
    import statistics

    r = data["reads"]
    for what, api, cli, local in (("one experiment", "api_one", "cli_one", "local_one"),
                                  (f"{PAGE}-item list", "api_list", "cli_list", "local_list")):
        for q in ("p50", "p99"):
            a, c, l = r[api][f"{q}_ms"], r[cli][f"{q}_ms"], r[local][f"{q}_ms"]
            report.add(f"API GET {what}, 10k stored, {q} (ms)", f"{a:.1f}", f"{c:.0f} (local CLI)", f"{a / c:.3f}x")
            report.add(f"  in-process LocalBackend + JSON, {q} (ms)", f"{a:.1f}", f"{l:.1f}", f"{a / l:.2f}x")
    report.add(f"  {PAGE}-item list body (KiB)", f"{r['list_bytes'] / 1024:.0f}", "", "")
    s = data["sse"]
    many, one = s[WATCHERS], s[1]
    for q in ("p50", "p99", "max"):
        report.add(f"SSE delay, commit -> watcher, {WATCHERS} watchers, {q} (ms)", f"{many[f'{q}_ms']:.0f}",
                   f"{one[f'{q}_ms']:.0f} (1 watcher)", f"{many[f'{q}_ms'] / one[f'{q}_ms']:.2f}x")
    report.add("  events received / expected", f"{many['received']}/{many['expected']}",
               f"{one['received']}/{one['expected']}", "")
    report.add("  server CPU while writing (%)", f"{many['cpu_pct']:.1f}", f"{one['cpu_pct']:.1f} (1 watcher)",
               f"{many['cpu_pct'] / one['cpu_pct']:.2f}x" if one["cpu_pct"] else "-")
    ui = data["ui"]
    big_rows, small_rows = (statistics.median(ui[n]["rows_ms"]) for n in (BIG, SMALL))
    big_fcp, small_fcp = (statistics.median(ui[n]["fcp_ms"]) for n in (BIG, SMALL))
    report.add(f"UI experiments page, navigation -> first rows, {BIG // 1000}k stored (ms)", f"{big_rows:.0f}",
               f"{small_rows:.0f} ({SMALL} stored)", f"{big_rows / small_rows:.2f}x")
    report.add("  first-contentful-paint (ms)", f"{big_fcp:.0f}", f"{small_fcp:.0f}", f"{big_fcp / small_fcp:.2f}x")
    report.add("  rows shown on first paint", str(ui[BIG]["shown"]), str(ui[SMALL]["shown"]), "")

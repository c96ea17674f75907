"""Liveness and readiness of ``genesis serve``, served beside /metrics.

``/healthz`` (liveness): the controller loop has turned recently, leading
or standing by. A loop stuck in a call that never returns fails it, and the
kubelet restarts the pod. ``/readyz`` (readiness): the loop's last turn
succeeded (the database and the runtime answered). ``/metrics`` is
Prometheus's exposition of the Genesis registry. One small threaded HTTP
server serves all three, so one port serves probes and scrapes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)


class Health:
    """What the controller loop reports each turn; read by the probes."""

    def __init__(self, *, stale_after_s: float = 60.0, startup_grace_s: float = 120.0) -> None:
        self.stale_after_s = stale_after_s
        self.startup_grace_s = startup_grace_s
        self.started = time.monotonic()
        self.last_turn: float | None = None
        self.last_ok = False
        self.last_error: str | None = None
        self.leading = False

    def beat(self, *, ok: bool, leading: bool, error: str | None = None) -> None:
        self.last_turn, self.last_ok, self.leading, self.last_error = time.monotonic(), ok, leading, error

    def live(self) -> tuple[bool, dict]:
        now = time.monotonic()
        if self.last_turn is None:
            alive = now - self.started < self.startup_grace_s
            return alive, {"status": "starting" if alive else "no loop turn since start"}
        age = now - self.last_turn
        return age < self.stale_after_s, {"last_turn_age_s": round(age, 1)}

    def ready(self) -> tuple[bool, dict]:
        alive, detail = self.live()
        ok = alive and self.last_turn is not None and self.last_ok
        return ok, {**detail, "last_turn_ok": self.last_ok, "leading": self.leading, "error": self.last_error}


def serve_http(health: Health, registry, *, address: str, port: int) -> ThreadingHTTPServer:
    """Start /metrics, /healthz and /readyz on a daemon thread; returns the server (``.server_port``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, detail = health.live() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, json.dumps({"ok": ok, **detail}).encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

        def _send(self, code: int, body: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # probes every few seconds: not worth a log line
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="genesis-http", daemon=True).start()
    return server

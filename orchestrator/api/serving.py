"""Run the API inside ``genesis serve``'s event loop, beside the controller."""

from __future__ import annotations

import contextlib
import logging

import uvicorn

from orchestrator.api.auth import RateLimits, Tokens, check_bind
from orchestrator.api.server import create_app
from orchestrator.backends.local import LocalBackend
from orchestrator.mcp.server import http_app

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: ``genesis serve`` owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            log.info("API ready", extra={"address": self.config.host, "port": self.config.port})


def build(app, *, health=None):
    """The ASGI app for ``app`` (an :class:`orchestrator.app.App`); refuses a non-loopback
    bind without tokens (GenesisError(bad_config))."""
    settings = app.settings
    tokens = Tokens(settings.api.tokens_file)
    check_bind(settings.api.address, tokens)
    limits = RateLimits(rate=settings.api.rate_limit_per_s, burst=settings.api.rate_limit_burst)
    backend = LocalBackend(app)
    mcp_app = http_app(backend, tokens=tokens, limits=limits)
    return create_app(backend, settings=settings, tokens=tokens, limits=limits, health=health, mcp_app=mcp_app)


class ApiServer:
    def __init__(self, app, *, health=None) -> None:
        api = app.settings.api
        config = uvicorn.Config(build(app, health=health), host=api.address, port=api.port, log_config=None,
                                access_log=False, lifespan="on", timeout_graceful_shutdown=5)
        self.server = _Server(config)

    async def run(self) -> None:
        """Serve until :meth:`shutdown`. A port already taken is logged, not fatal (as the
        metrics port's): a standby controller on the same host still stands by."""
        try:
            await self.server.serve()
        except SystemExit:  # uvicorn's answer to a bind that failed
            log.warning("API not started", extra={"address": self.server.config.host,
                                                  "port": self.server.config.port})

    def shutdown(self) -> None:
        self.server.should_exit = True


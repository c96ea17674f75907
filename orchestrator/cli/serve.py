"""``genesis serve``: the reconciling controller, NATS intake and outcomes
when ``nats.url`` is set, and the HTTP API, web UI and MCP over HTTP on
``api.port`` (``--once``: run the queue empty, without NATS or the API).

Several ``serve`` processes may run: one leads (a fenced lease in the
database), the others wait as standbys and take over when its lease lapses.
"""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger(__name__)


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the controller")
    p.add_argument("--once", action="store_true", help="exit when nothing is pending or running (no NATS)")
    p.add_argument("--no-nats", action="store_true", help="do not connect to NATS (CLI and database only)")
    p.add_argument("--no-api", action="store_true", help="do not serve the HTTP API, web UI and MCP")
    p.set_defaults(run=run, local_only=True)


def start_http(settings, health) -> bool:
    """/metrics, /healthz and /readyz on ``metrics_address:metrics_port``; a port
    already taken is logged, not fatal."""
    if not settings.metrics_port:
        return False
    from orchestrator.telemetry.health import serve_http
    from orchestrator.telemetry.metrics import REGISTRY
    try:
        serve_http(health, REGISTRY, address=settings.metrics_address, port=settings.metrics_port)
    except OSError as exc:
        log.warning("metrics endpoint not started", extra={"port": settings.metrics_port, "error": str(exc)})
        return False
    log.info("metrics endpoint ready", extra={"address": settings.metrics_address, "port": settings.metrics_port})
    return True


async def _serve(app, once: bool, nats_on: bool, api_on: bool) -> None:
    await app.runtime.ping()
    app.check_disk_quota()  # says so (or refuses to start) where resources.disk cannot be enforced
    controller = app.controller(leader=True)
    if not once:
        start_http(app.settings, controller.health)
        app.intake.notify = controller.wake  # a request over NATS or the API: admitted at once
    services = []
    if nats_on and app.settings.nats.url and not once:
        from orchestrator.messaging.service import NatsService
        services.append(NatsService(app, controller))
    if api_on and app.settings.api.port and not once:
        from orchestrator.api.serving import ApiServer
        services.append(ApiServer(app, health=controller.health))

    def stop() -> None:
        controller.shutdown()
        for service in services:
            service.shutdown()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    async with controller:
        if once:
            await controller.run_until_idle()
        else:
            await asyncio.gather(controller.run(), *(service.run() for service in services))


def run(app, args) -> int:
    asyncio.run(_serve(app, args.once, not args.no_nats, not args.no_api))
    return 0

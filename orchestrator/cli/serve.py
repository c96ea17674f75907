"""``genesis serve``: run the worker until interrupted (``--once``: drain the queue)."""

from __future__ import annotations

import asyncio
import signal

from orchestrator.worker import Worker


def register(sub) -> None:
    p = sub.add_parser("serve", help="run experiments from the queue")
    p.add_argument("--once", action="store_true", help="exit when the queue is empty")
    p.set_defaults(run=run)


async def _serve(app, once: bool) -> int:
    await app.runtime.ping()
    worker = Worker(app.executor, poll_s=app.settings.worker_poll_s)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.shutdown)
    async with worker:
        return await worker.run(once=once)


def run(app, args) -> int:
    asyncio.run(_serve(app, args.once))
    return 0

"""``genesis serve``: the reconciling controller (``--once``: until the queue is empty).

Several ``serve`` processes may run: one leads (PostgreSQL advisory lock, or
a lease row on SQLite), the others wait as standbys and take over when it dies.
"""

from __future__ import annotations

import asyncio
import signal


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the controller")
    p.add_argument("--once", action="store_true", help="exit when nothing is pending or running")
    p.set_defaults(run=run)


async def _serve(app, once: bool) -> None:
    await app.runtime.ping()
    controller = app.controller(leader=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, controller.shutdown)
    async with controller:
        if once:
            await controller.run_until_idle()
        else:
            await controller.run()


def run(app, args) -> int:
    asyncio.run(_serve(app, args.once))
    return 0

"""The NATS intake alone, as `genesis serve` runs it, for a test to SIGKILL:
``python intake_only.py CONFIG``. Prints ``ready`` once it is bound to the
consumer, then records and acks until it is killed."""

from __future__ import annotations

import asyncio
import sys


async def main(config: str) -> None:
    from orchestrator.app import App
    from orchestrator.messaging.connection import connect, ensure_streams
    from orchestrator.messaging.intake import NatsIntake
    from orchestrator.settings import load_settings

    app = App(load_settings(config))
    nc = await connect(app.settings.nats)
    js = nc.jetstream()
    await ensure_streams(js, app.settings.nats)
    intake = NatsIntake(js, app.intake, app.settings.nats)
    print("ready", flush=True)
    await intake.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

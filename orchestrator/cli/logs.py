"""``genesis logs ID [-f]``: the sandbox's output, live or as exported;
``--build``: the logs of the image builds the experiment used (or failed)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("logs", help="print a sandbox's logs")
    p.add_argument("name", help="experiment id")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=None)
    p.add_argument("--build", action="store_true", help="the image builds' logs (environment and snapshot setup)")
    p.set_defaults(run=run)


async def run(backend, args) -> int:
    """Live while the sandbox runs or is kept, else the copy exported at teardown (the backend decides)."""
    if args.build:
        sys.stdout.write(await backend.build_logs(args.name))
        return 0
    async for chunk in backend.logs(args.name, follow=args.follow, tail=args.tail):
        sys.stdout.write(chunk)
        sys.stdout.flush()
    return 0

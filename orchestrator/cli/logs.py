"""``genesis logs ID [-f]``: the sandbox's output, live or as exported;
``--build``: the logs of the image builds the experiment used (or failed)."""

from __future__ import annotations

import asyncio
import sys

from orchestrator.errors import NotFound, SandboxGone
from orchestrator.pipeline import artifacts


def register(sub) -> None:
    p = sub.add_parser("logs", help="print a sandbox's logs")
    p.add_argument("name", help="experiment id")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--tail", type=int, default=None)
    p.add_argument("--build", action="store_true", help="the image builds' logs (environment and snapshot setup)")
    p.set_defaults(run=run)


async def _stream(app, name: str, follow: bool, tail: int | None) -> None:
    async for chunk in app.runtime.logs(name, follow=follow, tail=tail):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _build_logs(app, experiment_id: str) -> str:
    from orchestrator.snapshots.steps import BuildLogs

    builds = artifacts.recorded_builds(app.settings.artifacts_dir, experiment_id)
    if not builds:
        raise NotFound(f'no image builds recorded for experiment "{experiment_id}"')
    logs = BuildLogs(app.settings.build_logs_dir)
    parts = []
    for build in builds:
        text = logs.read(build["tag"])
        state = "failed" if build["tier"] == "failed" else "built for it" if build["built"] else "reused"
        parts.append(f"==> {build['tier']} {build['tag']} ({state})\n")
        parts.append(text if text is not None else "(no setup log: built from a Dockerfile or a tree)\n")
    return "".join(parts)


def run(app, args) -> int:
    view = app.store.get(args.name)
    if args.build:
        sys.stdout.write(_build_logs(app, view.id))
        return 0
    if view.sandbox_name and not view.phase.finished or view.preserved_until:
        try:
            asyncio.run(_stream(app, view.sandbox_name, args.follow, args.tail))
            return 0
        except SandboxGone:
            pass  # torn down meanwhile: fall back to the exported copy
    stored = artifacts.stored_log(app.settings.artifacts_dir, view.id)
    if stored is None:
        raise NotFound(f'no logs for experiment "{view.id}" (phase {view.phase.value})')
    lines = stored.splitlines(keepends=True)
    sys.stdout.write("".join(lines[-args.tail:] if args.tail else lines))
    return 0

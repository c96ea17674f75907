"""``genesis images build REPO[@REF]``: build a repository's toolchain,
environment and snapshot images ahead of time, showing each step."""

from __future__ import annotations

import asyncio
import sys
import time

from orchestrator.errors import GenesisError, NotFound
from orchestrator.snapshots import catalog, git, repofile


def register(sub) -> None:
    p = sub.add_parser("images", help="build images ahead of time")
    verbs = p.add_subparsers(dest="images_verb", required=True, metavar="VERB")
    build = verbs.add_parser("build", help="build REPO[@REF] (default ref: HEAD)")
    build.add_argument("target", metavar="REPO[@REF]")
    build.set_defaults(run=run, local_only=True)


def _progress(started: float):
    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {text}", file=sys.stderr, flush=True)
    return say


def run(app, args) -> int:
    name, _, ref = args.target.partition("@")
    repo = app.settings.repos.get(name)
    if repo is None:
        raise NotFound(f'repo "{name}" is not configured (known: {", ".join(sorted(app.settings.repos)) or "none"})')
    commit = git.resolve_commit(repo.path, ref or "HEAD")
    effective = repofile.effective(repo, commit)
    say = _progress(time.monotonic())
    say(f"{name}@{commit[:12]}: toolchain {effective.toolchain}"
        + (f", environment from {', '.join(effective.environment.inputs) or 'no inputs'}" if effective.environment
           else ", no environment"))
    try:
        snap = asyncio.run(app.snapshots.ensure(repo_name=name, repo=effective, commit=commit, progress=say))
    except GenesisError as exc:
        if getattr(exc, "log", ""):
            sys.stderr.write(exc.log[-4000:])
        raise
    catalog.record_use(app.store, snap, repo=name, commit=commit, toolchain=effective.toolchain)
    if snap.environment:
        say(f"environment {snap.environment}: {'built' if snap.environment_built else 'reused'}"
            f" ({snap.environment_bytes / 2**20:.0f}Mi, {'pinned' if snap.pinned else 'unpinned'})")
    say(f"snapshot {snap.tag}: {'built' if snap.built else 'reused'} ({snap.size_bytes / 2**20:.0f}Mi)")
    print(snap.tag)
    return 0

"""Images as first-class objects: what was used (recorded in the store), and
what exists (the engine's images, joined with their last use and whether a
sandbox or a build uses them now) for ``genesis get images``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from orchestrator.runtimes.base import MANAGED_BY, MANAGED_BY_VALUE, Runtime
from orchestrator.snapshots.builder import Snapshot, SnapshotBuilder
from orchestrator.store.aio import AsyncStore
from orchestrator.store.repository import Store


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def record_use(store: Store, snap: Snapshot, *, repo: str, commit: str, toolchain: str) -> list[dict]:
    """Touch each tier's row (last use; size and build time when built now), together;
    returns the builds as ``[{tier, tag, built}]`` for the experiment's record."""
    uses = [dict(tag=snap.toolchain, repo="", commit="", toolchain=toolchain, size_bytes=0, build_seconds=None,
                 tier="toolchain")]
    builds = [{"tier": "toolchain", "tag": snap.toolchain, "built": False}]
    if snap.environment:
        uses.append(dict(tag=snap.environment, repo=repo, commit=commit, toolchain=toolchain,
                         size_bytes=snap.environment_bytes, tier="environment", parent=snap.toolchain,
                         pinned=snap.pinned, build_seconds=snap.environment_seconds if snap.environment_built else None))
        builds.append({"tier": "environment", "tag": snap.environment, "built": snap.environment_built})
    uses.append(dict(tag=snap.tag, repo=repo, commit=commit, toolchain=toolchain, size_bytes=snap.size_bytes,
                     build_seconds=snap.seconds if snap.built else None, parent=snap.environment or snap.toolchain))
    builds.append({"tier": "snapshot", "tag": snap.tag, "built": snap.built})
    store.touch_images(uses)  # one transaction for the tiers
    return builds


@dataclass(frozen=True)
class ImageRow:
    tier: str
    tag: str
    repo: str
    size_bytes: int
    created: datetime | None
    last_used: datetime | None
    uses: int
    in_use: bool
    pinned: bool | None


async def list_images(*, builder: SnapshotBuilder, runtime: Runtime, store: AsyncStore,
                      sandbox_labels: dict[str, str]) -> list[ImageRow]:
    """Every image of Genesis's on the engine, oldest use first."""
    infos = await builder.images.list({MANAGED_BY: MANAGED_BY_VALUE})
    in_use = {s.image for s in await runtime.list(sandbox_labels) if s.image} | set(builder.busy)
    rows = {row["tag"]: row for row in await store.images()}
    out = []
    for info in infos:
        row = rows.get(info.tag, {})
        pinned = info.labels.get("genesis.pinned")
        out.append(ImageRow(tier=info.labels.get("genesis.kind", "?"), tag=info.tag,
                            repo=info.labels.get("genesis.repo", row.get("repo") or ""),
                            size_bytes=info.size_bytes, created=info.created, last_used=row.get("last_used_at"),
                            uses=row.get("uses") or 0, in_use=info.tag in in_use or info.id in in_use,
                            pinned=None if pinned is None else pinned == "true"))
    return sorted(out, key=lambda r: (r.last_used or r.created or _EPOCH, r.tag))

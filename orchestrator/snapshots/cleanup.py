"""The image half of the cleanup job (SPEC §11): remove Genesis's images,
least recently used first, while their total size is over
``image_disk_budget``; each removal is recorded in the audit trail.

The decision is :func:`orchestrator.domain.images.evictions`; this module
gathers its facts (sizes and parents from the engine, last use from the
store, images in use from the runtime's sandboxes and the builder's running
builds) and carries it out.
"""

from __future__ import annotations

import logging

from orchestrator.domain.images import ImageUse, evictions
from orchestrator.errors import GenesisError
from orchestrator.runtimes.base import MANAGED_BY, MANAGED_BY_VALUE, ImageInfo, Runtime
from orchestrator.snapshots.builder import SnapshotBuilder
from orchestrator.store.aio import AsyncStore

log = logging.getLogger(__name__)


def image_uses(infos: list[ImageInfo], *, known: list[ImageInfo], last_used: dict,
               in_use: set[str]) -> list[ImageUse]:
    """Facts per tag of ``infos``: own size (total minus the parent's, found among
    every image of Genesis's in ``known``, toolchains included), last use, parent
    (when it is among ``infos`` too), in use."""
    sizes = {info.tag: info.size_bytes for info in known}
    tags = {info.tag for info in infos}
    by_id: dict[str, list[str]] = {}
    for info in infos:
        by_id.setdefault(info.id, []).append(info.tag)
    uses = []
    for info in infos:
        parent = info.labels.get("genesis.parent")
        own = info.size_bytes - sizes.get(parent or "", 0)
        busy = any(tag in in_use for tag in by_id[info.id]) or info.id in in_use
        uses.append(ImageUse(tag=info.tag, own_bytes=max(own, 0), last_used=last_used.get(info.tag, info.created),
                             parent=parent if parent in tags else None, in_use=busy))
    return uses


async def prune_images(*, runtime: Runtime, store: AsyncStore, builder: SnapshotBuilder, budget_bytes: int,
                       labels: dict[str, str], sandbox_labels: dict[str, str], actor: str) -> list[str]:
    """Remove images carrying ``labels`` (this installation's environments and
    snapshots; toolchain images are shared and stay) past the budget; returns
    the tags removed. The engine itself refuses to remove an image a container
    (a build in another process) uses."""
    images = builder.images
    known = await images.list({MANAGED_BY: MANAGED_BY_VALUE})
    infos = [info for info in known if all(info.labels.get(k) == v for k, v in labels.items())]
    sandboxes = await runtime.list(sandbox_labels)
    in_use = {s.image for s in sandboxes if s.image} | set(builder.busy)
    last_used = {row["tag"]: row["last_used_at"] for row in await store.images()}
    removed = []
    for tag in evictions(image_uses(infos, known=known, last_used=last_used, in_use=in_use),
                         budget_bytes=budget_bytes):
        size = next(i.size_bytes for i in infos if i.tag == tag)
        try:
            await images.remove(tag)
        except GenesisError as exc:  # e.g. a sandbox started on it meanwhile: kept, tried next time
            log.warning("image not removed", extra={"image": tag, "error": str(exc)})
            continue
        await store.forget_image(tag)
        await store.audit(experiment_id=None, sandbox_name=tag, action="image_removed", actor=actor,
                    reason="least recently used image over image_disk_budget",
                    details={"size_bytes": size, "budget_bytes": budget_bytes})
        removed.append(tag)
    if removed:
        log.info("images removed", extra={"images": removed})
    return removed

"""Which images the cleanup job removes (SPEC §11), as a pure decision.

Genesis's images form a forest: toolchain → environment → snapshot. An
image's own size is what it adds over its parent; removing a tag frees that
only once no child is built FROM it, so children go first. Least recently
used first, until the total is within the budget; never an image in use (a
sandbox, even a stopped preserved one, or a running build).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ImageUse:
    tag: str
    own_bytes: int  # what it adds over its parent
    last_used: datetime | None  # None: never used (oldest)
    parent: str | None = None
    in_use: bool = False


def evictions(images: list[ImageUse], *, budget_bytes: int) -> list[str]:
    """Tags to remove, in order, to bring the total own size within ``budget_bytes``."""
    total = sum(image.own_bytes for image in images)
    children: dict[str, int] = {}
    for image in images:
        if image.parent:
            children[image.parent] = children.get(image.parent, 0) + 1
    left = {image.tag: image for image in images}
    removed: list[str] = []
    while total > budget_bytes:
        candidates = [i for i in left.values() if not i.in_use and not children.get(i.tag)]
        if not candidates:
            break
        oldest = min(candidates, key=lambda i: (i.last_used is not None, i.last_used or datetime.min, i.tag))
        removed.append(oldest.tag)
        total -= oldest.own_bytes
        del left[oldest.tag]
        if oldest.parent:
            children[oldest.parent] -= 1
    return removed

"""Disk quotas of sandboxes: the decisions, none of the I/O.

- :func:`quota_support`: whether an engine's storage driver (``docker info``'s
  ``Driver`` and ``DriverStatus``) can cap a container's writable layer with
  ``--storage-opt size=`` (btrfs; overlay2 on xfs, which also needs the
  ``pquota`` mount option: that part only a probe can tell).
- :func:`storage_size`: ``resources.disk`` is what the sandbox itself may
  write; btrfs counts the image's own layers in the container's quota, so
  the size given to the engine is the image's size plus that.
- :func:`exceeded`, :func:`refused_full` and :func:`full_in_log`: whether a
  run hit its quota. The first reads the runtime's own measure of the
  writable layer (the change cannot make it smaller without freeing the
  space); the second, the engine's refusal to mount a layer at its quota
  (btrfs re-applies the limit at each mount, and a full subvolume answers
  EDQUOT: its output cannot be read, and that is the proof); the third
  reads the run's log (the change's words, so it only ever turns a run
  that left no result into ``disk_exceeded``, a failure: never a merge).
- :func:`note`: what ``genesis describe`` and ``genesis serve`` say about it.

Pure: no docker, no filesystem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DiskQuotaMode = Literal["warn", "refuse"]

# btrfs stops writes a little short of a qgroup's limit (its metadata and
# extent accounting count too: a 200 MiB quota stopped dd at 184 MiB of
# data). Within this share of its quota a sandbox's layer is full.
FULL_SHARE = 0.9

# ENOSPC and EDQUOT as the C library and Python print them.
FULL_MARKERS = ("No space left on device", "Disk quota exceeded")


@dataclass(frozen=True)
class QuotaSupport:
    """Whether a runtime can cap a sandbox's disk, and the storage it found (for people)."""

    enforced: bool
    storage: str  # e.g. "btrfs", "overlay2 on extfs"


def quota_support(driver: str, driver_status: list | None) -> QuotaSupport:
    """What ``docker info`` says about ``--storage-opt size=``: btrfs yes; overlay2 on
    xfs yes (if mounted with pquota, which a probe must confirm); anything else no."""
    status = {str(k): str(v) for k, v in (driver_status or []) if k is not None}
    backing = status.get("Backing Filesystem", "")
    storage = f"{driver} on {backing}" if backing else driver
    if driver == "btrfs":
        return QuotaSupport(True, storage)
    if driver in ("overlay2", "overlay") and backing == "xfs":
        return QuotaSupport(True, storage)
    if driver == "zfs":
        return QuotaSupport(True, storage)
    return QuotaSupport(False, storage)


def storage_size(disk_bytes: int, image_bytes: int) -> int:
    """The ``size=`` storage option for a sandbox that may write ``disk_bytes`` on ``image_bytes``."""
    return image_bytes + disk_bytes


def exceeded(*, used_bytes: int | None, quota_bytes: int | None) -> bool:
    """The runtime measured the writable layer at (or within btrfs's slack of) its quota."""
    if used_bytes is None or not quota_bytes:
        return False
    return used_bytes >= quota_bytes * FULL_SHARE


def refused_full(error: str, *, quota_bytes: int | None) -> bool:
    """The engine would not open a capped sandbox's layer because it is at its quota
    (``Failed to limit qgroup ...: disk quota exceeded``): the engine's word, not the change's."""
    return bool(quota_bytes) and "quota exceeded" in error.lower()


def full_in_log(text: str) -> bool:
    """The run's log says a write failed for want of space (untrusted: see the module docstring)."""
    return any(marker in text for marker in FULL_MARKERS)


def startup_problem(*, enforced: bool, storage: str, mode: DiskQuotaMode, runtime: str) -> tuple[str, str] | None:
    """(level, message) for start-up when the quota cannot be enforced; None when it can.
    ``refuse``: an error and Genesis does not start; ``warn``: a warning, and it runs unbounded."""
    if enforced:
        return None
    what = (f"disk quotas cannot be enforced on the {runtime} runtime ({storage}): "
            f"--storage-opt size needs btrfs, or overlay2 on xfs mounted with pquota")
    if mode == "refuse":
        return "error", what + "; disk_quota is 'refuse', so Genesis does not start"
    return "warning", what + "; sandboxes run with no disk limit (set disk_quota: refuse to refuse instead)"


def note(*, enforced: bool | None, storage: str | None) -> str:
    """The suffix ``describe`` adds to ``disk=2Gi``: empty when enforced or not known."""
    if enforced is False:
        return f" (not enforced: {storage or 'unknown storage'})"
    return ""

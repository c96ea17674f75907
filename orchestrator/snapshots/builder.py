"""Build and reuse snapshot images: one per (repo, commit, toolchain image).

A snapshot is the repository at one commit (``git archive``, never a
working-tree copy) added under /workspace on top of a toolchain image from
``images/``. It is built once and reused by every experiment on that commit;
the in-sandbox runner comes with the toolchain image, whose tag is a hash of
its build inputs, so changing the runner or the Dockerfile yields new tags
instead of stale images.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import ImageBuildError
from orchestrator.runtimes.base import MANAGED_BY, MANAGED_BY_VALUE, ImageStore
from orchestrator.snapshots import git
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
RUNNER = Path(__file__).resolve().parents[1] / "sandbox" / "runner.py"
SNAPSHOT_REPO = "genesis/snapshot"


@dataclass(frozen=True)
class Snapshot:
    tag: str
    built: bool  # False when an existing image was reused
    seconds: float
    size_bytes: int


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def toolchain_context(images_dir: Path, toolchain: str) -> tuple[bytes, str]:
    """The toolchain's build context (Dockerfile + runner) and its content hash."""
    dockerfile = (images_dir / f"toolchain-{toolchain}" / "Dockerfile").read_bytes()
    runner = RUNNER.read_bytes()
    digest = hashlib.sha256(dockerfile + b"\0" + runner).hexdigest()[:12]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile)
        _add_bytes(tar, "runner.py", runner)
    return buffer.getvalue(), digest


def snapshot_tag(repo: str, commit: str, toolchain_tag: str) -> str:
    """Deterministic: the same inputs always name the same image."""
    toolchain_hash = hashlib.sha256(toolchain_tag.encode()).hexdigest()[:8]
    safe_repo = re.sub(r"[^a-z0-9_.-]", "-", repo.lower())[:64]
    return f"{SNAPSHOT_REPO}:{safe_repo}-{commit[:12]}-{toolchain_hash}"


class SnapshotBuilder:
    """Builds toolchain and snapshot images on demand; one build per tag at a time."""

    def __init__(self, images: ImageStore, *, images_dir: Path, base_image: str,
                 extra_labels: dict[str, str] | None = None) -> None:
        self._images = images
        self._extra_labels = dict(extra_labels or {})
        self._images_dir = images_dir
        self._base_image = base_image
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, tag: str) -> asyncio.Lock:
        return self._locks.setdefault(tag, asyncio.Lock())

    async def toolchain(self, name: str = "python") -> str:
        context, digest = toolchain_context(self._images_dir, name)
        base_hash = hashlib.sha256(self._base_image.encode()).hexdigest()[:6]
        tag = f"genesis/toolchain-{name}:{digest}-{base_hash}"
        async with self._lock(tag):
            if await self._images.get(tag) is None:
                log.info("building toolchain image", extra={"image": tag})
                await self._images.build(
                    io.BytesIO(context), tag=tag,
                    labels={MANAGED_BY: MANAGED_BY_VALUE, "genesis.kind": "toolchain"},
                    buildargs={"BASE_IMAGE": self._base_image},
                )
                metrics.IMAGE_BUILDS.labels(kind="toolchain", result="built").inc()
        return tag

    async def ensure(self, *, repo_name: str, repo_path: Path, commit: str, toolchain: str = "python") -> Snapshot:
        base = await self.toolchain(toolchain)
        tag = snapshot_tag(repo_name, commit, base)
        async with self._lock(tag):
            started = time.monotonic()
            existing = await self._images.get(tag)
            if existing is not None:
                metrics.IMAGE_CACHE_HITS.inc()
                return Snapshot(tag=tag, built=False, seconds=time.monotonic() - started,
                                size_bytes=existing.size_bytes)
            log.info("building snapshot image", extra={"image": tag, "commit": commit})
            try:
                info = await self._build(tag=tag, base=base, repo_name=repo_name, repo_path=repo_path, commit=commit)
            except Exception:
                metrics.IMAGE_BUILDS.labels(kind="snapshot", result="failed").inc()
                raise
            metrics.IMAGE_BUILDS.labels(kind="snapshot", result="built").inc()
            return Snapshot(tag=tag, built=True, seconds=time.monotonic() - started, size_bytes=info.size_bytes)

    async def _build(self, *, tag: str, base: str, repo_name: str, repo_path: Path, commit: str):
        dockerfile = f"FROM {base}\nADD repo.tar /workspace/\n".encode()
        labels = {**self._extra_labels, MANAGED_BY: MANAGED_BY_VALUE, "genesis.kind": "snapshot", "genesis.repo": repo_name,
                  "genesis.commit": commit, "genesis.toolchain": base}
        with tempfile.TemporaryFile() as context:
            await asyncio.to_thread(self._write_context, context, dockerfile, repo_path, commit)
            context.seek(0)
            return await self._images.build(context, tag=tag, labels=labels)

    @staticmethod
    def _write_context(out, dockerfile: bytes, repo_path: Path, commit: str) -> None:
        """Build context = Dockerfile + repo.tar, streamed through a temp file."""
        with tempfile.TemporaryFile() as repo_tar:
            try:
                git.write_archive(repo_path, commit, repo_tar)
            except Exception as exc:
                raise ImageBuildError(f"git archive of {commit[:12]} failed: {exc}") from exc
            size = repo_tar.tell()
            repo_tar.seek(0)
            with tarfile.open(fileobj=out, mode="w") as tar:
                _add_bytes(tar, "Dockerfile", dockerfile)
                info = tarfile.TarInfo("repo.tar")
                info.size, info.mtime = size, 0
                tar.addfile(info, repo_tar)

"""Image operations on the Docker Engine: build, look up, remove, list.

Used by :mod:`orchestrator.snapshots`, which decides what to build and
keep; this module only talks to the engine and translates its errors.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import BinaryIO

import docker.errors
import requests.exceptions

from orchestrator.errors import ImageBuildError, NotFound, RuntimeFailure
from orchestrator.runtimes.base import ImageInfo


def _info(image, tag: str) -> ImageInfo:
    created = image.attrs.get("Created")
    return ImageInfo(
        tag=tag,
        id=image.id,
        size_bytes=int(image.attrs.get("Size") or 0),
        labels=dict(image.labels or {}),
        created=datetime.fromisoformat(created[:19] + "+00:00") if created else None,
    )


class DockerImages:
    """:class:`orchestrator.runtimes.base.ImageStore` over the Docker Engine."""

    def __init__(self, client: docker.DockerClient) -> None:
        self._client = client

    async def get(self, tag: str) -> ImageInfo | None:
        def run():
            try:
                return _info(self._client.images.get(tag), tag)
            except docker.errors.ImageNotFound:
                return None

        return await self._call(run)

    async def build(self, context: BinaryIO, *, tag: str, labels: dict[str, str],
                    buildargs: dict[str, str] | None = None) -> ImageInfo:
        """Build from a tar build context; ``ImageBuildError`` with the log tail."""

        def run():
            try:
                image, _ = self._client.images.build(
                    fileobj=context, custom_context=True, tag=tag, labels=labels,
                    buildargs=buildargs or {}, rm=True, forcerm=True, pull=False,
                )
            except docker.errors.BuildError as exc:
                lines = [str(c.get("stream") or c.get("error") or "").strip() for c in exc.build_log]
                tail = " | ".join(line for line in lines if line)[-1500:]
                raise ImageBuildError(f"building {tag} failed: {exc.msg}; {tail}") from exc
            return _info(image, tag)

        return await self._call(run)

    async def remove(self, tag: str) -> None:
        def run():
            try:
                self._client.images.remove(tag, noprune=False)
            except docker.errors.ImageNotFound as exc:
                raise NotFound(f"image {tag} not found") from exc

        await self._call(run)

    async def push(self, tag: str, registry: str) -> str:
        """Tag ``tag`` as ``<registry>/<tag>`` and push it; returns the pushed reference."""
        repository, _, version = tag.rpartition(":")
        target = f"{registry.rstrip('/')}/{repository}"

        def run():
            self._client.images.get(tag).tag(target, version)
            for line in self._client.api.push(target, tag=version, stream=True, decode=True):
                if line.get("error"):
                    raise RuntimeFailure(f"pushing {target}:{version} failed: {line['error']}")
            return f"{target}:{version}"

        return await self._call(run)

    async def list(self, labels: dict[str, str]) -> list[ImageInfo]:
        def run():
            filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
            out = []
            for image in self._client.images.list(filters=filters):
                for tag in image.tags or [image.id]:
                    out.append(_info(image, tag))
            return out

        return await self._call(run)

    async def _call(self, func):
        try:
            return await asyncio.to_thread(func)
        except (ImageBuildError, NotFound):
            raise
        except docker.errors.APIError as exc:
            raise RuntimeFailure(f"docker: {exc.explanation or exc}") from exc
        except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
            raise RuntimeFailure(f"docker engine unreachable: {exc}") from exc


class RegistryMirror:
    """An ImageStore that also pushes snapshot images to a registry, once per
    tag and process, so Kubernetes nodes can pull ``<registry>/<tag>``.

    Toolchain images stay local (snapshots are built FROM them here). A push
    that fails is a ``RuntimeFailure``: the registry is infrastructure, so the
    experiment is retried rather than failed.
    """

    def __init__(self, images: DockerImages, registry: str, *, prefix: str = "genesis/snapshot:") -> None:
        self._images = images
        self.registry = registry
        self._prefix = prefix
        self._pushed: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, tag: str) -> ImageInfo | None:
        info = await self._images.get(tag)
        if info is not None:
            await self._publish(tag)
        return info

    async def build(self, context: BinaryIO, *, tag: str, labels: dict[str, str],
                    buildargs: dict[str, str] | None = None) -> ImageInfo:
        info = await self._images.build(context, tag=tag, labels=labels, buildargs=buildargs)
        await self._publish(tag)
        return info

    async def remove(self, tag: str) -> None:
        self._pushed.discard(tag)
        await self._images.remove(tag)

    async def list(self, labels: dict[str, str]) -> list[ImageInfo]:
        return await self._images.list(labels)

    async def _publish(self, tag: str) -> None:
        if not tag.startswith(self._prefix) or tag in self._pushed:
            return
        async with self._locks.setdefault(tag, asyncio.Lock()):
            if tag not in self._pushed:
                await self._images.push(tag, self.registry)
                self._pushed.add(tag)

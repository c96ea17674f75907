"""Image operations on the Docker Engine: build, run-and-commit, look up,
remove, list.

Used by :mod:`orchestrator.snapshots`, which decides what to build and
keep; this module only talks to the engine and translates its errors.

``run_and_commit`` is how environment images are made without BuildKit: a
container from the parent image runs the setup script with the secrets
(CA bundle, proxy variables) copied in as files under ``SECRETS_DIR``,
which the script deletes before it exits; the container is committed only
if it succeeded and left nothing there, with the parent's config restored.
The engine never sees the secrets as environment variables, build args or
layers, so ``docker history`` and ``docker inspect`` of the image cannot
show them.
"""

from __future__ import annotations

import asyncio
import io
import tarfile
from datetime import datetime
from typing import BinaryIO

import docker.errors
import requests.exceptions

from orchestrator.errors import ImageBuildError, NotFound, RuntimeFailure
from orchestrator.runtimes.base import BuildRun, ImageInfo

SECRETS_DIR = "run/genesis-build"  # relative to /; deleted by the build script before commit
BUILD_TMP = "rw,exec,size=2g"  # scratch space (pip/npm caches) that is never committed


def _tar(files: dict[str, bytes], secrets: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for directory in sorted({p.rsplit("/", 1)[0] for p in files if "/" in p} | {SECRETS_DIR}):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o700 if directory == SECRETS_DIR else 0o755
            tar.addfile(info)
        for path, data in [*files.items(), *((f"{SECRETS_DIR}/{n}", d) for n, d in secrets.items())]:
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o600 if path.startswith(SECRETS_DIR) else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


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

    async def run_and_commit(self, run: BuildRun) -> tuple[ImageInfo, str]:
        """Run ``run.script`` in a container of ``run.image`` as root and commit it as ``run.tag``.

        Returns the image and the build log; ``ImageBuildError`` (with the log)
        when the script fails, times out, or leaves anything under SECRETS_DIR.
        """

        def execute():
            parent = self._client.images.get(run.image).attrs.get("Config") or {}
            container = self._client.containers.create(
                run.image, command=[run.script], entrypoint=["/bin/sh", "-c"], user="0", working_dir="/workspace",
                labels=run.labels, network_mode="bridge" if run.network else "none",
                tmpfs={"/tmp": BUILD_TMP}, mem_limit=run.memory_bytes, memswap_limit=run.memory_bytes,
                detach=True)
            try:
                container.put_archive("/", _tar(run.files, run.secrets))
                container.start()
                try:
                    status = container.wait(timeout=run.timeout_s)
                except requests.exceptions.RequestException as exc:
                    if "timed out" not in str(exc).lower():  # docker-py's way of saying the wait ran out
                        raise
                    container.kill()
                    status = {"StatusCode": None}
                log = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")[-run.log_bytes:]
                code = status.get("StatusCode")
                if code is None:
                    raise ImageBuildError(f"building {run.tag}: setup ran past {run.timeout_s:.0f}s", log=log)
                if code != 0:
                    raise ImageBuildError(f"building {run.tag}: setup exited with {code}", log=log)
                left = [c["Path"] for c in container.diff() or [] if c["Path"].startswith("/" + SECRETS_DIR)]
                if left:
                    raise ImageBuildError(f"building {run.tag}: the build left {left[0]} behind; not committed",
                                          log=log)
                repository, _, version = run.tag.rpartition(":")
                conf = {"User": parent.get("User") or "", "WorkingDir": parent.get("WorkingDir") or "",
                        "Entrypoint": parent.get("Entrypoint"), "Cmd": parent.get("Cmd"),
                        "Env": parent.get("Env") or [], "Labels": {**(parent.get("Labels") or {}), **run.image_labels}}
                image = container.commit(repository=repository, tag=version, conf=conf,
                                         message=f"genesis {run.image_labels.get('genesis.kind', 'build')} step")
                return _info(self._client.images.get(image.id), run.tag), log
            finally:
                container.remove(force=True)

        return await self._call(execute)

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

    async def run_and_commit(self, run: BuildRun) -> tuple[ImageInfo, str]:
        info, log = await self._images.run_and_commit(run)
        await self._publish(run.tag)
        return info, log

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

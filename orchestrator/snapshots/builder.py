"""Build and reuse the three image tiers: toolchain → environment → snapshot.

- toolchain: ``images/toolchain-<name>`` plus the sandbox runner, tagged by a
  hash of its files, so a changed runner or Dockerfile names a new image;
- environment (when the repository has one): the toolchain plus the
  repository's dependencies, made by running ``setup`` as root with network
  over the input files only (``run_and_commit``: secrets as deleted files,
  never layers); tagged by a hash of the toolchain image, the setup and the
  inputs' contents, so commits that leave the inputs alone share it;
  unpinned ones are rebuilt after ``max_age``;
- snapshot: the repository at one commit (``git archive``, never a
  working-tree copy) added under /workspace FROM the environment (or the
  toolchain), then ``snapshot_setup`` if any; one per (repo, commit, parent
  image id, snapshot_setup).

Each is built once and reused; one build per tag runs at a time, and the
tags being built (and their parents) are reported by :attr:`busy` so the
cleanup job never removes them.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.metadata
import io
import logging
import re
import tarfile
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from collections import Counter
from datetime import datetime, timezone
from typing import Callable, NamedTuple

from orchestrator.domain.environment import environment_key, is_pinned, should_rebuild
from orchestrator.errors import ImageBuildError
from orchestrator.runtimes.base import MANAGED_BY, MANAGED_BY_VALUE, BuildRun, ImageInfo, ImageStore
from orchestrator.settings import BuildSettings, RepoConfig
from orchestrator.snapshots import git, repofile, steps
from orchestrator.telemetry import metrics

log = logging.getLogger(__name__)
RUNNER = Path(__file__).resolve().parents[1] / "sandbox" / "runner.py"
AUDIT = RUNNER.with_name("audit.py")  # the validation's sitecustomize: see that module
TEST_TIMEOUT = RUNNER.with_name("genesis_timeout.py")  # the per-test timeout plugin for pytest
SNAPSHOT_REPO = "genesis/snapshot"
# A snapshot found (or built) this recently is reused without asking the engine again: a
# burst of experiments on one commit would otherwise inspect the same three images each.
# An image removed meanwhile makes the sandbox's create fail, which is retried after it.
FOUND_FOR_S = 5.0
ENVIRONMENT_REPO = "genesis/environment"


@dataclass(frozen=True)
class Snapshot:
    tag: str
    built: bool  # False when an existing image was reused
    seconds: float
    size_bytes: int
    toolchain: str = ""
    environment: str | None = None  # the environment image it is FROM, if any
    environment_built: bool = False
    environment_seconds: float = 0.0
    environment_bytes: int = 0
    pinned: bool | None = None


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, mode
    tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class ToolchainSource:
    """What a toolchain image is built from: every file of ``images/toolchain-<name>/``
    (the Dockerfile and whatever it COPYs; not ``__pycache__``, which importing a
    script there for a test leaves behind), the sandbox runner as ``runner.py``, its audit hook as ``audit.py`` and
    the per-test timeout plugin as ``genesis_timeout.py``,
    and, when the Dockerfile has ``COPY uv ...``, the uv binary of Genesis's own
    environment (PyPI's ``uv`` package: no registry is needed to install it).

    ``digest`` covers names and contents (uv by its version), so a changed
    file names a new image instead of reusing a stale one; it is cheap to
    compute, and the build context (tens of MB with uv) is only made to build.
    """

    files: dict[str, bytes]
    uv: tuple[str, str] | None  # (path, version)
    digest: str

    @classmethod
    def read(cls, images_dir: Path, toolchain: str) -> "ToolchainSource":
        folder = images_dir / f"toolchain-{toolchain}"
        files = {path.relative_to(folder).as_posix(): path.read_bytes()
                 for path in sorted(folder.rglob("*"))
                 if path.is_file() and "__pycache__" not in path.relative_to(folder).parts}
        files["runner.py"] = RUNNER.read_bytes()
        files["audit.py"] = AUDIT.read_bytes()
        files["genesis_timeout.py"] = TEST_TIMEOUT.read_bytes()
        digest = hashlib.sha256()
        for name, data in sorted(files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        uv = _uv_binary() if re.search(rb"^COPY\s+uv\s", files.get("Dockerfile", b""), re.M) else None
        if uv is not None:
            digest.update(b"uv\0" + uv[1].encode())
        return cls(files=files, uv=uv, digest=digest.hexdigest()[:12])

    def context(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in sorted(self.files.items()):
                _add_bytes(tar, name, data, mode=0o755 if data.startswith(b"#!") else 0o644)
            if self.uv is not None:
                tar.add(self.uv[0], arcname="uv")
        return buffer.getvalue()


def toolchain_context(images_dir: Path, toolchain: str) -> tuple[bytes, str]:
    """The toolchain's build context and its content hash (see :class:`ToolchainSource`)."""
    source = ToolchainSource.read(images_dir, toolchain)
    return source.context(), source.digest


@functools.cache
def _uv_binary() -> tuple[str, str]:
    """(path, version) of the uv binary installed beside Genesis (looked up once: reading
    the package metadata walks every installed distribution)."""
    try:
        import uv
        return uv.find_uv_bin(), importlib.metadata.version("uv")
    except (ImportError, FileNotFoundError, importlib.metadata.PackageNotFoundError) as exc:
        raise ImageBuildError(f"the toolchain wants uv, which is not installed beside Genesis: {exc}") from exc


def _safe(repo: str) -> str:
    return re.sub(r"[^a-z0-9_.-]", "-", repo.lower())[:64]


def snapshot_tag(repo: str, commit: str, parent: str) -> str:
    """Deterministic: the same inputs always name the same image."""
    parent_hash = hashlib.sha256(parent.encode()).hexdigest()[:8]
    return f"{SNAPSHOT_REPO}:{_safe(repo)}-{commit[:12]}-{parent_hash}"


def environment_tag(repo: str, key: str) -> str:
    return f"{ENVIRONMENT_REPO}:{_safe(repo)}-{key[:16]}"


def _age_s(info: ImageInfo) -> float | None:
    return (datetime.now(timezone.utc) - info.created).total_seconds() if info.created else None


Progress = Callable[[str], None]


class _Environment(NamedTuple):
    tag: str
    built: bool  # now, rather than reused
    seconds: float
    size_bytes: int
    pinned: bool


class SnapshotBuilder:
    """Builds toolchain, environment and snapshot images on demand; one build per tag at a time."""

    def __init__(self, images: ImageStore, *, images_dir: Path, base_image: str,
                 extra_labels: dict[str, str] | None = None, build: BuildSettings | None = None,
                 logs_dir: Path | None = None) -> None:
        self._images = images
        self._extra_labels = dict(extra_labels or {})
        self._images_dir = images_dir
        self._base_image = base_image
        self._build = build or BuildSettings()
        self.logs = steps.BuildLogs(logs_dir or Path(".genesis") / "build-logs")
        self._locks: dict[str, asyncio.Lock] = {}
        self._busy: Counter[str] = Counter()
        self._found: dict[tuple[str, str, str, bool], tuple[float, Snapshot]] = {}  # see FOUND_FOR_S

    @property
    def images(self) -> ImageStore:
        return self._images

    @property
    def labels(self) -> dict[str, str]:
        """The labels every environment and snapshot image of this builder carries."""
        return dict(self._extra_labels)

    @property
    def busy(self) -> frozenset[str]:
        """Tags being built now, and the images they are built FROM."""
        return frozenset(tag for tag, count in self._busy.items() if count > 0)

    def _lock(self, tag: str) -> asyncio.Lock:
        return self._locks.setdefault(tag, asyncio.Lock())

    async def toolchain(self, name: str = "python") -> str:
        source = ToolchainSource.read(self._images_dir, name)
        base_hash = hashlib.sha256(self._base_image.encode()).hexdigest()[:6]
        tag = f"genesis/toolchain-{name}:{source.digest}-{base_hash}"
        async with self._lock(tag):
            if await self._images.get(tag) is None:
                log.info("building toolchain image", extra={"image": tag})
                await self._images.build(
                    io.BytesIO(source.context()), tag=tag,
                    labels={MANAGED_BY: MANAGED_BY_VALUE, "genesis.kind": "toolchain"},
                    buildargs={"BASE_IMAGE": self._base_image},
                )
                metrics.IMAGE_BUILDS.labels(kind="toolchain", result="built").inc()
        return tag

    async def ensure(self, *, repo_name: str, repo: RepoConfig, commit: str, inputs: dict[str, bytes] | None = None,
                     trusted: bool = True, progress: Progress | None = None) -> Snapshot:
        """The snapshot of ``repo`` (its effective configuration) at ``commit``, built if missing.

        ``inputs`` replaces the environment inputs read at ``commit`` (a change
        that edits them gets an environment of its own, built ``trusted=False``:
        without ``build.env``). Raises ImageBuildError, with the log, when a
        step fails; the log is also kept under ``build-logs``. One found within
        :data:`FOUND_FOR_S` is reused without asking the engine.
        """
        started = time.monotonic()
        key = (repo_name, commit, repo.model_dump_json(), trusted)
        found = self._found.get(key) if inputs is None else None
        if found is not None and started - found[0] < FOUND_FOR_S:
            metrics.IMAGE_CACHE_HITS.inc()
            return replace(found[1], built=False, environment_built=False, seconds=time.monotonic() - started)
        snap = await self._ensure(repo_name=repo_name, repo=repo, commit=commit, inputs=inputs, trusted=trusted,
                                  progress=progress, started=started)
        if inputs is None and snap.pinned is not False:  # an unpinned environment ages: asked anew each time
            self._found = {k: v for k, v in self._found.items() if started - v[0] < FOUND_FOR_S}
            self._found[key] = (time.monotonic(), snap)
        return snap

    async def _ensure(self, *, repo_name: str, repo: RepoConfig, commit: str, inputs: dict[str, bytes] | None,
                      trusted: bool, progress: Progress | None, started: float) -> Snapshot:
        say = progress or (lambda _text: None)
        say(f"toolchain {repo.toolchain}")
        toolchain = await self.toolchain(repo.toolchain)
        parent, env = toolchain, None
        if repo.environment is not None:
            if inputs is None:
                inputs = await asyncio.to_thread(repofile.inputs, repo, commit)
            env = await self._environment(repo_name=repo_name, repo=repo, toolchain=toolchain, inputs=inputs,
                                          trusted=trusted, say=say)
            parent = env.tag
        parent_info = await self._images.get(parent)
        if parent_info is None:
            raise ImageBuildError(f"{parent} vanished while {repo_name}@{commit[:12]} was being built")
        tag = snapshot_tag(repo_name, commit, f"{parent_info.id}\0{repo.snapshot_setup!r}")
        async with self._lock(tag):
            existing = await self._images.get(tag)
            built = existing is None
            if existing is None:
                say(f"snapshot {tag}")
                existing = await self._snapshot(tag=tag, parent=parent, parent_id=parent_info.id,
                                                repo_name=repo_name, repo=repo, commit=commit, trusted=trusted)
            else:
                metrics.IMAGE_CACHE_HITS.inc()
        return Snapshot(tag=tag, built=built, seconds=time.monotonic() - started, size_bytes=existing.size_bytes,
                        toolchain=toolchain, environment=env.tag if env else None,
                        environment_built=env.built if env else False,
                        environment_seconds=env.seconds if env else 0.0,
                        environment_bytes=env.size_bytes if env else 0, pinned=env.pinned if env else None)

    async def _environment(self, *, repo_name: str, repo: RepoConfig, toolchain: str, inputs: dict[str, bytes],
                           trusted: bool, say: Progress) -> "_Environment":
        """The environment image for ``inputs``, reused or built now."""
        assert repo.environment is not None
        toolchain_info = await self._images.get(toolchain)
        assert toolchain_info is not None
        setup = repo.environment.setup
        key = environment_key(toolchain_id=toolchain_info.id + ("" if trusted else "\0untrusted"), setup=setup,
                              inputs=inputs)
        tag, pinned = environment_tag(repo_name, key), is_pinned(inputs)
        async with self._lock(tag):
            started = time.monotonic()
            existing = await self._images.get(tag)
            age = _age_s(existing) if existing else None
            if existing is not None and not should_rebuild(pinned=pinned, age_s=age,
                                                           max_age_s=repo.environment.max_age_s):
                metrics.IMAGE_CACHE_HITS.inc()
                return _Environment(tag, False, time.monotonic() - started, existing.size_bytes, pinned)
            say(f"environment {tag}" + (" (unpinned, past max_age: rebuilding)" if existing else ""))
            labels = {"genesis.kind": "environment", "genesis.repo": repo_name, "genesis.parent": toolchain,
                      "genesis.pinned": str(pinned).lower(), "genesis.trusted": str(trusted).lower()}
            info = await self._run_step(
                image=toolchain, tag=tag, script=steps.script(setup, drop=sorted(inputs)), trusted=trusted,
                files={f"workspace/{path}": data for path, data in inputs.items()},
                image_labels={**self._extra_labels, MANAGED_BY: MANAGED_BY_VALUE, **labels}, kind="environment")
            return _Environment(tag, True, time.monotonic() - started, info.size_bytes, pinned)

    async def _snapshot(self, *, tag: str, parent: str, parent_id: str, repo_name: str, repo: RepoConfig,
                        commit: str, trusted: bool) -> ImageInfo:
        """The tree FROM the parent's id (the one the tag was computed from, even if an
        unpinned parent is rebuilt meanwhile), then ``snapshot_setup``."""
        labels = {**self._extra_labels, MANAGED_BY: MANAGED_BY_VALUE, "genesis.kind": "snapshot",
                  "genesis.repo": repo_name, "genesis.commit": commit, "genesis.toolchain": parent,
                  "genesis.parent": parent}
        log.info("building snapshot image", extra={"image": tag, "commit": commit})
        tree = tag if not repo.snapshot_setup else tag.replace(SNAPSHOT_REPO, SNAPSHOT_REPO + "-tree", 1)
        self._busy.update([tag, parent])
        try:
            info = await self._tree(tag=tree, base=parent_id, repo_path=repo.path, commit=commit, labels=labels)
            if repo.snapshot_setup:
                try:
                    info = await self._run_step(image=tree, tag=tag, script=steps.script(repo.snapshot_setup),
                                                trusted=trusted, files={}, image_labels=labels, kind="snapshot")
                finally:
                    await self._images.remove(tree)  # only the name: its layers are the snapshot's parent
        except Exception:
            metrics.IMAGE_BUILDS.labels(kind="snapshot", result="failed").inc()
            raise
        finally:
            self._busy.subtract([tag, parent])
        metrics.IMAGE_BUILDS.labels(kind="snapshot", result="built").inc()
        return info

    async def _run_step(self, *, image: str, tag: str, script: str, trusted: bool, files: dict[str, bytes],
                        image_labels: dict[str, str], kind: str) -> ImageInfo:
        """A setup step run on ``image`` and committed as ``tag``, with the secrets a
        ``trusted`` step gets; its log is kept whether it succeeds or fails."""
        run = BuildRun(image=image, tag=tag, script=script, files=files,
                       secrets=steps.secrets(self._build, trusted=trusted), labels=self._build_labels(),
                       image_labels=image_labels, timeout_s=self._build.timeout_s, log_bytes=self._build.log_bytes)
        self._busy.update([run.tag, run.image])
        try:
            info, text = await self._images.run_and_commit(run)
        except ImageBuildError as exc:
            metrics.IMAGE_BUILDS.labels(kind=kind, result="failed").inc()
            text = steps.redact(exc.log, self._build)
            self.logs.write(run.tag, text)
            tail = " | ".join(line for line in text.strip().splitlines()[-12:] if line.strip())[-1500:]
            raise ImageBuildError(f"{exc}; last lines: {tail}" if tail else str(exc), log=text,
                                  tag=run.tag) from exc
        finally:
            self._busy.subtract([run.tag, run.image])
        self.logs.write(run.tag, steps.redact(text, self._build))
        metrics.IMAGE_BUILDS.labels(kind=kind, result="built").inc()
        return info

    def _build_labels(self) -> dict[str, str]:
        """Labels of a build container. Never an installation's (nor does it inherit one:
        images carry ``genesis.built-by``), which would make the controller take it for an
        orphaned sandbox and remove it mid-build."""
        return {**self._extra_labels, MANAGED_BY: MANAGED_BY_VALUE, "genesis.kind": "build"}

    async def _tree(self, *, tag: str, base: str, repo_path: Path, commit: str, labels: dict[str, str]) -> ImageInfo:
        dockerfile = f"FROM {base}\nADD repo.tar /workspace/\n".encode()
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

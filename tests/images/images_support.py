"""Helpers for the image tests (fixtures are in this directory's conftest.py):
the build script runner, the snapshot-builder wrapper, the timings table."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from helpers import ROOT, RUN_ID, TEST_LABEL
from orchestrator.settings import RepoConfig

BUILD_SCRIPT = ROOT / "images" / "orchestrator" / "build.sh"
ORCHESTRATOR_TAG = f"genesis/orchestrator:test-{RUN_ID}"
LABELS = {TEST_LABEL: RUN_ID, "genesis.test": "images"}
TIMINGS: dict[str, str] = {}  # what the terminal summary prints


def size_mb(docker_client, tag: str) -> str:
    return f"{docker_client.images.get(tag).attrs['Size'] / 1e6:.0f} MB"


def build_orchestrator_image() -> float:
    """Run build.sh for this session's tag; seconds taken. Fails with its output."""
    label_args = [arg for key, value in LABELS.items() for arg in ("--label", f"{key}={value}")]
    started = time.monotonic()
    proc = subprocess.run([str(BUILD_SCRIPT), ORCHESTRATOR_TAG, *label_args],
                          env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"build.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return time.monotonic() - started


def remove_image(docker_client, ref: str) -> None:
    import docker.errors

    try:
        docker_client.images.remove(ref, force=True)
    except docker.errors.ImageNotFound:
        pass


class Toolchains:
    """Builds toolchain and snapshot images with Genesis's SnapshotBuilder."""

    def __init__(self, docker_client, base_alias: str) -> None:
        from orchestrator.runtimes.docker_images import DockerImages
        from orchestrator.snapshots.builder import SnapshotBuilder

        self.client = docker_client
        self.base_image = base_alias
        self.images = DockerImages(docker_client)
        self.builder = SnapshotBuilder(self.images, images_dir=ROOT / "images", base_image=base_alias,
                                       extra_labels=dict(LABELS))
        self.tags: dict[str, str] = {}  # toolchain name -> image tag
        self.snapshots: list[str] = []

    def toolchain(self, name: str) -> str:
        if name not in self.tags:
            started = time.monotonic()
            self.tags[name] = asyncio.run(self.builder.toolchain(name))
            TIMINGS[f"toolchain-{name} (SnapshotBuilder)"] = (
                f"{time.monotonic() - started:.1f} s, {size_mb(self.client, self.tags[name])}")
        return self.tags[name]

    def snapshot(self, name: str, *, repo, commit: str) -> str:
        self.toolchain(name)
        snapshot = asyncio.run(self.builder.ensure(repo_name=f"images-{name}", repo=RepoConfig(path=repo, toolchain=name), commit=commit))
        self.snapshots.append(snapshot.tag)
        TIMINGS[f"snapshot on toolchain-{name}"] = f"{snapshot.seconds:.1f} s"
        return snapshot.tag

    def remove_all(self) -> None:
        for tag in [*self.snapshots, *self.tags.values(), self.base_image]:
            remove_image(self.client, tag)



"""Snapshot images pushed to a registry for Kubernetes nodes to pull: a real
Docker Engine pushes to a minimal v2 registry on 127.0.0.1 (tests/k8s/registry.py;
no registry image can be pulled here), then pulls the image back from it."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.errors import RuntimeFailure
from orchestrator.runtimes.docker_images import DockerImages, RegistryMirror
from orchestrator.snapshots import git
from orchestrator.snapshots.builder import SnapshotBuilder
from registry import Registry
from orchestrator.settings import RepoConfig

pytestmark = pytest.mark.docker


def _builder(app, images) -> SnapshotBuilder:
    return SnapshotBuilder(images, images_dir=app.settings.images_dir, base_image=app.settings.base_image,
                           extra_labels=app.settings.extra_labels)


def test_snapshots_are_pushed_once_and_can_be_pulled_back(app, sample_repo, docker_client):
    commit = git.resolve_commit(sample_repo, "HEAD")
    with Registry() as registry:
        mirror = RegistryMirror(DockerImages(docker_client), registry.address)
        builder = _builder(app, mirror)
        snap = asyncio.run(builder.ensure(repo_name="monorepo", repo=RepoConfig(path=sample_repo), commit=commit))
        repository, _, version = snap.tag.rpartition(":")
        assert (repository, version) in registry.manifests
        assert not any(name.startswith("genesis/toolchain") for name, _ in registry.manifests)  # stays local
        assert registry.blobs and all(len(blob) > 0 for blob in registry.blobs.values())
        puts = sum(1 for method, path in registry.requests if method == "PUT" and "/manifests/" in path)
        asyncio.run(builder.ensure(repo_name="monorepo", repo=RepoConfig(path=sample_repo), commit=commit))
        assert sum(1 for m, p in registry.requests if m == "PUT" and "/manifests/" in p) == puts  # once per process

        pushed = f"{registry.address}/{repository}"
        original = docker_client.images.get(snap.tag).id
        docker_client.images.remove(f"{pushed}:{version}")
        pulled = docker_client.images.pull(pushed, tag=version)
        assert pulled.id == original
        assert any(m in ("GET", "HEAD") and "/manifests/" in p for m, p in registry.requests)  # it asked us
        docker_client.images.remove(f"{pushed}:{version}")


def test_a_registry_that_cannot_be_reached_is_a_runtime_failure(app, sample_repo, docker_client):
    commit = git.resolve_commit(sample_repo, "HEAD")
    builder = _builder(app, RegistryMirror(DockerImages(docker_client), "127.0.0.1:9"))
    with pytest.raises(RuntimeFailure, match="127.0.0.1:9"):
        asyncio.run(builder.ensure(repo_name="monorepo", repo=RepoConfig(path=sample_repo), commit=commit))
    for image in docker_client.images.list(name="127.0.0.1:9/genesis/snapshot"):
        docker_client.images.remove(image.tags[0])

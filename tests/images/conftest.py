"""Fixtures for the image tests: the orchestrator image built by its own
build script, and toolchain images built through Genesis's snapshot builder.

Every image is built once per session and removed at its end: the
orchestrator image by tag (it also carries the test-run label the root
conftest removes by), the untagged image its build stage leaves behind by
its label, and the toolchain images by tag. The toolchain builds use a
per-run alias of the base image, so their tags (a hash of the Dockerfile,
the runner and the base image's name) are this run's own and removing them
cannot touch an image anyone else uses. ``genesis/base`` and the Python
toolchain images are never removed.

Build times and sizes are printed in pytest's terminal summary.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from helpers import RUN_ID
from images_support import ORCHESTRATOR_TAG, TIMINGS, Toolchains, build_orchestrator_image, remove_image, size_mb


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.section("image builds")
        for what, figure in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {figure}")


@pytest.fixture(scope="session")
def orchestrator_image(docker_client):
    """The orchestrator image, built with images/orchestrator/build.sh."""
    session_started = datetime.now(timezone.utc).replace(microsecond=0)
    try:
        seconds = build_orchestrator_image()
        TIMINGS["orchestrator image (build.sh)"] = f"{seconds:.1f} s, {size_mb(docker_client, ORCHESTRATOR_TAG)}"
        yield ORCHESTRATOR_TAG
    finally:
        remove_image(docker_client, ORCHESTRATOR_TAG)
        # The build stage leaves an untagged image (with its layers); remove
        # the ones this session made, never an older one someone else's cache holds.
        for image in docker_client.images.list(filters={"dangling": True, "label": "genesis.kind=orchestrator-build"}):
            created = datetime.fromisoformat(image.attrs["Created"][:19] + "+00:00")
            if created >= session_started:
                remove_image(docker_client, image.id)


@pytest.fixture(scope="session")
def toolchains(docker_client, settings):
    """Toolchain builds on this run's own alias of the configured base image."""
    base = docker_client.images.get(settings.base_image)
    alias_repo, alias_tag = "genesis-test/base", RUN_ID
    base.tag(alias_repo, alias_tag)  # a second name only: removing it leaves the base alone
    built = Toolchains(docker_client, f"{alias_repo}:{alias_tag}")
    try:
        yield built
    finally:
        built.remove_all()

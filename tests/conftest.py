"""Shared fixtures: a real Docker Engine, a sample monorepo, a Genesis app.

Everything a test run creates in Docker (sandboxes, snapshot images) carries
the label ``genesis.test-run=<run id>`` and is removed by that label at the
end of the session. Docker must be running (``scripts/setup.sh`` starts it);
without it the Docker tests fail, they are never skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import RUN_ID, TEST_LABEL, make_repo
from genesisserver import genesis_api  # noqa: F401 - fixtures for every test package
from natsserver import nats_server  # noqa: F401
from pgserver import postgres_server, postgres_url  # noqa: F401


def _remove_by_label() -> None:
    """Remove every container and image this test run created, by its label."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception:  # noqa: BLE001 - no engine, nothing of ours to remove
        return
    selector = {"label": f"{TEST_LABEL}={RUN_ID}"}
    for container in client.containers.list(all=True, filters=selector):
        container.remove(force=True)
    # Newest first: an environment image can only go once the snapshots built FROM it are gone.
    for image in sorted(client.images.list(filters=selector), key=lambda i: i.attrs["Created"], reverse=True):
        client.images.remove(image.id, force=True)
    client.close()


@pytest.fixture(scope="session", autouse=True)
def _no_server_of_the_developers(tmp_path_factory):
    """The tests' CLI runs in local mode unless a test names a server: a contexts file in
    the developer's home, or GENESIS_SERVER in their shell, must not send it elsewhere."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENESIS_CONTEXTS", str(tmp_path_factory.mktemp("contexts") / "config"))
        for name in ("GENESIS_SERVER", "GENESIS_TOKEN"):
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session", autouse=True)
def _cleanup_docker_leftovers():
    yield
    _remove_by_label()


@pytest.fixture(scope="session")
def docker_client():
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means no engine
        pytest.fail(f"Docker Engine is not answering ({exc}); run scripts/setup.sh first")
    yield client
    client.close()


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("repo") / "monorepo")


@pytest.fixture(scope="session")
def config_file(tmp_path_factory, sample_repo) -> Path:
    """A genesis.yaml for this session: its own home, the sample repo, the test label."""
    home = tmp_path_factory.mktemp("genesis-home")
    path = home / "genesis.yaml"
    path.write_text(json.dumps({
        "home": str(home), "repos": {"monorepo": {"path": str(sample_repo), "allow_validation_override": True}},
        "extra_labels": {TEST_LABEL: RUN_ID}, "preserve_ttl_s": 3600, "pass_interval_s": 0.2,
        "api": {"port": 0},  # the API's tests start their own server (genesisserver.py)
        # An installation of this run's own: a controller of another run, or a developer's
        # `genesis serve`, on the same engine reaps only its own installation's sandboxes.
        "installation": f"test-{RUN_ID}",
        # Cold sandboxes, one per experiment, labelled with it: what these tests look for.
        # Warm pools have tests of their own (tests/integration/test_pools.py).
        "pools": {"enabled": False},
    }))
    return path


@pytest.fixture(scope="session")
def settings(config_file):
    from orchestrator.settings import load_settings

    return load_settings(config_file)


@pytest.fixture(scope="session")
def app(settings, docker_client):
    from orchestrator.app import App

    application = App(settings)
    yield application
    application.close()

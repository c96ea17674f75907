"""Environment images against a real Docker Engine and the real PyPI.

A small Python project whose code imports a third-party package
(``text-unidecode``, installed from PyPI by the environment's setup):

    c0  the project, requirements.txt, no .genesis.yaml
    c1  adds .genesis.yaml: environment {setup: pip install -r requirements.txt,
        and two checks that the CA bundle and build.env reach the build}
    c2  changes code only (same inputs as c1)
    c3  adds six to requirements.txt (new inputs)

Repositories in the settings over that one git repository: ``envpy`` (no
settings of its own: c1's .genesis.yaml supplies them), ``envdeps`` (the
same, allowing dependency changes), ``envbroken`` (a setup that cannot
succeed) and ``envage`` (an unpinned and a pinned environment, max_age 1s).
The app's images carry a label of this module's own, so the cleanup test
sees only them.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import tarfile
import uuid
from datetime import datetime, timezone
from hashlib import sha256
from pathlib import Path

import pytest

from helpers import RUN_ID, TEST_LABEL, request_body, run_experiment, wait_until

pytestmark = pytest.mark.docker

CA_MARKER = "GENESIS-TEST-CA-" + uuid.uuid4().hex[:8]
SECRET = "s3cret-" + uuid.uuid4().hex[:12]
MODULE_LABEL = {"genesis.test-module": "environments-" + RUN_ID}
HOST_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

MOD = 'from text_unidecode import unidecode\n\n\ndef slug(text):\n    return unidecode(text).lower().replace(" ", "-")\n'
TESTS = ('from mod import slug\n\n\ndef test_ascii():\n    assert slug("Hello World") == "hello-world"\n\n\n'
         'def test_accents():\n    assert slug("Héllo Wörld") == "hello-world"\n')
# The setup proves the CA bundle and build.env reached it by printing their
# hashes: the commands themselves are in the image's history, so they must
# not contain what they look for.
GENESIS_YAML = {
    "environment": {
        "setup": ["pip install -r requirements.txt", 'sha256sum < "$PIP_CERT"',
                  'printf %s "${GENESIS_TEST_PROXY_SECRET:-none}" | sha256sum'],
        "inputs": ["requirements*.txt"]},
}


PYPROJECT = ('[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
             '[project]\nname = "envproject"\nversion = "1.2.3"\n\n[tool.setuptools]\npy-modules = ["mod"]\n')


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for path, content in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(content)
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@genesis", "-c", "user.name=t", "commit", "-qm", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    repo = tmp_path_factory.mktemp("envproject") / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    commits = {"c0": _commit(repo, {"mod.py": MOD, "tests/test_mod.py": TESTS,
                                    "requirements.txt": "text-unidecode==1.3\n"}, "project")}
    commits["c1"] = _commit(repo, {".genesis.yaml": json.dumps(GENESIS_YAML)}, "environment")
    commits["c2"] = _commit(repo, {"mod.py": MOD.replace("def slug(text):", "def slug(text):  # same")}, "code")
    commits["c3"] = _commit(repo, {"requirements.txt": "text-unidecode==1.3\nsix==1.16.0\n"}, "six")
    commits["c4"] = _commit(repo, {"pyproject.toml": PYPROJECT}, "packaged")
    return {"path": repo, **commits}


@pytest.fixture(scope="module")
def env_app(tmp_path_factory, project, docker_client):
    from orchestrator.app import App
    from orchestrator.settings import load_settings

    home = tmp_path_factory.mktemp("env-home")
    bundle = home / "ca-bundle.crt"
    bundle.write_text(HOST_BUNDLE.read_text() + f"\n# {CA_MARKER}\n")
    path = str(project["path"])
    config = home / "genesis.yaml"
    config.write_text(json.dumps({
        "home": str(home), "extra_labels": {TEST_LABEL: RUN_ID, **MODULE_LABEL}, "pass_interval_s": 0.2,
        "installation": f"environments-{RUN_ID}",  # no other app's controller reaps its sandboxes
        "build": {"ca_bundle": str(bundle), "env": {"GENESIS_TEST_PROXY_SECRET": SECRET}},
        "repos": {
            "envpy": {"path": path},
            "envdeps": {"path": path, "allow_dependency_changes": True},
            "envbroken": {"path": path, "environment": {
                "setup": ["echo installing", "pip install --no-index genesis-no-such-package-xyz"],
                "inputs": ["requirements.txt"]}},
            "envage": {"path": path, "environment": {"setup": ["echo unpinned"], "inputs": ["mod.py"],
                                                     "max_age": "1s"}},
            "envpinned": {"path": path, "environment": {"setup": ["echo pinned"], "inputs": ["requirements.txt"],
                                                        "max_age": "1s"}},
            # Setup that needs the whole tree: an editable install, run when the snapshot is built.
            "envtree": {"path": path, "snapshot_setup": ["pip install --no-deps -e ."]},
        },
    }))
    application = App(load_settings(config))
    yield application
    application.close()


def _ensure(app, name: str, commit: str):
    from orchestrator.snapshots import repofile

    repo = repofile.effective(app.settings.repos[name], commit)
    return asyncio.run(app.snapshots.ensure(repo_name=name, repo=repo, commit=commit))


def _body(repo: str, commit: str, files: list[dict], **overrides) -> dict:
    body = request_body(repo=repo, base_ref=commit, changes={"files": files},
                        resources={"cpu": 1, "memory": "512Mi", "pids": 256})
    body.update(overrides)
    return body


def _image_contents(docker_client, tag: str) -> tuple[set[str], bytes]:
    """Everything an image ships: the paths in its layers, and their files, config and history as one blob."""
    raw = b"".join(docker_client.images.get(tag).save())
    out = [json.dumps(docker_client.api.history(tag)).encode()]
    names: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(raw)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()
            if member.name.endswith("layer.tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    names |= {f.name for f in layer.getmembers()}
                    out += [layer.extractfile(f).read() for f in layer.getmembers() if f.isfile()]
            else:
                out.append(data)
    return names, b"\n".join(out)


def test_environment_is_shared_by_commits_that_leave_inputs_alone_and_rebuilt_when_they_change(
        env_app, project, docker_client):
    first, same, other = (_ensure(env_app, "envpy", project[c]) for c in ("c1", "c2", "c3"))
    assert first.environment and first.environment == same.environment != other.environment
    assert not same.environment_built  # the commit's inputs are c1's: reused
    assert first.pinned and other.pinned
    assert len({first.tag, same.tag, other.tag}) == 3
    parents = {docker_client.images.get(s.tag).labels["genesis.parent"] for s in (first, same, other)}
    assert parents == {first.environment, other.environment}
    # Building again is a cache hit for every tier.
    again = _ensure(env_app, "envpy", project["c2"])
    assert (again.tag, again.built, again.environment_built) == (same.tag, False, False)


def test_real_dependency_judged_end_to_end_good_change_merges_mutant_does_not(env_app, project):
    good = run_experiment(env_app, _body("envpy", project["c1"], [{"path": "tests/test_more.py", "content": (
        "from mod import slug\n\n\ndef test_cedilla():\n    assert slug('Ça va') == 'ca-va'\n")}]))
    assert (good.phase.value, good.recommendation.value) == ("Succeeded", "merge"), good.message
    assert good.outcome.metrics.test_count == 3 and good.outcome.metrics.success_rate == 1.0
    mutant = run_experiment(env_app, _body("envpy", project["c2"], [{"path": "mod.py", "content": MOD.replace(
        "unidecode(text).lower()", "unidecode(text)")}]))
    assert mutant.phase.value == "Succeeded" and mutant.recommendation.value == "rollback", mutant.message
    assert mutant.outcome.metrics.failures == 2


def test_secrets_reach_the_build_but_never_the_image_or_a_sandbox(env_app, project, docker_client):
    snap = _ensure(env_app, "envpy", project["c1"])
    log = env_app.snapshots.logs.read(snap.environment)
    bundle = Path(env_app.settings.build.ca_bundle).read_bytes()
    assert log is not None and sha256(bundle).hexdigest() in log and sha256(SECRET.encode()).hexdigest() in log
    for tag in (snap.environment, snap.tag):
        names, shipped = _image_contents(docker_client, tag)
        assert CA_MARKER.encode() not in shipped and SECRET.encode() not in shipped
        assert not [name for name in names if name.startswith("run/genesis-build")]
        config = docker_client.images.get(tag).attrs["Config"]
        assert not any("genesis-build" in e or SECRET in e for e in config["Env"])
        assert config["User"] == "1000:1000" and config["Entrypoint"] == ["python3", "-I", "/opt/genesis/runner.py"]
    probe = ("import os, pathlib\n\n\ndef test_no_secrets_here():\n"
             "    assert not pathlib.Path('/run/genesis-build').exists()\n"
             f"    assert not any({SECRET!r} in v or 'genesis-build' in v for v in os.environ.values())\n"
             "    for path in pathlib.Path('/etc/ssl').rglob('*'):\n"
             f"        assert not path.is_file() or {CA_MARKER!r} not in path.read_text(errors='replace')\n")
    view = run_experiment(env_app, _body("envpy", project["c1"], [{"path": "tests/test_probe.py", "content": probe}]))
    assert view.recommendation.value == "merge", view.message


def test_failing_setup_is_build_failed_with_its_log(env_app, project, capsys):
    from orchestrator.cli.main import main

    view = run_experiment(env_app, _body("envbroken", project["c0"], [{"path": "NOTES.md", "content": "x\n"}]))
    assert (view.phase.value, view.reason) == ("Failed", "build_failed"), view.message
    assert "setup exited with 1" in view.message and "genesis-no-such-package-xyz" in view.message
    config = Path(env_app.settings.home) / "genesis.yaml"
    capsys.readouterr()
    assert main(["--config", str(config), "logs", view.id, "--build"]) == 0
    printed = capsys.readouterr().out
    assert "==> failed genesis/environment:envbroken-" in printed
    assert "+ echo installing\ninstalling\n" in printed and "genesis-no-such-package-xyz" in printed


def test_broken_environment_is_baseline_failed_quoting_the_import_error(env_app, project):
    view = run_experiment(env_app, _body("envpy", project["c0"], [{"path": "NOTES.md", "content": "x\n"}]))
    assert (view.phase.value, view.reason) == ("Failed", "baseline_failed")
    assert "ModuleNotFoundError: No module named 'text_unidecode'" in view.message
    assert view.sandbox_name is None  # the change never ran: it is not blamed


def test_broken_base_code_is_judged_a_fix_is_fail_to_pass(env_app, project):
    """A failing import of the repository's own code is the base's bug, not its environment."""
    broken = _commit(project["path"], {"mod.py": MOD.replace("from text_unidecode", "from mod_helpers"),
                                       "mod_helpers.py": "# unidecode was moved out by mistake\n"},
                     "broken import of an own module")
    try:
        view = run_experiment(env_app, _body("envpy", broken, [{"path": "mod_helpers.py", "content": (
            "from text_unidecode import unidecode  # noqa: F401\n")}]))
    finally:
        _git(project["path"], "reset", "-q", "--hard", project["c4"])
    assert view.phase.value == "Succeeded", view.message
    assert view.outcome.baseline.success_rate == 0.0 and view.outcome.metrics.success_rate == 1.0


def test_dependency_change_refused_unless_allowed_then_capped(env_app, project, docker_client):
    change = [{"path": "requirements.txt", "content": "text-unidecode==1.3\nsix==1.16.0\n"},
              {"path": "tests/test_six.py", "content": "import six\n\n\ndef test_six():\n    assert six.PY3\n"}]
    refused = env_app.intake.submit(json.dumps(_body("envpy", project["c1"], change)).encode())
    assert refused.error is not None and refused.error.code == "dependency_change_refused"
    assert env_app.store.get(refused.view.id).reason == "dependency_change_refused"  # recorded
    allowed = run_experiment(env_app, _body("envdeps", project["c1"], change))
    assert (allowed.phase.value, allowed.recommendation.value) == ("Succeeded", "merge_with_adaptations")
    assert "dependencies changed (requirements.txt)" in allowed.message
    assert allowed.image != allowed.baseline_image
    own_env = docker_client.images.get(allowed.image).labels["genesis.parent"]
    assert docker_client.images.get(own_env).labels["genesis.trusted"] == "false"
    own_log = env_app.snapshots.logs.read(own_env) or ""
    assert sha256(b"none").hexdigest() in own_log and sha256(SECRET.encode()).hexdigest() not in own_log
    # A patch that adds a new input (one the setup does not install from): its environment
    # is built with it, and its own sandbox applies the same patch over the base tree,
    # which works only if the input does not linger under the tree.
    patch = ("diff --git a/requirements-extra.txt b/requirements-extra.txt\nnew file mode 100644\n"
             "--- /dev/null\n+++ b/requirements-extra.txt\n@@ -0,0 +1 @@\n+six==1.16.0\n")
    added = run_experiment(env_app, _body("envdeps", project["c1"], [], changes={"patch": patch}))
    assert (added.phase.value, added.recommendation.value) == ("Succeeded", "merge_with_adaptations"), added.message
    assert "requirements-extra.txt" in added.message


def test_change_to_genesis_yaml_is_a_dependency_change_and_never_chooses_its_own_validation(env_app, project):
    change = [{"path": ".genesis.yaml", "content": json.dumps({**GENESIS_YAML, "validation": {"command": ["true"]}})},
              {"path": "mod.py", "content": "def slug(text):\n    return text\n"}]
    refused = env_app.intake.submit(json.dumps(_body("envpy", project["c1"], change)).encode())
    assert refused.error is not None and refused.error.code == "dependency_change_refused"
    assert ".genesis.yaml" in str(refused.error)
    view = run_experiment(env_app, _body("envdeps", project["c1"], change))  # allowed: judged by the base's file
    assert view.recommendation.value == "rollback" and view.outcome.metrics.test_count == 2


def test_unknown_toolchain_is_refused_at_intake(env_app, project):
    bad = _commit(project["path"], {".genesis.yaml": json.dumps({"toolchain": "cobol"})}, "no such toolchain")
    try:
        result = env_app.intake.submit(json.dumps(_body("envpy", bad, [{"path": "x.md", "content": "x"}])).encode())
    finally:
        _git(project["path"], "reset", "-q", "--hard", project["c4"])
    assert result.error is not None and result.error.code == "invalid_repo_config"
    assert "cobol" in str(result.error)


def test_invalid_repository_file_is_refused_at_intake(env_app, project):
    bad = _commit(project["path"], {".genesis.yaml": "environment: {setup: 3, unknown_key: true}\n"}, "bad config")
    try:
        result = env_app.intake.submit(json.dumps(_body("envpy", bad, [{"path": "x.md", "content": "x"}])).encode())
    finally:
        _git(project["path"], "reset", "-q", "--hard", project["c4"])
    assert result.error is not None and result.error.code == "invalid_repo_config"


def test_unpinned_environment_is_rebuilt_after_max_age_pinned_is_not(env_app, project, docker_client):
    # c0 has no .genesis.yaml, whose environment would win over these settings.
    unpinned, pinned = _ensure(env_app, "envage", project["c0"]), _ensure(env_app, "envpinned", project["c0"])
    assert (unpinned.pinned, pinned.pinned) == (False, True)
    ids = {s.environment: docker_client.images.get(s.environment).id for s in (unpinned, pinned)}

    def older_than_max_age() -> bool:  # Docker's Created has second resolution: leave a second of margin
        created = min(docker_client.images.get(tag).attrs["Created"][:19] for tag in ids)
        return (datetime.now(timezone.utc) - datetime.fromisoformat(created + "+00:00")).total_seconds() > 2.0

    wait_until(older_than_max_age, timeout_s=10, what="the environments to pass max_age")
    again_unpinned, again_pinned = _ensure(env_app, "envage", project["c0"]), _ensure(env_app, "envpinned",
                                                                                      project["c0"])
    assert again_unpinned.environment_built and docker_client.images.get(unpinned.environment).id != \
        ids[unpinned.environment]
    assert again_unpinned.tag != unpinned.tag  # the snapshot follows its new parent
    assert not again_pinned.environment_built and again_pinned.tag == pinned.tag


def test_cleanup_removes_least_recently_used_images_over_budget_never_one_in_use(env_app, project, docker_client):
    from orchestrator.runtimes.base import SandboxSpec
    from orchestrator.snapshots.catalog import record_use

    old, used = _ensure(env_app, "envpy", project["c3"]), _ensure(env_app, "envpy", project["c2"])
    for snap, commit in ((old, project["c3"]), (used, project["c2"])):
        record_use(env_app.store, snap, repo="envpy", commit=commit, toolchain="python")
    name = f"genesis-cleanup-probe-{RUN_ID}"
    labels = {**env_app.settings.extra_labels, **env_app.settings.sandbox_selector()}
    asyncio.run(env_app.runtime.create(SandboxSpec(name=name, image=used.tag, labels=labels, bundle=b"{}", cpu=1,
                                                   memory_bytes=2**28, pids=64)))
    try:
        controller = env_app.controller(leader=False)
        controller.settings = env_app.settings.model_copy(update={"image_disk_budget": "0"})
        removed = asyncio.run(controller.cleanup_images())
    finally:
        asyncio.run(env_app.runtime.remove(name))
    tags = {t for image in docker_client.images.list(filters={"label": f"{TEST_LABEL}={RUN_ID}"}) for t in image.tags}
    assert used.tag in tags and used.environment in tags  # in use, and the parent of one in use
    assert old.tag in removed and old.tag not in tags and used.tag not in removed
    assert not {row["tag"] for row in env_app.store.images()} & set(removed)  # forgotten by the store too
    audit = [h for h in env_app.store.history(None) if h.action == "image_removed"]
    assert {h.sandbox_name for h in audit} == set(removed)


def test_snapshot_setup_runs_over_the_whole_tree_and_the_sandbox_owns_what_it_left(env_app, project, docker_client):
    snap = _ensure(env_app, "envtree", project["c4"])  # c4's .genesis.yaml gives the environment
    assert snap.environment and snap.built
    log = env_app.snapshots.logs.read(snap.tag)
    assert log is not None and "+ pip install --no-deps -e ." in log and "Successfully installed envproject" in log
    probe = ("import importlib.metadata, os, pathlib\n\n\ndef test_installed_from_the_tree():\n"
             "    assert importlib.metadata.version('envproject') == '1.2.3'\n"
             "    left = [p for p in pathlib.Path('/workspace').rglob('*') if p.stat().st_uid != os.getuid()]\n"
             "    assert not left, left[:3]\n")
    view = run_experiment(env_app, _body("envtree", project["c4"], [{"path": "tests/test_probe.py", "content": probe}]))
    assert view.recommendation.value == "merge", view.message
    assert not docker_client.images.list(name="genesis/snapshot-tree")  # the intermediate tag is gone


def test_images_build_and_get_images_from_the_cli(env_app, project, capsys):
    from orchestrator.cli.main import main

    config = str(Path(env_app.settings.home) / "genesis.yaml")
    capsys.readouterr()
    assert main(["--config", config, "images", "build", f"envpy@{project['c1']}"]) == 0
    out, err = capsys.readouterr()
    snap = _ensure(env_app, "envpy", project["c1"])
    assert out.strip() == snap.tag
    assert "toolchain python" in err and f"environment {snap.environment}: reused" in err and "pinned" in err
    assert main(["--config", config, "get", "images", "-o", "json"]) == 0
    listed = {i["tag"]: i for i in json.loads(capsys.readouterr().out)["items"]}
    assert listed[snap.environment]["tier"] == "environment" and listed[snap.environment]["pinned"] is True
    assert listed[snap.tag]["tier"] == "snapshot" and listed[snap.tag]["repo"] == "envpy"
    assert listed[snap.tag]["last_used"] is not None
    assert main(["--config", config, "get", "images"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == ["TIER", "IMAGE", "REPO", "SIZE", "LAST-USED", "IN-USE", "PINNED"]
    assert main(["--config", config, "images", "build", "nosuchrepo"]) == 1


def test_a_change_s_inputs_are_the_base_inputs_with_its_edits_and_links_are_never_followed(env_app, project):
    from orchestrator.errors import RequestRejected
    from orchestrator.snapshots import repofile

    repo = repofile.effective(env_app.settings.repos["envdeps"], project["c1"])
    patch = ("diff --git a/requirements.txt b/requirements.txt\n--- a/requirements.txt\n+++ b/requirements.txt\n"
             "@@ -1 +1,2 @@\n text-unidecode==1.3\n+six==1.16.0\n"
             "diff --git a/requirements-link.txt b/requirements-link.txt\nnew file mode 120000\n"
             "--- /dev/null\n+++ b/requirements-link.txt\n@@ -0,0 +1 @@\n+requirements.txt\n\\ No newline at end of file\n")
    files = [{"path": "requirements-extra.txt", "content": "idna==3.7\n"}]
    # The whole patch must apply, as in the sandbox: one hunk that does not is patch_failed.
    stale = patch + "diff --git a/mod.py b/mod.py\n--- a/mod.py\n+++ b/mod.py\n@@ -1 +1 @@\n-nothing that matches\n+x\n"
    with pytest.raises(RequestRejected) as refused:
        repofile.changed_inputs(repo, project["c1"], patch=stale, files=files)
    assert refused.value.code == "patch_failed"
    inputs = repofile.changed_inputs(repo, project["c1"], patch=patch, files=files)
    assert inputs == {"requirements.txt": b"text-unidecode==1.3\nsix==1.16.0\n",
                      "requirements-extra.txt": b"idna==3.7\n"}
    # The runner applies the patch, then the files: a file write of a patched input wins.
    files.append({"path": "./requirements.txt", "content": "text-unidecode==1.3\n"})
    inputs = repofile.changed_inputs(repo, project["c1"], patch=patch, files=files)
    assert inputs["requirements.txt"] == b"text-unidecode==1.3\n"

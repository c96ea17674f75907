"""The environment tier's pure decisions: input matching, keys, pinning,
ageing, the repository file, environment failures, the dependency cap,
image eviction and the build step's script and secrets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.domain.environment import (
    EnvironmentConfig, RepoFile, environment_failure, environment_key, input_paths, is_pinned, parse_duration,
    repo_modules, should_rebuild,
)
from orchestrator.domain.images import ImageUse, evictions
from orchestrator.domain.models import Recommendation
from orchestrator.domain.paths import touched_paths
from orchestrator.domain.policy import capped_for_dependencies
from orchestrator.settings import BuildSettings, RepoConfig
from orchestrator.snapshots import steps

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


# -- inputs, keys, pinning, age ---------------------------------------------------

def test_input_globs_match_whole_paths():
    paths = ["requirements.txt", "requirements-dev.txt", "sub/requirements.txt", "pyproject.toml", "src/x.py",
             "web/package.json", "package-lock.json"]
    assert input_paths(paths, ["requirements*.txt", "pyproject.toml"]) == [
        "pyproject.toml", "requirements-dev.txt", "requirements.txt"]
    assert input_paths(paths, ["*/package.json", "package-lock.json"]) == ["package-lock.json", "web/package.json"]
    assert input_paths(paths, []) == []


def test_environment_key_depends_on_toolchain_setup_and_contents_only():
    base = dict(toolchain_id="sha256:a", setup=["pip install -r requirements.txt"],
                inputs={"requirements.txt": b"six==1.16.0\n"})
    key = environment_key(**base)
    assert environment_key(**base) == key
    assert environment_key(**{**base, "inputs": {"requirements.txt": b"six==1.17.0\n"}}) != key
    assert environment_key(**{**base, "setup": ["uv pip install -r requirements.txt"]}) != key
    assert environment_key(**{**base, "toolchain_id": "sha256:b"}) != key
    assert environment_key(**{**base, "inputs": {"other.txt": b"six==1.16.0\n"}}) != key


@pytest.mark.parametrize("inputs, pinned", [
    ({"requirements.txt": b"six==1.16.0\nidna==3.7  # pinned\n"}, True),
    ({"requirements.txt": b"six==1.16.0 \\\n    --hash=sha256:0123abcd\n"}, True),
    ({"requirements.txt": b"six==1.16.0; python_version >= '3'\n"}, True),
    ({"requirements.txt": b"requests>=2; python_version == '3.11'\n"}, False),  # == only in the marker
    ({"requirements.txt": b"six==1.*\n"}, False),
    ({"requirements.txt": b"-e git+https://example.org/x.git@main#egg=x\n"}, False),
    ({"requirements.txt": b"six>=1.16\n"}, False),
    ({"requirements.txt": b"six>=1.16\n", "web/package-lock.json": b"{}", "web/package.json": b"{}"}, False),
    ({"requirements.txt": b"-r base.txt\n"}, False),  # no requirement of its own: nothing shows it pinned
    ({"package.json": b"{}", "package-lock.json": b"{}"}, True),
    ({"package.json": b"{}"}, False),
    ({"Cargo.toml": b"", "Cargo.lock": b""}, True),
    ({"pyproject.toml": b"", "requirements.txt": b"six==1.16.0\n"}, False),
    ({}, False),
])
def test_pinned_means_every_version_is_fixed(inputs, pinned):
    assert is_pinned(inputs) is pinned


def test_only_unpinned_environments_age_out():
    week = 7 * 86400.0
    assert should_rebuild(pinned=False, age_s=week + 1, max_age_s=week)
    assert not should_rebuild(pinned=False, age_s=week - 1, max_age_s=week)
    assert not should_rebuild(pinned=True, age_s=10 * week, max_age_s=week)
    assert should_rebuild(pinned=True, age_s=None, max_age_s=week)  # missing: built


def test_durations_and_environment_config():
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90m") == 5400 and parse_duration(30) == 30
    with pytest.raises(ValueError):
        parse_duration("soon")
    config = EnvironmentConfig.model_validate({"setup": ["x"], "inputs": ["a.txt"], "max_age": "2h"})
    assert config.max_age_s == 7200
    with pytest.raises(ValidationError):
        EnvironmentConfig.model_validate({"inputs": ["../outside.txt"]})
    with pytest.raises(ValidationError):
        EnvironmentConfig.model_validate({"inputs": ["/etc/passwd"]})


def test_repository_file_wins_over_settings_but_cannot_widen_them():
    settings = RepoConfig(path=Path("/srv/repo"), environment={"setup": ["a"], "inputs": ["r.txt"]})
    file = RepoFile.model_validate({"toolchain": "node", "validation": {"command": ["npm", "test"]},
                                    "environment": {"setup": ["npm ci"], "inputs": ["package*.json"]}})
    merged = settings.with_file(file)
    assert (merged.toolchain, merged.validation.command, merged.environment.setup) == ("node", ["npm", "test"],
                                                                                        ["npm ci"])
    assert merged.path == settings.path and merged.allow_dependency_changes is False
    assert settings.with_file(None) == settings
    assert settings.with_file(RepoFile()) == settings  # keys it does not set stay the operator's
    for forbidden in ({"allow_dependency_changes": True}, {"path": "/"}, {"build": {}}):
        with pytest.raises(ValidationError):
            RepoFile.model_validate(forbidden)


def test_touched_paths_of_a_change():
    patch = "diff --git a/requirements.txt b/requirements.txt\n--- a/requirements.txt\n+++ b/requirements.txt\n"
    assert touched_paths(patch, ["src/x.py"]) == ["requirements.txt", "src/x.py"]
    assert touched_paths(None, ["./requirements.txt"]) == ["requirements.txt"]  # as the runner writes it
    assert touched_paths(None, []) == []


@pytest.mark.parametrize("patch", [
    "--- x/requirements.txt\n+++ y/requirements.txt\n@@ -1 +1 @@\n-a\n+b\n",  # git apply strips any first part
    "diff --git i/requirements.txt w/requirements.txt\n--- i/requirements.txt\n+++ w/requirements.txt\n",
])
def test_a_patch_prefix_other_than_a_b_cannot_hide_an_input(patch):
    assert "requirements.txt" in touched_paths(patch, [])


# -- a baseline broken by its environment ---------------------------------------------

OWN = repo_modules(["slugify/__init__.py", "slugify/slugify.py", "test.py", "src/helpers/__init__.py",
                    "packages/web/index.js", "README.md", "services/billing/billing/__init__.py"])


def test_repo_modules_cover_packages_and_modules_at_any_depth():
    assert {"slugify", "test", "helpers", "web", "billing", "services"} <= OWN
    assert "README" not in OWN and "requests" not in OWN


@pytest.mark.parametrize("text, exit_code, expected", [
    ("E   ModuleNotFoundError: No module named 'text_unidecode'", 2,
     "ModuleNotFoundError: No module named 'text_unidecode'"),
    ("ImportError: No module named 'requests.adapters'", 1, "ImportError: No module named 'requests.adapters'"),
    ("E   ModuleNotFoundError: No module named 'slugify.missing'", 2, None),  # the repository's own: judged
    ("AssertionError: assert 1 == 2", 1, None),
    ("Error: Cannot find module 'lodash'\nRequire stack:", 1, "Cannot find module 'lodash'"),
    ("Cannot find module 'lodash' from 'src/x.test.js'", 1, "Cannot find module 'lodash'"),  # jest
    ("/usr/bin/python3: No module named pytest", 1, "/usr/bin/python3: No module named pytest"),
    ("sh: 1: jest: not found", 127, "sh: 1: jest: not found"),
    ("E   ModuleNotFoundError: No module named 'billing.generated'", 2, None),  # services/billing/billing: own
    ("Error: Cannot find module './local'", 1, None),
    ("Error [ERR_MODULE_NOT_FOUND]: Cannot find package '@scope/pkg' imported from", 1,
     "Cannot find package '@scope/pkg'"),
    ("error: no matching package named `itoa` found\nlocation searched: registry", 101,
     "error: no matching package named `itoa` found"),
    ("genesis-runner: cannot run validation: [Errno 2] No such file or directory: 'jest'", 127,
     "genesis-runner: cannot run validation: [Errno 2] No such file or directory: 'jest'"),
    ("genesis-runner: cannot run validation: whatever", 0, None),
])
def test_environment_failures_are_told_from_broken_code(text, exit_code, expected):
    assert environment_failure(texts=["", text], exit_code=exit_code, own_modules=OWN) == expected


# -- the verdict cap -------------------------------------------------------------------

def test_a_dependency_change_is_at_best_merge_with_adaptations():
    assert capped_for_dependencies(Recommendation.MERGE, "rule 2", ["requirements.txt"])[0] is \
        Recommendation.MERGE_WITH_ADAPTATIONS
    recommendation, why = capped_for_dependencies(Recommendation.MERGE, "rule 2", ["requirements.txt"])
    assert "dependencies changed (requirements.txt)" in why
    assert capped_for_dependencies(Recommendation.ROLLBACK, "rule 1", ["a.txt"])[0] is Recommendation.ROLLBACK
    assert capped_for_dependencies(Recommendation.MERGE, "rule 2", []) == (Recommendation.MERGE, "rule 2")


# -- eviction ----------------------------------------------------------------------------

def _use(tag, size, days_ago, parent=None, in_use=False):
    return ImageUse(tag=tag, own_bytes=size, last_used=T0 - timedelta(days=days_ago), parent=parent, in_use=in_use)


def test_eviction_removes_least_recently_used_until_within_budget():
    images = [_use("tc", 100, 0), _use("env", 50, 5, "tc"), _use("snap-old", 10, 9, "env"),
              _use("snap-new", 10, 1, "env")]
    assert evictions(images, budget_bytes=1000) == []
    assert evictions(images, budget_bytes=165) == ["snap-old"]
    # The environment goes only after every snapshot built FROM it, then the toolchain.
    assert evictions(images, budget_bytes=0) == ["snap-old", "snap-new", "env", "tc"]


def test_eviction_never_touches_an_image_in_use_nor_its_ancestors():
    images = [_use("tc", 100, 0), _use("env", 50, 5, "tc"), _use("snap", 10, 9, "env", in_use=True),
              _use("other", 10, 1, "tc")]
    assert evictions(images, budget_bytes=0) == ["other"]


# -- the build step --------------------------------------------------------------------------

def test_build_script_arms_the_secret_trap_first_and_quotes_commands():
    text = steps.script(["pip install -r 'requirements dev.txt'", "echo done"])
    lines = text.splitlines()
    assert lines[0] == f"trap 'rm -rf {steps.SECRETS}' EXIT"
    assert "sh -ec 'pip install -r '\"'\"'requirements dev.txt'\"'\"''" in text
    assert lines[-1].startswith("find /workspace -xdev ! -user 1000")


def test_trusted_builds_get_build_env_untrusted_ones_do_not(tmp_path):
    bundle = tmp_path / "ca.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMARKER\n")
    build = BuildSettings(ca_bundle=bundle, env={"HTTPS_PROXY": "http://user:s3cret@proxy:3128"},
                          untrusted_env={"HTTPS_PROXY": "http://anonymous-proxy:3128"})
    trusted = steps.secrets(build, trusted=True)
    untrusted = steps.secrets(build, trusted=False)
    assert trusted["ca.crt"] == untrusted["ca.crt"] == bundle.read_bytes()
    assert b"s3cret" in trusted["env.sh"] and b"s3cret" not in untrusted["env.sh"]
    assert b"anonymous-proxy" in untrusted["env.sh"]
    assert f"PIP_CERT={steps.SECRETS}/ca.crt".encode() in trusted["env.sh"]
    assert "ca.crt" not in steps.secrets(BuildSettings(), trusted=True)


def test_build_logs_and_messages_never_carry_build_env_values():
    build = BuildSettings(env={"HTTPS_PROXY": "http://user:p@ss w0rd@proxy:3128", "SHORT": "ab"})
    log = ("Using proxy http://user:p@ss w0rd@proxy:3128\n"
           "curl: http%3A%2F%2Fuser%3Ap%40ss%20w0rd%40proxy%3A3128 refused\nab stays: too short to redact\n")
    cleaned = steps.redact(log, build)
    assert "p@ss w0rd" not in cleaned and "p%40ss%20w0rd" not in cleaned
    assert cleaned.count("[redacted]") == 2 and "ab stays" in cleaned


def test_own_size_counts_what_an_image_adds_over_a_parent_outside_the_candidates():
    from orchestrator.runtimes.base import ImageInfo
    from orchestrator.snapshots.cleanup import image_uses

    def info(tag, size, parent=None):
        return ImageInfo(tag=tag, id="id-" + tag, size_bytes=size, created=T0,
                         labels={"genesis.parent": parent} if parent else {})

    toolchain = info("tc", 400)
    env, snap = info("env", 450, "tc"), info("snap", 460, "env")
    uses = {u.tag: u for u in image_uses([env, snap], known=[toolchain, env, snap], last_used={}, in_use={"snap"})}
    assert (uses["env"].own_bytes, uses["snap"].own_bytes) == (50, 10)
    assert uses["env"].parent is None and uses["snap"].parent == "env"  # the toolchain is no candidate
    assert uses["snap"].in_use and not uses["env"].in_use

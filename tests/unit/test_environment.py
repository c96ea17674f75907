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
    ({"requirements.txt": b"six>=1.16\n"}, False),
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
    assert touched_paths(None, []) == []


# -- a baseline broken by its environment ---------------------------------------------

OWN = repo_modules(["slugify/__init__.py", "slugify/slugify.py", "test.py", "src/helpers/__init__.py",
                    "packages/web/index.js", "README.md"])


def test_repo_modules_cover_packages_modules_and_src_layouts():
    assert {"slugify", "test", "helpers", "web"} <= OWN


@pytest.mark.parametrize("text, exit_code, expected", [
    ("E   ModuleNotFoundError: No module named 'text_unidecode'", 2,
     "ModuleNotFoundError: No module named 'text_unidecode'"),
    ("ImportError: No module named 'requests.adapters'", 1, "ImportError: No module named 'requests.adapters'"),
    ("E   ModuleNotFoundError: No module named 'slugify.missing'", 2, None),  # the repository's own: judged
    ("AssertionError: assert 1 == 2", 1, None),
    ("Error: Cannot find module 'lodash'\nRequire stack:", 1, "Error: Cannot find module 'lodash'"),
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

"""A repository's configuration at one commit: the operator's settings with
the repository's own ``.genesis.yaml`` (read from git at that commit, like a
CI file) on top, and the environment inputs found there.

Read at the base commit only: a change that edits ``.genesis.yaml`` or an
input is applied inside its sandbox, never here, so it cannot choose its own
setup, validation or toolchain.
"""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.domain.environment import REPO_FILE, RepoFile, input_paths
from orchestrator.domain.paths import check_path
from orchestrator.errors import RequestRejected
from orchestrator.settings import RepoConfig
from orchestrator.snapshots import git

_CACHE = 256  # (repo, commit) pairs; a commit's contents never change
_TREES = 8  # whole tree listings are large in a monorepo: only the few commits in use


@lru_cache(maxsize=_CACHE)
def _repo_file(path: str, commit: str) -> RepoFile | None:
    data = git.read_blobs(Path(path), commit, [REPO_FILE]).get(REPO_FILE)
    if data is None:
        return None
    try:
        return RepoFile.model_validate(yaml.safe_load(data) or {})
    except (yaml.YAMLError, ValidationError, TypeError, ValueError) as exc:
        first = str(exc).splitlines()
        raise RequestRejected(f"{REPO_FILE} at {commit[:12]} is invalid: {' '.join(first[:3])[:400]}",
                              code="invalid_repo_config") from exc


@lru_cache(maxsize=_TREES)
def _files(path: str, commit: str) -> tuple[str, ...]:
    return tuple(git.list_files(Path(path), commit))


def effective(repo: RepoConfig, commit: str) -> RepoConfig:
    """``repo`` with ``.genesis.yaml`` at ``commit`` on top; ``invalid_repo_config`` if it does not parse."""
    return repo.with_file(_repo_file(str(repo.path), commit))


def files(repo: RepoConfig, commit: str) -> tuple[str, ...]:
    """Every path in the tree at ``commit``."""
    return _files(str(repo.path), commit)


def inputs(repo: RepoConfig, commit: str) -> dict[str, bytes]:
    """The environment input files at ``commit`` (path -> contents)."""
    if repo.environment is None:
        return {}
    paths = input_paths(files(repo, commit), repo.environment.inputs)
    return git.read_blobs(repo.path, commit, paths)


def changed_inputs(repo: RepoConfig, commit: str, *, patch: str | None,
                   files: list[dict]) -> dict[str, bytes]:
    """The environment inputs as the change leaves them: the base commit's,
    with the change's patch applied to them (``git apply --include`` on a
    scratch copy of the inputs only, so the rest of the patch is ignored
    here; it is applied in the sandbox), then its file writes and deletions,
    in the order the sandbox's runner applies them.

    Raises ``RequestRejected(patch_failed)`` when the patch does not apply
    to the inputs.
    """
    assert repo.environment is not None
    result = dict(inputs(repo, commit))
    if patch and patch.strip():  # the runner's order: the patch, then the file writes
        result = _apply_to_inputs(result, patch, repo.environment.inputs)
    for change in files:
        path = check_path(change["path"])
        if not input_paths([path], repo.environment.inputs):
            continue
        if change.get("delete"):
            result.pop(path, None)
        elif change.get("content_b64") is not None:
            result[path] = base64.b64decode(change["content_b64"])
        else:
            result[path] = str(change.get("content", "")).encode()
    return result


def _apply_to_inputs(current: dict[str, bytes], patch: str, globs: list[str]) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="genesis-inputs-") as scratch:
        root = Path(scratch)
        for path, data in current.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(data)
        includes = [f"--include={glob}" for glob in globs]
        # No enclosing repository may be taken for this scratch copy's.
        env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(root.parent)}
        proc = subprocess.run(["git", "apply", "--whitespace=nowarn", *includes, "-"], cwd=root,
                              input=patch.encode(), capture_output=True, env=env)
        if proc.returncode != 0:
            raise RequestRejected("the change's patch does not apply to the environment inputs: "
                                  + proc.stderr.decode(errors="replace").strip()[-400:], code="patch_failed")
        # Regular files only: a symlink the patch made must never be followed on this host.
        found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
        return {path: (root / path).read_bytes() for path in input_paths(found, globs)}

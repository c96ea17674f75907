"""A repository's configuration at one commit: the operator's settings with
the repository's own ``.genesis.yaml`` (read from git at that commit, like a
CI file) on top, and the environment inputs found there.

Read at the base commit only: a change that edits ``.genesis.yaml`` or an
input is applied inside its sandbox, never here, so it cannot choose its own
setup, validation or toolchain.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.domain.environment import REPO_FILE, RepoFile, input_paths
from orchestrator.errors import RequestRejected
from orchestrator.settings import RepoConfig
from orchestrator.snapshots import changes, git

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
    with the change (computed on the host, :mod:`orchestrator.snapshots.changes`)
    on top. Raises ``RequestRejected(patch_failed)`` when it does not apply."""
    return inputs_after(repo, commit, changes.compute(repo, commit, patch=patch, files=files))


def inputs_after(repo: RepoConfig, commit: str, change: changes.Change) -> dict[str, bytes]:
    """The environment inputs at ``commit`` with an already computed ``change`` on top."""
    assert repo.environment is not None
    result = dict(inputs(repo, commit))
    for path, state in change.after.items():
        if not input_paths([path], repo.environment.inputs):
            continue
        if state.data is None or state.symlink is not None:  # a link is never followed on this host
            result.pop(path, None)
        else:
            result[path] = state.data
    return result

"""A change, computed on the host: every touched file at the base commit and
with the change applied, from the request and the repository alone.

This is Genesis's own account of what a change does, out of the change's
reach: the diff, ``llm_reduction``, the protected files it edits, the
tamper scan and the split into test and source files all read it, and the
sandbox receives it as plain file writes (so a pass can leave the change's
test files out). The patch is applied here with ``git apply`` to a scratch
copy of the touched files only, so the cost follows the size of the change,
not of the monorepo; nothing is followed through a symlink on this host.
"""

from __future__ import annotations

import base64
import difflib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from orchestrator.domain.paths import check_path, touched_paths
from orchestrator.errors import RequestRejected
from orchestrator.settings import RepoConfig
from orchestrator.snapshots import git


@dataclass(frozen=True)
class FileState:
    """One path's contents: ``data`` None when absent; a symlink has ``symlink``."""

    data: bytes | None
    mode: str = "644"
    symlink: str | None = None


ABSENT = FileState(None)


@dataclass(frozen=True)
class Change:
    before: dict[str, FileState]
    after: dict[str, FileState]

    @property
    def edited(self) -> list[str]:
        return sorted(p for p in self.after if self.after[p] != self.before.get(p, ABSENT))

    def contents(self, side: str) -> dict[str, bytes | None]:
        """Regular-file contents on one side (``before`` | ``after``); None when absent or a link."""
        states = self.before if side == "before" else self.after
        return {p: s.data if s.symlink is None else None for p, s in states.items()}

    def writes(self, paths: list[str] | None = None) -> list[dict]:
        """The runner's file writes for ``paths`` (default: every edited path)."""
        out = []
        for path in self.edited if paths is None else paths:
            state = self.after[path]
            if state.symlink is not None:
                out.append({"path": path, "symlink": state.symlink})
            elif state.data is None:
                out.append({"path": path, "delete": True})
            else:
                out.append({"path": path, "content_b64": base64.b64encode(state.data).decode(), "mode": state.mode})
        return out

    def diff(self) -> str:
        chunks: list[str] = []
        for path in self.edited:
            old, new = self.before.get(path, ABSENT), self.after[path]
            chunks.extend(difflib.unified_diff(
                _lines(old), _lines(new),
                fromfile="a/" + path if old.data is not None else "/dev/null",
                tofile="b/" + path if new.data is not None else "/dev/null"))
        return "".join(chunks)


def _lines(state: FileState) -> list[str]:
    if state.symlink is not None:
        return [f"-> {state.symlink}\n"]
    return (state.data or b"").decode("utf-8", "replace").splitlines(keepends=True)


def compute(repo: RepoConfig, commit: str, *, patch: str | None, files: list[dict]) -> Change:
    """The touched files before and after: the patch first, then the file writes
    and deletions, in the request's order. ``patch_failed`` when it does not apply."""
    paths = touched_paths(patch, [f["path"] for f in files])
    blobs = git.read_blobs(repo.path, commit, paths)
    modes = git.modes(repo.path, commit, list(blobs))
    before = {p: _state(blobs[p], modes.get(p, "100644")) if p in blobs else ABSENT for p in paths}
    after = dict(before)
    if patch and patch.strip():
        after = _apply(before, patch)
    for change in files:
        path = check_path(change["path"])
        if change.get("delete"):
            if after.get(path, ABSENT).data is None:
                raise RequestRejected(f"cannot delete {path!r}: no such file", code="patch_failed")
            after[path] = ABSENT
            continue
        data = base64.b64decode(change["content_b64"]) if change.get("content_b64") is not None \
            else str(change.get("content", "")).encode()
        mode = change.get("mode") or (after.get(path, ABSENT).mode if after.get(path, ABSENT).symlink is None else "644")
        after[path] = FileState(data, mode)
    return Change(before=before, after=after)


def _state(data: bytes, git_mode: str) -> FileState:
    if git_mode == "120000":
        return FileState(data, "644", symlink=data.decode("utf-8", "replace"))
    return FileState(data, "755" if git_mode == "100755" else "644")


def _apply(before: dict[str, FileState], patch: str) -> dict[str, FileState]:
    with tempfile.TemporaryDirectory(prefix="genesis-change-") as scratch:
        root = Path(os.path.realpath(scratch))
        for path, state in before.items():
            target = root / path
            if state.data is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if state.symlink is not None:
                os.symlink(state.symlink, target)
            else:
                target.write_bytes(state.data)
                target.chmod(0o755 if state.mode == "755" else 0o644)
        # No enclosing repository may be taken for this scratch copy's.
        env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(root.parent)}
        proc = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=root, input=patch.encode(),
                              capture_output=True, env=env)
        if proc.returncode != 0:
            raise RequestRejected("git apply failed: " + proc.stderr.decode(errors="replace").strip()[-2000:],
                                  code="patch_failed")
        return {path: _read(root, path) for path in touched_paths(patch, before)}


def _read(root: Path, path: str) -> FileState:
    target = root / path
    if os.path.realpath(target.parent) != os.path.normpath(root / Path(path).parent) \
            and os.path.lexists(target.parent):
        raise RequestRejected(f"the patch writes {path!r} through a symlink", code="patch_failed")
    if not os.path.lexists(target):
        return ABSENT
    if target.is_symlink():
        return FileState(os.readlink(target).encode(), "644", symlink=os.readlink(target))
    if not target.is_file():
        return ABSENT  # a directory where a file was: its files are touched paths of their own
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read()
    return FileState(data, "755" if os.stat(target).st_mode & 0o100 else "644")

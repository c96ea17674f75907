"""Change-path validation: every path a change touches stays inside the tree.

Rejects absolute paths, ``..`` segments, anything under ``.git``, NUL and
control characters, and symlinks (created by a patch) whose target leaves the
tree. The in-sandbox runner checks again against the real tree (a path that
walks through an existing symlink), so this is the first of two gates.
"""

from __future__ import annotations

import posixpath
import re

from orchestrator.errors import RequestRejected

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DIFF_GIT = re.compile(r"^diff --git (\S+) (\S+)$")
_HEADER_PATH = re.compile(r"^(?:---|\+\+\+) (\S+)")
_RENAME_COPY = re.compile(r"^(?:rename|copy) (?:from|to) (.+)$")
_SYMLINK_MODE = "120000"


def check_path(path: str) -> str:
    """Return ``path`` normalised, or raise ``RequestRejected(invalid_path)``."""

    def reject(why: str) -> RequestRejected:
        return RequestRejected(f"path {path!r}: {why}", code="invalid_path")

    if not path or _CONTROL.search(path):
        raise reject("empty or contains control characters")
    if "\\" in path:
        raise reject("backslashes are not allowed")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise reject("absolute paths are not allowed; give a path relative to the repo root")
    parts = path.split("/")
    if ".." in parts:
        raise reject("'..' segments are not allowed")
    normalised = posixpath.normpath(path)
    if normalised in (".", ""):
        raise reject("names the repository root, not a file")
    if normalised.split("/")[0] == ".git":
        raise reject("paths into .git are not allowed")
    return normalised


def check_link_target(link_path: str, target: str) -> None:
    """A symlink at ``link_path`` must point inside the tree."""
    if target.startswith("/") or _CONTROL.search(target):
        raise RequestRejected(
            f"symlink {link_path!r} -> {target!r} escapes the repository", code="invalid_path"
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    if resolved == ".." or resolved.startswith("../") or resolved.split("/")[0] == ".git":
        raise RequestRejected(
            f"symlink {link_path!r} -> {target!r} escapes the repository", code="invalid_path"
        )


def _strip_prefix(raw: str) -> str | None:
    if raw == "/dev/null":
        return None
    raw = raw.strip('"')
    if raw[:2] in ("a/", "b/"):
        return raw[2:]
    return raw


def patch_paths(patch: str) -> list[str]:
    """Every path a unified diff names, checked; raises on the first bad one."""
    seen: list[str] = []
    lines = patch.splitlines()
    for index, line in enumerate(lines):
        candidates: list[str | None] = []
        if match := _DIFF_GIT.match(line):
            candidates = [_strip_prefix(match.group(1)), _strip_prefix(match.group(2))]
        elif match := _HEADER_PATH.match(line):
            candidates = [_strip_prefix(match.group(1))]
        elif match := _RENAME_COPY.match(line):
            candidates = [match.group(1).strip('"')]
        for candidate in candidates:
            if candidate is not None:
                seen.append(check_path(candidate))
        if line.startswith("new file mode " + _SYMLINK_MODE) or line.startswith(
            "new mode " + _SYMLINK_MODE
        ):
            _check_patch_symlink(lines, index, seen)
    return sorted(set(seen))


def _check_patch_symlink(lines: list[str], index: int, seen: list[str]) -> None:
    """A patch that creates a symlink carries its target as the one added line."""
    link = seen[-1] if seen else "?"
    for line in lines[index + 1 :]:
        if line.startswith("diff --git "):
            return
        if line.startswith("+") and not line.startswith("+++"):
            check_link_target(link, line[1:])
            return

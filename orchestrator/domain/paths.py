"""Change-path validation: every path a change touches stays inside the tree.

Rejects absolute paths, ``..`` segments, anything under ``.git``, NUL and
control characters, and symlinks (created by a patch) whose target leaves the
tree. The in-sandbox runner checks again against the real tree (a path that
walks through an existing symlink), so this is the first of two gates.
"""

from __future__ import annotations

import posixpath
import re
from typing import Iterable

from orchestrator.errors import RequestRejected

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_PATH = re.compile(r"^(?:---|\+\+\+) (.+?)(?:\t.*)?$")
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
    if ".git" in normalised.split("/"):  # git itself refuses .git at any depth
        raise reject("paths into .git are not allowed")
    return normalised


def check_link_target(link_path: str, target: str) -> None:
    """A symlink at ``link_path`` must point inside the tree."""
    if target.startswith("/") or _CONTROL.search(target):
        raise RequestRejected(
            f"symlink {link_path!r} -> {target!r} escapes the repository", code="invalid_path"
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(link_path), target))
    if resolved == ".." or resolved.startswith("../") or ".git" in resolved.split("/"):
        raise RequestRejected(
            f"symlink {link_path!r} -> {target!r} escapes the repository", code="invalid_path"
        )


def _unquote(raw: str) -> str:
    """Git C-quotes names with special characters: "a/caf\\303\\251"."""
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        return raw[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape")
    return raw


def _strip_prefix(raw: str) -> list[str]:
    """The repository paths a patch name can mean.

    ``git apply`` strips the first component (``-p1``) whatever it is:
    ``a/``, ``b/``, or ``i/`` and ``w/`` (diff.mnemonicPrefix), or anything
    else. A name without the usual ``a/``/``b/`` is given both ways, so that
    neither path validation nor the dependency check can be dodged by a
    prefix that only ``git apply`` strips.
    """
    raw = _unquote(raw.strip())
    if raw == "/dev/null":
        return []
    if raw[:2] in ("a/", "b/"):
        return [raw[2:]]
    return [raw, raw.split("/", 1)[1]] if "/" in raw.strip("/") else [raw]


def _diff_git_names(rest: str) -> list[str | None]:
    """Names of a ``diff --git a/X b/Y`` line; X and Y may contain spaces.

    Git itself only trusts this line when both names are the same; other
    cases (renames) carry their names on ``rename from/to`` lines, which are
    checked separately, so here every plausible split is checked.
    """
    if rest.startswith('"'):
        names = re.findall(r'"(?:[^"\\]|\\.)*"|\S+', rest)
        return [path for n in names for path in _strip_prefix(n)]
    half = (len(rest) - 1) // 2
    if len(rest) % 2 == 1 and rest[half] == " " and rest[:half][2:] == rest[half + 1:][2:]:
        return _strip_prefix(rest[:half]) + _strip_prefix(rest[half + 1:])
    candidates: list[str] = []
    for match in re.finditer(r" \S+/", rest):
        candidates += _strip_prefix(rest[:match.start()]) + _strip_prefix(rest[match.start() + 1:])
    return candidates or _strip_prefix(rest)


def _is_header_pair(lines: list[str], index: int) -> bool:
    """``---`` then ``+++``: a file header, not a removed line that starts with "--"."""
    line = lines[index]
    if line.startswith("--- "):
        return index + 1 < len(lines) and lines[index + 1].startswith("+++ ")
    return line.startswith("+++ ") and index > 0 and lines[index - 1].startswith("--- ")


def patch_paths(patch: str) -> list[str]:
    """Every path a unified diff names, checked; raises on the first bad one."""
    seen: list[str] = []
    lines = patch.splitlines()
    for index, line in enumerate(lines):
        candidates: list[str | None] = []
        if line.startswith("diff --git "):
            candidates = list(_diff_git_names(line[len("diff --git "):]))
        elif _is_header_pair(lines, index) and (match := _HEADER_PATH.match(line)):
            candidates = list(_strip_prefix(match.group(1)))
        elif match := _RENAME_COPY.match(line):
            candidates = [_unquote(match.group(1).strip())]
        for candidate in candidates:
            if candidate is not None:
                seen.append(check_path(candidate))
        if line.startswith("new file mode " + _SYMLINK_MODE) or line.startswith(
            "new mode " + _SYMLINK_MODE
        ):
            _check_patch_symlink(lines, index, seen)
    return sorted(set(seen))


def _check_patch_symlink(lines: list[str], index: int, seen: list[str]) -> None:
    """A patch that creates a symlink carries its target as the hunk's added line."""
    link = seen[-1] if seen else "?"
    in_hunk = False
    for line in lines[index + 1 :]:
        if line.startswith("diff --git "):
            return
        if line.startswith("@@"):
            in_hunk = True
        elif in_hunk and line.startswith("+"):
            check_link_target(link, line[1:])
            return


def touched_paths(patch: str | None, files: Iterable[str]) -> list[str]:
    """Every repository path a change writes, deletes or renames, normalised
    (``./requirements.txt`` is ``requirements.txt``)."""
    return sorted(set(patch_paths(patch) if patch else []) | {check_path(f) for f in files})

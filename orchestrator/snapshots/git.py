"""Read-only git operations on the configured repositories.

Everything here reads the object database (``rev-parse``, ``archive``,
``cat-file``); nothing touches a working tree, so the main repository is
never modified by Genesis.
"""

from __future__ import annotations

import re
import subprocess
import tarfile
from pathlib import Path
from typing import BinaryIO, Iterable

from orchestrator.errors import GenesisError, RequestRejected

_SAFE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@{}^~-]{0,255}$")
SANDBOX_UID = 1000  # owner of /workspace in the sandbox (images/toolchain-python)


def _git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run(["git", "-C", str(repo), *args], input=input, capture_output=True)
    if proc.returncode != 0:
        raise GenesisError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace').strip()}",
                           code="git_error")
    return proc.stdout


_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_known_commits: dict[tuple[str, str], str] = {}  # (repo, full sha) -> itself; branches are never cached
_KNOWN_COMMITS_MAX = 10_000


def resolve_commit(repo: Path, ref: str) -> str:
    """Full commit id of ``ref`` (commit, tag or branch); ``unknown_commit`` if none.

    A full commit id that was found once is remembered: it cannot change
    meaning, and intake sees the same few commits over and over.
    """
    key = (str(repo), ref)
    if key in _known_commits:
        return _known_commits[key]
    commit = _resolve(repo, ref)
    if _FULL_SHA.match(ref) and len(_known_commits) < _KNOWN_COMMITS_MAX:
        _known_commits[key] = commit
    return commit


def _resolve(repo: Path, ref: str) -> str:
    if not _SAFE_REF.match(ref) or ".." in ref:
        raise RequestRejected(f"base_ref {ref!r} is not a valid git ref", code="unknown_commit")
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "--end-of-options",
                           f"{ref}^{{commit}}"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RequestRejected(f"base_ref {ref!r} is not a commit in the repository", code="unknown_commit")
    return proc.stdout.strip()


def write_archive(repo: Path, commit: str, out: BinaryIO) -> int:
    """``git archive`` of ``commit`` re-owned to the sandbox user; returns file count.

    Streams through: memory stays flat whatever the size of the tree.
    """
    proc = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", commit],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    assert proc.stdout is not None
    with tarfile.open(fileobj=proc.stdout, mode="r|") as source, tarfile.open(fileobj=out, mode="w|") as dest:
        for member in source:
            if member.type == tarfile.XGLTYPE:  # the pax header with the commit id
                continue
            member.uid = member.gid = SANDBOX_UID
            member.uname = member.gname = ""
            dest.addfile(member, source.extractfile(member) if member.isfile() else None)
            count += 1
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise GenesisError(f"git archive failed: {stderr.strip()}", code="git_error")
    return count


def list_files(repo: Path, commit: str) -> list[str]:
    return _git(repo, "ls-tree", "-r", "-z", "--name-only", commit).decode().split("\0")[:-1]


def read_blobs(repo: Path, commit: str, paths: Iterable[str]) -> dict[str, bytes]:
    """Contents of ``paths`` at ``commit`` in one ``cat-file --batch`` call."""
    paths = list(paths)
    if not paths:
        return {}
    request = "".join(f"{commit}:{p}\n" for p in paths).encode()
    raw = _git(repo, "cat-file", "--batch", input=request)
    out: dict[str, bytes] = {}
    offset = 0
    for path in paths:
        end = raw.index(b"\n", offset)
        header = raw[offset:end].split()
        offset = end + 1
        if len(header) == 3 and header[1] == b"blob":
            size = int(header[2])
            out[path] = raw[offset:offset + size]
            offset += size + 1
    return out


def modes(repo: Path, commit: str, paths: Iterable[str]) -> dict[str, str]:
    """Git file modes (``100644``, ``100755``, ``120000`` for a symlink) of ``paths`` at ``commit``."""
    paths = list(paths)
    if not paths:
        return {}
    out: dict[str, str] = {}
    for entry in _git(repo, "ls-tree", "-r", "-z", commit, "--", *paths).split(b"\0"):
        if entry:
            meta, _, path = entry.partition(b"\t")
            out[path.decode()] = meta.split()[0].decode()
    return out

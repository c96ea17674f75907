"""Reading what a sandbox leaves behind, the same way for every runtime.

Docker hands ``/genesis/out`` over as a tar stream; a Kubernetes pod's
runner prints it into the log as a base64 tar.gz between ``GENESIS-OUT``
markers. Both end up here, bounded: everything a sandbox writes is
untrusted and may be huge.
"""

from __future__ import annotations

import base64
import binascii
import io
import tarfile

OUT_MARKER = "GENESIS-OUT"  # the runner's (orchestrator/sandbox/runner.py)


MAX_OUT_ARCHIVE_BYTES = 256 * 2**20  # a change may fill /genesis/out; never hold more


def _bounded(stream, limit: int) -> tuple[bytes, bool]:
    chunks, size = [], 0
    for chunk in stream:
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[:limit], True
    return b"".join(chunks), False


def read_out_archive(stream, *, max_file_bytes: int, mode: str = "r|") -> tuple[dict[str, bytes], list[str]]:
    """Regular files of the /genesis/out tar, each capped at ``max_file_bytes``."""
    data, cut = _bounded(stream, MAX_OUT_ARCHIVE_BYTES)
    files: dict[str, bytes] = {}
    truncated: list[str] = ["(archive)"] if cut else []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode=mode) as tar:
            _read_members(tar, files, truncated, max_file_bytes)
    except tarfile.TarError:
        truncated.append("(unreadable tail)")
    return files, truncated


def _read_members(tar, files: dict[str, bytes], truncated: list[str], max_file_bytes: int) -> None:
    for member in tar:
        if not member.isfile():
            continue  # links and devices written by the change are ignored
        name = member.name.split("/", 1)[1] if "/" in member.name else member.name
        handle = tar.extractfile(member)
        data = handle.read(max_file_bytes + 1) if handle else b""
        if len(data) > max_file_bytes:
            truncated.append(name)
            data = data[:max_file_bytes]
        files[name] = data


def split_log(text: str) -> tuple[str, str | None]:
    """The log without the runner's GENESIS-OUT block, and the block's base64
    payload (the last complete block; ``None`` when there is none)."""
    kept: list[str] = []
    payload: str | None = None
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if bare.startswith(OUT_MARKER + "-BEGIN"):
            current = []
        elif bare == OUT_MARKER + "-END":
            if current is not None:
                payload, current = "".join(current), None
        elif current is not None and bare.startswith(OUT_MARKER + " "):
            current.append(bare[len(OUT_MARKER) + 1:])
        else:
            kept.append(line)
    return "".join(kept), payload


def files_from_log(text: str, *, max_file_bytes: int) -> tuple[dict[str, bytes], list[str], str]:
    """(files, truncated, log without the block) from a runner's log."""
    log, payload = split_log(text)
    if payload is None:
        return {}, [], log
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return {}, ["(unreadable out block)"], log
    files, truncated = read_out_archive(iter([data]), max_file_bytes=max_file_bytes, mode="r:gz")
    return files, truncated, log

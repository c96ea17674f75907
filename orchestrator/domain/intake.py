"""Intake checks that need no I/O: size, schema, paths, emptiness, resources,
and what the runtime can honour (its :class:`Capabilities`).

``parse_request`` turns raw bytes into an :class:`ExperimentRequest` or raises
:class:`RequestRejected` with a specific code. Repository and commit checks
need git and live in :mod:`orchestrator.snapshots.git`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from pydantic import ValidationError

from orchestrator.domain.capabilities import Capabilities
from orchestrator.domain.models import ExperimentRequest, Resources
from orchestrator.domain.paths import check_path, patch_paths
from orchestrator.errors import RequestRejected


@dataclass(frozen=True)
class IntakeLimits:
    """Upper bounds enforced before anything runs."""

    max_body_bytes: int = 4 * 2**20  # SPEC §2 default
    max_files: int = 1000
    max_cpu: float = 1.0
    max_memory_bytes: int = 2**30
    max_gpus: int = 0
    max_pids: int = 4096
    max_timeout_ms: int = 24 * 3_600_000
    default_disk: str | int | None = None  # a request's resources.disk when it gives none
    max_disk_bytes: int | None = None  # None: no bound
    # What the runtime can honour; the default promises nothing optional (no GPUs, no network).
    capabilities: Capabilities = Capabilities()


def as_bytes(body: bytes | str) -> bytes:
    """The body as bytes; a str that cannot be UTF-8 becomes bytes JSON will refuse."""
    if isinstance(body, bytes):
        return body
    return body.encode("utf-8", "backslashreplace")


def decode_body(body: bytes | str, limits: IntakeLimits) -> dict:
    """Bytes to a JSON object, refusing oversized and non-object bodies."""
    raw = as_bytes(body)
    if len(raw) > limits.max_body_bytes:
        raise RequestRejected(
            f"request body is {len(raw)} bytes; the limit is {limits.max_body_bytes}",
            code="body_too_large",
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, huge ints, deep nesting
        raise RequestRejected(f"request body is not valid JSON: {str(exc)[:200]}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise RequestRejected("request body must be a JSON object", code="invalid_request")
    return data


def parse_request(body: bytes | str | dict, limits: IntakeLimits) -> ExperimentRequest:
    """Validate a request body completely, short of repository look-ups."""
    data = body if isinstance(body, dict) else decode_body(body, limits)
    try:
        request = ExperimentRequest.model_validate(_with_default_disk(data, limits.default_disk))
    except ValidationError as exc:
        raise RequestRejected(_first_error(exc), code="invalid_request") from exc
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        # Validators are written to raise ValueError; anything else still
        # belongs to the client's body, never to a crash of intake.
        raise RequestRejected(f"request does not validate: {str(exc)[:200]}", code="invalid_request") from exc
    check_changes(request, limits)
    check_supported(request, limits.capabilities)
    check_resources(request.resources, request.timeout_ms, limits)
    return request


def _with_default_disk(data: dict, default: str | int | None) -> dict:
    """``data`` with ``resources.disk`` set to ``default`` where it gives none (a copy: the
    caller's dict is left alone). Before validation, since copying a validated request
    costs more than validating it."""
    resources = data.get("resources", {})
    if default is None or not isinstance(resources, dict) or resources.get("disk") is not None:
        return data
    return {**data, "resources": {**resources, "disk": default}}


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def check_changes(request: ExperimentRequest, limits: IntakeLimits) -> None:
    changes = request.changes
    if len(changes.files) > limits.max_files:
        raise RequestRejected(
            f"{len(changes.files)} files in changes; the limit is {limits.max_files}",
            code="too_many_files",
        )
    actionable = [f for f in changes.files if f.has_action]
    if not (changes.patch and changes.patch.strip()) and not actionable:
        raise RequestRejected(
            "changes has no patch and no file content or deletion: nothing to apply",
            code="empty_change",
        )
    bare = [f.path for f in changes.files if not f.has_action]
    if bare:
        raise RequestRejected(
            f"files without content, content_b64 or delete: {bare[:5]}", code="empty_change"
        )
    seen: set[str] = set()
    for change in changes.files:
        path = check_path(change.path)
        if path in seen:
            raise RequestRejected(f"path {path!r} appears twice in changes.files", code="invalid_path")
        seen.add(path)
        if change.content_b64 is not None:
            try:
                base64.b64decode(change.content_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RequestRejected(f"{path}: content_b64 is not base64", code="invalid_request") from exc
    if changes.patch:
        patch_paths(changes.patch)
    if request.validation is not None and request.validation.workdir != ".":
        check_path(request.validation.workdir)


def check_supported(request: ExperimentRequest, capabilities: Capabilities) -> None:
    """Refuse what the runtime cannot honour at all (before any count: "0 GPUs on this
    host" would hide that no number of GPUs could ever be given)."""
    problems = capabilities.refusals(network=request.network, gpus=request.resources.gpu)
    if problems:
        raise RequestRejected("not supported by this runtime: " + "; ".join(problems), code="unsupported_by_runtime")


def check_resources(resources: Resources, timeout_ms: int, limits: IntakeLimits) -> None:
    problems = []
    if resources.cpu > limits.max_cpu:
        problems.append(f"cpu {resources.cpu} > {limits.max_cpu} available")
    if resources.memory_bytes > limits.max_memory_bytes:
        problems.append(
            f"memory {resources.memory} > {limits.max_memory_bytes // 2**20}Mi available"
        )
    if resources.gpu > limits.max_gpus:
        problems.append(f"gpu {resources.gpu} > {limits.max_gpus} GPUs on this host")
    disk = resources.disk_bytes
    if disk is not None and limits.max_disk_bytes is not None and disk > limits.max_disk_bytes:
        problems.append(f"disk {resources.disk} > {limits.max_disk_bytes // 2**20}Mi allowed")
    if resources.pids > limits.max_pids:
        problems.append(f"pids {resources.pids} > {limits.max_pids}")
    elif (beyond_node := limits.capabilities.pids_refusal(resources.pids)) is not None:
        # A count, like cpu or GPUs past what there is: resources_exceeded, not unsupported_by_runtime.
        problems.append(beyond_node)
    if timeout_ms > limits.max_timeout_ms:
        problems.append(f"timeout_ms {timeout_ms} > {limits.max_timeout_ms}")
    if problems:
        raise RequestRejected("impossible resources: " + "; ".join(problems), code="resources_exceeded")

"""One exception root for everything Genesis raises on purpose.

Every error carries a stable machine ``code`` (it becomes ``error.code`` in
the outcome message) and a human message. Third-party exceptions (docker,
SQLAlchemy, git) are translated at the layer that calls them and chained
with ``raise ... from``, so nothing above ``runtimes/`` or ``store/`` sees
them.

    GenesisError
    ├── RequestRejected          the request cannot run as sent (intake)
    │     codes: invalid_request, invalid_json, body_too_large,
    │            too_many_files, invalid_path, empty_change,
    │            resources_exceeded, unknown_repo, unknown_commit, conflict,
    │            invalid_repo_config, dependency_change_refused,
    │            validation_override_refused, instance_mismatch, unsupported_by_runtime
    ├── NotFound                 no such experiment / sandbox / image
    ├── Unauthorized             no valid bearer token or session (unauthorized)
    ├── Forbidden                the token's role may not do that (forbidden,
    │                            csrf_failed), or it sent too many requests (rate_limited)
    ├── ImageBuildError          snapshot or toolchain image failed (build_failed)
    ├── RuntimeFailure           the sandbox runtime failed (runtime_error)
    │     └── SandboxGone        a sandbox vanished under us (sandbox_lost)
    ├── StoreError               the database failed (store_error)
    └── NotLeader                a controller acted under a lease it no longer
                                 holds (not_leader): the write was refused and
                                 the step stops; the current leader owns it

A run's own failures are not exceptions of this tree but outcomes the
pipeline records (``orchestrator/pipeline/passes.py``): cancelled, timeout,
oom_killed, disk_exceeded, patch_failed, baseline_failed, tampering_suspected,
evidence_inconsistent.
"""

from __future__ import annotations


class GenesisError(Exception):
    """Root of Genesis's own errors: a stable ``code`` and a message."""

    code = "internal"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class RequestRejected(GenesisError):
    """A request that is malformed, hostile or impossible; never retried."""

    code = "invalid_request"


class NotFound(GenesisError):
    code = "not_found"


class Unauthorized(GenesisError):
    """No credentials, or ones that are unknown, malformed or expired (HTTP 401)."""

    code = "unauthorized"


class Forbidden(GenesisError):
    """Valid credentials whose role does not allow the call (HTTP 403; 429 for ``rate_limited``)."""

    code = "forbidden"


class ImageBuildError(GenesisError):
    """An image could not be built; ``log`` is the build's output when there is one."""

    code = "build_failed"

    def __init__(self, message: str, *, code: str | None = None, log: str = "", tag: str | None = None) -> None:
        super().__init__(message, code=code)
        self.log = log
        self.tag = tag  # the image whose build failed


class RuntimeFailure(GenesisError):
    code = "runtime_error"


class SandboxGone(RuntimeFailure):
    code = "sandbox_lost"


class StoreError(GenesisError):
    """The database failed; ``transient`` when retrying may help (connection lost)."""

    code = "store_error"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class NotLeader(GenesisError):
    """A write or an effect decided under a lease this process no longer holds.

    Raised by the store when the fencing check in the write's own transaction
    fails, and by the fenced runtime before a call a former leader must not
    make. Never retried: the step that meets it stops, and the leader of the
    current generation re-drives the experiment."""

    code = "not_leader"

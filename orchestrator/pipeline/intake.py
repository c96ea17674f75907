"""Intake: turn a raw request into a recorded Pending experiment, or a
recorded rejection with a specific error code. Never raises on bad input
from the client; every path ends in a stored record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass

from orchestrator.domain.capabilities import Capabilities
from orchestrator.domain.environment import REPO_FILE, input_paths
from orchestrator.domain.intake import as_bytes, decode_body, parse_request
from orchestrator.domain.paths import touched_paths
from orchestrator.domain.models import ExperimentRequest
from orchestrator.domain.records import ExperimentView
from orchestrator.domain.subjects import valid_reply_subject
from orchestrator.errors import GenesisError, RequestRejected
from orchestrator.pipeline import lifecycle
from orchestrator.settings import RepoConfig, Settings
from orchestrator.snapshots import git, repofile
from orchestrator.store.repository import Store

log = logging.getLogger(__name__)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class IntakeResult:
    view: ExperimentView
    created: bool  # False for a duplicate of an existing request
    error: RequestRejected | None = None


def trace_id_from(traceparent: str | None) -> str:
    """The W3C trace id of ``traceparent``, or a fresh one."""
    if traceparent and (match := _TRACEPARENT.match(traceparent.strip().lower())):
        return match.group(1)
    return secrets.token_hex(16)


def _identity(data: object, raw: bytes, subject_instance: str | None) -> tuple[str, str, bool]:
    """Best-effort (experiment_id, instance_id, id_is_the_clients) of a request that did not parse."""
    exp = data.get("experiment_id") if isinstance(data, dict) else None
    inst = data.get("instance_id") if isinstance(data, dict) else None
    exp_id = exp if isinstance(exp, str) and _SAFE_ID.match(exp) else None
    inst_id = inst if isinstance(inst, str) and _SAFE_ID.match(inst) else (subject_instance or "unknown")
    if exp_id is not None:
        return exp_id, inst_id, True
    # No usable id: a stable one derived from the body, so a re-send of the
    # same bad request maps to the same record instead of a new one.
    return "rejected-" + hashlib.sha256(raw).hexdigest()[:24], inst_id, False


def dependency_changes(request: ExperimentRequest, repo: RepoConfig) -> list[str]:
    """The environment inputs a request's change touches, and ``.genesis.yaml``:
    an edit to it would choose the setup (with the build's secrets), validation
    and toolchain of every commit after it is merged."""
    touched = touched_paths(request.changes.patch, [f.path for f in request.changes.files])
    inputs = input_paths(touched, repo.environment.inputs) if repo.environment else []
    return sorted(set(inputs) | ({REPO_FILE} & set(touched)))


class Intake:
    def __init__(self, settings: Settings, store: Store, *, capabilities: Capabilities) -> None:
        """``capabilities``: the runtime's, so a request it cannot honour is refused here."""
        self._settings = settings
        self._store = store
        self._limits = settings.intake_limits(capabilities)

    def submit(self, body: bytes | str | dict, *, traceparent: str | None = None, actor: str = "intake",
               reply_to: str | None = None, subject_instance: str | None = None) -> IntakeResult:
        """Record ``body`` as an experiment or as a rejection; never raises on bad input.

        ``reply_to`` (the ``Genesis-Reply-To`` header) also receives the outcome;
        ``subject_instance`` is the instance id of the request subject (None
        where the request came another way): a body that names another
        instance is refused (``instance_mismatch``), so no agent submits, or
        receives replies, as another; a body that names none is recorded
        under it.
        """
        raw = json.dumps(body).encode() if isinstance(body, dict) else as_bytes(body)
        trace_id = trace_id_from(traceparent)
        reply_to = valid_reply_subject(reply_to)
        data: object = body if isinstance(body, dict) else None
        request: ExperimentRequest | None = None
        try:
            if data is None:
                data = decode_body(raw, self._limits)
            request = parse_request(data, self._limits)
            if subject_instance is not None and request.instance_id != subject_instance:
                raise RequestRejected(
                    f"the request names instance {request.instance_id!r} but was sent on the subject of "
                    f"{subject_instance or 'no valid instance'!r}: an agent submits as itself",
                    code="instance_mismatch")
            commit = self._resolve(request)
            self._check_environment(request, commit)
            view, created = self._store.submit(request, commit=commit, trace_id=trace_id, actor=actor,
                                               reply_to=reply_to)
            log.info("experiment accepted" if created else "duplicate request",
                     extra={"experiment_id": view.id, "instance_id": view.instance_id, "trace_id": trace_id})
            return IntakeResult(view=view, created=created)
        except RequestRejected as exc:
            return self._reject(exc, data=data, raw=raw, request=request, trace_id=trace_id, actor=actor,
                                reply_to=reply_to, subject_instance=subject_instance)

    def _resolve(self, request: ExperimentRequest) -> str:
        repo = self._settings.repos.get(request.repo)
        if repo is None:
            known = ", ".join(sorted(self._settings.repos)) or "none configured"
            raise RequestRejected(f"unknown repo {request.repo!r} (known: {known})", code="unknown_repo")
        try:
            return git.resolve_commit(repo.path, request.base_ref)
        except RequestRejected:
            raise
        except GenesisError as exc:
            raise RequestRejected(f"repo {request.repo!r} cannot be read: {exc}", code="unknown_repo") from exc

    def _check_environment(self, request: ExperimentRequest, commit: str) -> None:
        """The repository's configuration at ``commit`` must parse, and a change may
        edit its environment's inputs only where the repository allows it."""
        repo = repofile.effective(self._settings.repos[request.repo], commit)
        if not (self._settings.images_dir / f"toolchain-{repo.toolchain}" / "Dockerfile").is_file():
            raise RequestRejected(f"toolchain {repo.toolchain!r} of repository {request.repo!r} does not exist "
                                  f"(no images/toolchain-{repo.toolchain}/Dockerfile)", code="invalid_repo_config")
        if request.validation is not None and not repo.allow_validation_override:
            raise RequestRejected(
                f"repository {request.repo!r} owns its validation command; a request may not bring its own "
                f"(allow_validation_override: false), since a change that picks its command picks its verdict",
                code="validation_override_refused")
        changed = dependency_changes(request, repo)
        if changed and not repo.allow_dependency_changes:
            raise RequestRejected(
                f"the change edits environment inputs or {REPO_FILE} ({', '.join(changed[:5])}); repository "
                f"{request.repo!r} does not allow dependency changes (allow_dependency_changes: false)",
                code="dependency_change_refused")

    def _reject(self, exc: RequestRejected, *, data, raw: bytes, request, trace_id: str, actor: str,
                reply_to: str | None, subject_instance: str | None) -> IntakeResult:
        if exc.code == "instance_mismatch":
            # Recorded as the sender's, under an id of its own: a forged request must not
            # squat the experiment id (or instance) it names, which belong to another agent.
            exp_id, inst_id, usable = "rejected-" + hashlib.sha256(raw).hexdigest()[:24], subject_instance or "unknown", False
        elif request is not None:
            exp_id, inst_id, usable = request.experiment_id, request.instance_id, True
        else:
            exp_id, inst_id, usable = _identity(data, raw, subject_instance)
        log.warning("request rejected", extra={"experiment_id": exp_id, "instance_id": inst_id,
                                               "trace_id": trace_id, "code": exc.code})
        if exc.code == "conflict":
            self._store.record_conflict(experiment_id=exp_id, instance_id=inst_id, message=str(exc),
                                        body_sha256=hashlib.sha256(raw).hexdigest(), trace_id=trace_id,
                                        reply_to=reply_to, actor=actor)
            return IntakeResult(view=self._store.get(exp_id), created=False, error=exc)
        excerpt = raw[:4000].decode("utf-8", "replace")
        known = self._store.exists(exp_id)
        view = self._store.record_rejected(experiment_id=exp_id, instance_id=inst_id, code=exc.code,
                                           message=str(exc), raw_excerpt=excerpt, request=request,
                                           trace_id=trace_id, actor=actor, reply_to=reply_to, usable_id=usable)
        if not known:
            lifecycle.observe_finished(view)
        return IntakeResult(view=view, created=False, error=exc)

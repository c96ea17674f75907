"""Intake: turn a raw request into a recorded Pending experiment, or a
recorded rejection with a specific error code. Never raises on bad input
from the client; every path ends in a stored record.

Requests come one at a time (the API, the CLI) or as a batch (a NATS fetch):
a batch's valid requests are recorded in one transaction and its refs
resolved once, in the order they arrived (a rejection between two valid
requests is recorded between them), which is what lets one intake keep up
with thousands of requests a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
from dataclasses import dataclass, replace
from typing import Callable

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
from orchestrator.store.repository import Store, Submission

log = logging.getLogger(__name__)
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class IntakeResult:
    view: ExperimentView
    created: bool  # False for a duplicate of an existing request
    error: RequestRejected | None = None


@dataclass(frozen=True)
class Received:
    """One request as it arrived: its body and what the transport said about it.

    ``reply_to``: the ``Genesis-Reply-To`` header, which also receives the
    outcome. ``subject_instance``: the instance id of the request subject
    (None where the request came another way): a body that names another
    instance is refused (``instance_mismatch``), so no agent submits, or
    receives replies, as another; a body that names none is recorded under it.
    """

    body: bytes | str | dict
    traceparent: str | None = None
    actor: str = "intake"
    reply_to: str | None = None
    subject_instance: str | None = None


@dataclass(frozen=True)
class Recorded:
    """What became of one received request: the record it is (or was refused as)."""

    experiment_id: str
    created: bool
    error: RequestRejected | None = None


@dataclass(frozen=True)
class _Parsed:
    item: Received
    raw: bytes
    trace_id: str
    reply_to: str | None
    data: object
    request: ExperimentRequest | None = None
    commit: str | None = None
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
        # Told (from any thread) when new experiments were recorded: the controller's wake().
        self.notify: Callable[[], None] | None = None

    def submit(self, body: bytes | str | dict, *, traceparent: str | None = None, actor: str = "intake",
               reply_to: str | None = None, subject_instance: str | None = None) -> IntakeResult:
        """Record ``body`` as an experiment or as a rejection; never raises on bad input.
        The arguments are :class:`Received`'s."""
        (recorded,) = self.submit_many([Received(body, traceparent=traceparent, actor=actor, reply_to=reply_to,
                                                 subject_instance=subject_instance)])
        return IntakeResult(view=self._store.get(recorded.experiment_id), created=recorded.created,
                            error=recorded.error)

    def submit_many(self, batch: list[Received]) -> list[Recorded]:
        """Record each request of ``batch``, in order, as :meth:`submit` would; the valid
        ones between two rejections in one transaction. Raises only when the store
        fails: what it recorded before stays, and a redelivery of the batch finds those
        requests duplicates."""
        refs: dict[tuple[str, str], str | RequestRejected] = {}
        recorded: list[Recorded] = []
        valid: list[_Parsed] = []
        for item in batch:
            parsed = self._parse(item, refs)
            if parsed.error is None:
                valid.append(parsed)
                continue
            recorded += self._record(valid)
            valid = []
            recorded.append(self._reject(parsed.error, parsed))
        recorded += self._record(valid)
        if self.notify is not None and any(r.created and r.error is None for r in recorded):
            self.notify()
        return recorded

    def _parse(self, item: Received, refs: dict) -> _Parsed:
        """Decode, validate and resolve one request; its error instead where it fails."""
        body = item.body
        raw = json.dumps(body).encode() if isinstance(body, dict) else as_bytes(body)
        parsed = _Parsed(item=item, raw=raw, trace_id=trace_id_from(item.traceparent),
                         reply_to=valid_reply_subject(item.reply_to), data=body if isinstance(body, dict) else None)
        request = None
        try:
            data = parsed.data if parsed.data is not None else decode_body(raw, self._limits)
            parsed = replace(parsed, data=data)
            request = parse_request(data, self._limits)
            if item.subject_instance is not None and request.instance_id != item.subject_instance:
                raise RequestRejected(
                    f"the request names instance {request.instance_id!r} but was sent on the subject of "
                    f"{item.subject_instance or 'no valid instance'!r}: an agent submits as itself",
                    code="instance_mismatch")
            commit = self._resolve(request, refs)
            self._check_environment(request, commit)
            return replace(parsed, request=request, commit=commit)
        except RequestRejected as exc:
            return replace(parsed, request=request, error=exc)

    def _record(self, valid: list[_Parsed]) -> list[Recorded]:
        if not valid:
            return []
        outcomes = self._store.submit_many([
            Submission(p.request, commit=p.commit, trace_id=p.trace_id, actor=p.item.actor, reply_to=p.reply_to)
            for p in valid])
        recorded = []
        for parsed, outcome in zip(valid, outcomes):
            if isinstance(outcome, RequestRejected):
                recorded.append(self._reject(outcome, parsed))
                continue
            log.info("experiment accepted" if outcome else "duplicate request",
                     extra={"experiment_id": parsed.request.experiment_id,
                            "instance_id": parsed.request.instance_id, "trace_id": parsed.trace_id})
            recorded.append(Recorded(parsed.request.experiment_id, created=outcome))
        return recorded

    def _resolve(self, request: ExperimentRequest, refs: dict) -> str:
        """The commit of the request's base_ref, each (repo, ref) resolved once per batch."""
        key = (request.repo, request.base_ref)
        if key not in refs:
            try:
                refs[key] = self._resolve_ref(request)
            except RequestRejected as exc:
                refs[key] = exc
        if isinstance(refs[key], RequestRejected):
            raise refs[key]
        return refs[key]

    def _resolve_ref(self, request: ExperimentRequest) -> str:
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

    def _reject(self, exc: RequestRejected, parsed: _Parsed) -> Recorded:
        raw, request, trace_id, reply_to = parsed.raw, parsed.request, parsed.trace_id, parsed.reply_to
        actor, subject_instance = parsed.item.actor, parsed.item.subject_instance
        if exc.code == "instance_mismatch":
            # Recorded as the sender's, under an id of its own: a forged request must not
            # squat the experiment id (or instance) it names, which belong to another agent.
            exp_id, inst_id, usable = "rejected-" + hashlib.sha256(raw).hexdigest()[:24], subject_instance or "unknown", False
        elif request is not None:
            exp_id, inst_id, usable = request.experiment_id, request.instance_id, True
        else:
            exp_id, inst_id, usable = _identity(parsed.data, raw, subject_instance)
        log.warning("request rejected", extra={"experiment_id": exp_id, "instance_id": inst_id,
                                               "trace_id": trace_id, "code": exc.code})
        if exc.code == "conflict":
            self._store.record_conflict(experiment_id=exp_id, instance_id=inst_id, message=str(exc),
                                        body_sha256=hashlib.sha256(raw).hexdigest(), trace_id=trace_id,
                                        reply_to=reply_to, actor=actor)
            return Recorded(exp_id, created=False, error=exc)
        excerpt = raw[:4000].decode("utf-8", "replace")
        known = self._store.exists(exp_id)
        view = self._store.record_rejected(experiment_id=exp_id, instance_id=inst_id, code=exc.code,
                                           message=str(exc), raw_excerpt=excerpt, request=request,
                                           trace_id=trace_id, actor=actor, reply_to=reply_to, usable_id=usable)
        if not known:
            lifecycle.observe_finished(view)
        return Recorded(view.id, created=False, error=exc)

"""Genesis's objects as the API serves them and ``get -o json|yaml`` prints them:
Kubernetes-style (``apiVersion``, ``kind``, ``metadata``, ``spec``/``status``),
listings always a ``List``.

Pure functions. :func:`experiment` and :func:`view_of` are inverses (a
property test holds them to it), so the remote CLI prints from an API
object exactly what the local CLI prints from the record.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from orchestrator.domain.models import Condition, ExperimentRequest, Outcome, Phase, Recommendation
from orchestrator.domain.queries import LABEL_KEYS
from orchestrator.domain.records import ExperimentView, HistoryEntry

# The objects' schema version: v1 changes only by adding fields; a field that changes
# meaning or goes away makes v2 (outcome messages carry theirs as ``schema_version``).
API_VERSION = "genesis.dev/v1"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def labels_of(view: ExperimentView) -> dict[str, str]:
    """The labels ``-l`` selects on (:data:`~orchestrator.domain.queries.LABEL_KEYS`), in that order."""
    values = view.model_dump(mode="json", include=set(LABEL_KEYS))
    return {key: values[key] for key in LABEL_KEYS}


def experiment(view: ExperimentView) -> dict:
    """The experiment as a Kubernetes-style object."""
    outcome = view.outcome.model_dump(mode="json", exclude_none=True) if view.outcome else None
    return {
        "apiVersion": API_VERSION, "kind": "Experiment",
        "metadata": {"name": view.id, "labels": labels_of(view), "creationTimestamp": view.created_at.isoformat()},
        "spec": view.spec.model_dump(mode="json", exclude_none=True) if view.spec else {"rawExcerpt": view.raw_excerpt},
        "status": {
            "phase": view.phase.value, "reason": view.reason, "message": view.message, "commit": view.commit,
            "attempt": view.attempt, "priority": view.priority,
            "recommendation": view.recommendation.value if view.recommendation else None,
            "cancelRequested": view.cancel_requested, "traceId": view.trace_id, "sandbox": view.sandbox_name,
            "sandboxUid": view.sandbox_uid, "image": view.image, "baselineImage": view.baseline_image,
            "baselineKey": view.baseline_key, "preservedUntil": _iso(view.preserved_until),
            "updatedAt": view.updated_at.isoformat(), "startedAt": _iso(view.started_at),
            "finishedAt": _iso(view.finished_at), "deadlineAt": _iso(view.deadline_at),
            "notBefore": _iso(view.not_before), "killReason": view.kill_reason, "gpus": list(view.gpus),
            "conditions": [c.model_dump(mode="json") for c in view.conditions],
            "outcome": outcome,
        },
    }


def view_of(obj: dict) -> ExperimentView:
    """The record an :func:`experiment` object was made from."""
    meta, spec, status = obj["metadata"], obj["spec"], obj["status"]
    labels = meta["labels"]
    parsed = ExperimentRequest.model_validate(spec) if "rawExcerpt" not in spec else None
    return ExperimentView(
        id=meta["name"], instance_id=labels["instance_id"], experiment_type=labels["experiment_type"],
        risk_level=labels["risk_level"], repo=labels["repo"], commit=status["commit"],
        phase=Phase(status["phase"]), reason=status["reason"], message=status["message"], spec=parsed,
        raw_excerpt=spec.get("rawExcerpt"),
        conditions=[Condition.model_validate(c) for c in status["conditions"]],
        recommendation=Recommendation(status["recommendation"]) if status["recommendation"] else None,
        priority=status["priority"], attempt=status["attempt"], cancel_requested=status["cancelRequested"],
        trace_id=status["traceId"], sandbox_name=status["sandbox"], sandbox_uid=status["sandboxUid"],
        image=status["image"], baseline_image=status["baselineImage"], baseline_key=status["baselineKey"],
        preserved_until=_when(status["preservedUntil"]),
        outcome=Outcome.model_validate(status["outcome"]) if status["outcome"] else None,
        created_at=datetime.fromisoformat(meta["creationTimestamp"]), updated_at=_when(status["updatedAt"]),
        started_at=_when(status["startedAt"]), finished_at=_when(status["finishedAt"]),
        deadline_at=_when(status["deadlineAt"]), not_before=_when(status["notBefore"]),
        kill_reason=status["killReason"], gpus=tuple(status["gpus"]),
    )


def audit_entry(entry: HistoryEntry) -> dict:
    """One line of an experiment's audit trail."""
    return {"apiVersion": API_VERSION, "kind": "AuditEntry", **entry.model_dump(mode="json")}


def history_of(obj: dict) -> HistoryEntry:
    return HistoryEntry.model_validate({k: v for k, v in obj.items() if k not in ("apiVersion", "kind")})


def as_list(items: Iterable[Any], *, continue_token: str | None = None) -> dict:
    """Any listing: always a List, even of one item (as kubectl); ``metadata.continue`` when more remain."""
    return {"apiVersion": API_VERSION, "kind": "List", "items": list(items),
            "metadata": {"continue": continue_token} if continue_token else {}}


def sandbox(state: Any) -> dict:
    """A runtime's sandbox (``SandboxState``) as ``get sandboxes -o json`` prints it."""
    return {"apiVersion": API_VERSION, "kind": "Sandbox", "name": state.name, "uid": state.uid,
            "status": getattr(state.status, "value", state.status), "exitCode": state.exit_code,
            "oomKilled": state.oom_killed, "labels": dict(state.labels), "image": state.image,
            "startedAt": _iso(state.started_at)}


def pool(row: Any) -> dict:
    """One warm pool (``PoolRow``) as ``get pools -o json`` prints it."""
    return {"apiVersion": API_VERSION, "kind": "Pool", "name": row.pool, "image": row.image,
            "ready": {"hot": row.hot, "warm": row.warm},
            "claimedLastHour": {"hot": row.claimed_hot, "warm": row.claimed_warm},
            "lastClaim": _iso(row.last_claim)}


def usage(sample: Any) -> dict:
    """One cgroup sample of a sandbox (``SandboxUsage``)."""
    return {"cpuSeconds": sample.cpu_seconds, "memoryWorkingSetBytes": sample.memory_working_set_bytes,
            "memoryLimitBytes": sample.memory_limit_bytes, "pids": sample.pids}


def image(row: Any) -> dict:
    """One of Genesis's images (``ImageRow``) as ``get images -o json`` prints it."""
    return {"apiVersion": API_VERSION, "kind": "Image", "tier": row.tier, "tag": row.tag, "repo": row.repo,
            "size_bytes": row.size_bytes, "created": _iso(row.created), "last_used": _iso(row.last_used),
            "uses": row.uses, "in_use": row.in_use, "pinned": row.pinned}


def report(report: Any) -> dict:
    """A stored report (``schedule.Report``); its name is ``<kind>-<period>``."""
    return {"apiVersion": API_VERSION, "kind": "Report",
            "metadata": {"name": f"{report.kind}-{report.period}",
                         "labels": {"kind": report.kind, "period": report.period},
                         "creationTimestamp": report.created_at.isoformat()},
            "body": report.body}

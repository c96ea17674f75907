"""Lifecycle steps shared by the controller and the executor: removing
an experiment's sandboxes (rollback) and finalizing an experiment as Failed.
One implementation each, so every path audits and records the same way."""

from __future__ import annotations

import time

from orchestrator.domain.models import ErrorInfo, Outcome, Phase, Recommendation, SandboxInfo
from orchestrator.domain.records import ExperimentView
from orchestrator.runtimes.base import LABEL_EXPERIMENT, MANAGED_BY, MANAGED_BY_VALUE, Runtime
from orchestrator.store.aio import AsyncStore
from orchestrator.store.repository import utcnow
from orchestrator.telemetry import metrics


async def remove_sandbox(runtime: Runtime, store: AsyncStore, *, experiment_id: str | None, name: str,
                         uid: str | None, actor: str, reason: str, unpreserve: bool = False) -> float | None:
    """Delete one sandbox, the object with ``uid`` (never a later one of the same
    name), and audit it with its duration; ``None`` if it was already gone.
    ``unpreserve``: it was kept for review, and its record's marker is cleared with
    the audit (or alone, when the sandbox was already gone)."""
    started = time.monotonic()
    if not await runtime.remove(name, uid=uid):
        if unpreserve and experiment_id:
            await store.set_preserved_until(experiment_id, None)
        return None
    elapsed_ms = (time.monotonic() - started) * 1000
    metrics.observe_phase("teardown", elapsed_ms / 1000)
    await store.audit(experiment_id=experiment_id, sandbox_name=name, action="deleted", actor=actor, reason=reason,
                      duration_ms=elapsed_ms, unpreserve=unpreserve and experiment_id is not None)
    return elapsed_ms


async def remove_sandboxes(runtime: Runtime, store: AsyncStore, experiment_id: str, *, actor: str, reason: str) -> int:
    """Delete every sandbox of ``experiment_id``: those labelled with it and the pooled
    ones it claimed (their labels predate the claim); returns how many."""
    removed = 0
    labelled = [(s.name, s.uid) for s in await runtime.list({MANAGED_BY: MANAGED_BY_VALUE,
                                                              LABEL_EXPERIMENT: experiment_id})]
    for name, uid in labelled + await store.claimed_by(experiment_id):
        if await remove_sandbox(runtime, store, experiment_id=experiment_id, name=name, uid=uid,
                                actor=actor, reason=reason) is not None:
            removed += 1
    return removed


async def fail(store: AsyncStore, view: ExperimentView, *, code: str, message: str, actor: str,
         runtime_name: str, sandbox_runtime: str | None = None) -> ExperimentView:
    """Finalize as Failed with ``code``; a no-op on an experiment already finished."""
    if view.phase.finished:
        return view
    outcome = Outcome(
        experiment_id=view.id, instance_id=view.instance_id, status="failed",
        recommendation=Recommendation.ROLLBACK, error=ErrorInfo(code=code, message=message),
        trace_id=view.trace_id, timestamp=utcnow(),
        sandbox=SandboxInfo(runtime=runtime_name, image=view.image or "", name=view.sandbox_name,
                            sandbox_runtime=sandbox_runtime),
    )
    final = await store.finalize(outcome, phase=Phase.FAILED, reason=code, message=message, actor=actor)
    observe_finished(final)
    return final


def observe_finished(view: ExperimentView) -> None:
    """Count one finished experiment (Prometheus); called once, where it finished."""
    if view.outcome is None:
        return
    duration = (view.finished_at - view.created_at).total_seconds() if view.finished_at else None
    metrics.observe_finished(status=view.outcome.status, recommendation=view.outcome.recommendation.value,
                             reason=view.outcome.error.code if view.outcome.error else None,
                             experiment_type=view.experiment_type, risk_level=view.risk_level,
                             duration_s=duration)

"""``genesis delete experiment ID``: cancel it and roll it back.

Pending: finalized as cancelled at once. In flight: marked cancelled and
its sandbox killed; the worker removes it and finalizes the experiment (the
worker owns the sandbox while it runs, so the CLI never deletes it under it). Finished and preserved: the
preserved sandbox is deleted. The record itself is kept (it is the audit).
"""

from __future__ import annotations

import asyncio
import time

from orchestrator.domain.models import ErrorInfo, Outcome, Phase, Recommendation
from orchestrator.runtimes.base import LABEL_EXPERIMENT, MANAGED_BY, MANAGED_BY_VALUE
from orchestrator.store.repository import utcnow


def register(sub) -> None:
    p = sub.add_parser("delete", help="cancel an experiment and roll its sandbox back")
    p.add_argument("kind", choices=["experiment", "experiments", "exp"])
    p.add_argument("name")
    p.set_defaults(run=run)


async def _kill_sandboxes(app, experiment_id: str) -> int:
    """Stop a running experiment's sandboxes; the worker tears them down and
    finalizes the experiment as cancelled."""
    states = await app.runtime.list({MANAGED_BY: MANAGED_BY_VALUE, LABEL_EXPERIMENT: experiment_id})
    for state in states:
        await app.runtime.kill(state.name)
        app.store.audit(experiment_id=experiment_id, sandbox_name=state.name, action="stopped", actor="cli",
                        reason="killed: cancelled by genesis delete")
    return len(states)


async def _remove_sandboxes(app, experiment_id: str) -> int:
    removed = 0
    for state in await app.runtime.list({MANAGED_BY: MANAGED_BY_VALUE, LABEL_EXPERIMENT: experiment_id}):
        started = time.monotonic()
        if await app.runtime.remove(state.name):
            removed += 1
            app.store.audit(experiment_id=experiment_id, sandbox_name=state.name, action="deleted", actor="cli",
                            reason="rollback: genesis delete", duration_ms=(time.monotonic() - started) * 1000)
    return removed


def run(app, args) -> int:
    view = app.store.request_cancel(args.name)
    if view.phase is Phase.PENDING:
        outcome = Outcome(experiment_id=view.id, instance_id=view.instance_id, status="failed",
                          recommendation=Recommendation.ROLLBACK, trace_id=view.trace_id, timestamp=utcnow(),
                          error=ErrorInfo(code="cancelled", message="cancelled by genesis delete"))
        app.store.finalize(outcome, phase=Phase.FAILED, reason="cancelled", message="cancelled by genesis delete",
                           actor="cli")
    if view.phase.finished or view.phase is Phase.PENDING:
        removed = asyncio.run(_remove_sandboxes(app, view.id))
        app.store.set_preserved_until(view.id, None)
        print(f'experiment "{view.id}" deleted' + (f" ({removed} sandbox removed)" if removed else ""))
    else:
        killed = asyncio.run(_kill_sandboxes(app, view.id))
        print(f'experiment "{view.id}" deleted (cancelling: {killed} sandbox stopped, rolled back by the worker)')
    return 0

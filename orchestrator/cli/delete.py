"""``genesis delete experiment ID``: cancel it and roll it back.

Pending: finalized as cancelled at once. In flight: marked cancelled and
its sandbox killed; the worker removes it and finalizes the experiment (the
worker owns the sandbox while it runs, so the CLI never deletes it under it). Finished and preserved: the
preserved sandbox is deleted. The record itself is kept (it is the audit).
"""

from __future__ import annotations

import asyncio

from orchestrator.domain.models import Phase
from orchestrator.pipeline import lifecycle
from orchestrator.runtimes.base import LABEL_EXPERIMENT, MANAGED_BY, MANAGED_BY_VALUE
from orchestrator.store.aio import AsyncStore


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


def run(app, args) -> int:
    view = app.store.request_cancel(args.name)
    store = AsyncStore(app.store)
    if view.phase is Phase.PENDING:
        asyncio.run(lifecycle.fail(store, view, code="cancelled", message="cancelled by genesis delete",
                                   actor="cli", runtime_name=app.runtime.name))
    if view.phase.finished or view.phase is Phase.PENDING:
        removed = asyncio.run(lifecycle.remove_sandboxes(app.runtime, store, view.id, actor="cli",
                                                         reason="rollback: genesis delete"))
        app.store.set_preserved_until(view.id, None)
        print(f'experiment "{view.id}" deleted' + (f" ({removed} sandbox removed)" if removed else ""))
    else:
        killed = asyncio.run(_kill_sandboxes(app, view.id))
        print(f'experiment "{view.id}" deleted (cancelling: {killed} sandbox stopped, rolled back by the worker)')
    return 0

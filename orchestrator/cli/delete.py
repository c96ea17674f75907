"""``genesis delete experiment ID [--wait]``: ask for it to be cancelled and rolled back.

Intent only: the verb records ``cancel_requested`` on the experiment and says
what the controller will do about it; the controller's planner decides and
acts (docs/controller.md), as it does for every other change of state. One
flag means both "cancel" and "release":

- Pending, or Building while it waits for its baseline: finalized Failed ``cancelled``;
- in flight: its sandbox killed, then collected as Failed ``cancelled`` and removed;
- finished with a preserved sandbox: the sandbox removed, the record kept
  (it is the audit), no longer preserved;
- finished otherwise: nothing is left to roll back.

``--wait`` polls the record until the controller has acted (finished, nothing
preserved), so it needs ``genesis serve`` running somewhere.
"""

from __future__ import annotations

import asyncio
import time

from orchestrator.domain.models import Phase
from orchestrator.domain.records import ExperimentView
from orchestrator.errors import GenesisError

WAIT_POLL_S = 0.5  # a record read per poll: cheap, and well under a controller pass


def register(sub) -> None:
    p = sub.add_parser("delete", help="cancel an experiment and roll its sandbox back")
    p.add_argument("kind", choices=["experiment", "experiments", "exp"])
    p.add_argument("name")
    p.add_argument("--wait", action="store_true", help="wait until the controller has cancelled and rolled back")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds --wait waits (default 300)")
    p.set_defaults(run=run)


def intent(view: ExperimentView) -> str:
    """What the controller will do with a delete of ``view``, in a few words."""
    if view.phase is Phase.PENDING:
        return "cancelling: the controller fails it as cancelled"
    if not view.phase.finished:
        return "cancelling: the controller stops its sandbox, fails it as cancelled and rolls it back"
    if view.preserved_until is not None:
        return "releasing: the controller removes its preserved sandbox"
    return f"already {view.phase.value}, nothing to roll back"


def acted(view: ExperimentView) -> bool:
    """The controller is done with it: finished, and no sandbox kept."""
    return view.phase.finished and view.preserved_until is None


async def run(backend, args) -> int:
    view = await backend.cancel(args.name, actor="cli")
    print(f'experiment "{view.id}" deleted ({intent(view)})')
    if not args.wait:
        return 0
    deadline = time.monotonic() + args.timeout
    while not acted(view):
        if time.monotonic() >= deadline:
            raise GenesisError(f'experiment "{view.id}" is still {view.phase.value} after {args.timeout:g}s '
                               f"(is `genesis serve` running?)", code="timeout")
        await asyncio.sleep(WAIT_POLL_S)
        view = await backend.get(view.id)
    reason = f" ({view.reason})" if view.phase is Phase.FAILED and view.reason else ""
    print(f'experiment "{view.id}" {view.phase.value}{reason}, no sandbox kept')
    return 0

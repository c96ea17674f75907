"""``genesis describe experiment ID``: spec, conditions, metrics beside the
baseline, recommendation and the audit trail; where the runtime reports
platform events (Kubernetes: the API server's about its pod) also those,
which say why it waits: FailedScheduling, image pulls."""

from __future__ import annotations

from orchestrator.cli import printers
from orchestrator.errors import GenesisError


def register(sub) -> None:
    p = sub.add_parser("describe", help="show one experiment in detail")
    p.add_argument("kind", choices=["experiment", "experiments", "exp"])
    p.add_argument("name")
    p.set_defaults(run=run)


async def run(backend, args) -> int:
    if not args.name:
        raise GenesisError("describe needs an experiment id", code="bad_input")
    view = await backend.get(args.name)
    print(printers.describe(view, await backend.audit(view.id)))
    try:
        events = await backend.events(view.id)  # none where the runtime keeps no platform events
    except GenesisError as exc:
        events = [f"(events unavailable: {exc})"]
    if events:
        print("Events:")
        print("\n".join(f"  {line}" for line in events))
    return 0

"""``genesis describe experiment ID``: spec, conditions, metrics beside the
baseline, recommendation and the audit trail."""

from __future__ import annotations

from orchestrator.cli import printers
from orchestrator.errors import GenesisError


def register(sub) -> None:
    p = sub.add_parser("describe", help="show one experiment in detail")
    p.add_argument("kind", choices=["experiment", "experiments", "exp"])
    p.add_argument("name")
    p.set_defaults(run=run)


def run(app, args) -> int:
    if not args.name:
        raise GenesisError("describe needs an experiment id", code="bad_input")
    view = app.store.get(args.name)
    print(printers.describe(view, app.store.history(view.id)))
    return 0

"""``genesis get experiments|sandboxes|images|reports``.

Experiments are selected, ordered and paged in the database (``-l``,
``--field-selector``, ``--limit``, ``--continue``; see
:mod:`orchestrator.domain.queries`): this verb parses the flags, asks the
store for one page and prints it. It never filters records itself, so
nothing is lost behind a page it did not read.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime

import yaml

from orchestrator.cli import printers, reports
from orchestrator.domain import resources
from orchestrator.domain.queries import FIELDS, LABEL_KEYS, Page, parse_fields, parse_labels
from orchestrator.domain.records import ExperimentView
from orchestrator.errors import GenesisError
from orchestrator.runtimes.base import LABEL_EXPERIMENT, LABEL_ROLE

KINDS = {"experiments": "experiments", "experiment": "experiments", "exp": "experiments",
         "sandboxes": "sandboxes", "sandbox": "sandboxes", "sb": "sandboxes",
         "images": "images", "image": "images", "reports": "reports", "report": "reports"}
WATCH_INTERVAL_S = 1.0  # one query a second: a change shows within a second, at a steady small cost


def register(sub) -> None:
    p = sub.add_parser("get", help="list experiments, sandboxes, images or reports")
    p.add_argument("kind", help="experiments | sandboxes | images | reports")
    p.add_argument("name", nargs="?", help="one experiment id")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml", "name"])
    p.add_argument("-l", "--selector", help="label selector: k=v, k==v, k!=v, k in (a,b), k notin (a,b), "
                                            f"comma-separated; labels: {', '.join(LABEL_KEYS)}")
    p.add_argument("--field-selector", help=f"field selector: f=v, f==v, f!=v; fields: {', '.join(FIELDS)}")
    p.add_argument("--limit", type=int, help="at most N experiments, newest first; a continue token follows "
                                             "when more remain (default: all)")
    p.add_argument("--continue", dest="continue_token", metavar="TOKEN",
                   help="resume after the page that printed TOKEN (same selectors)")
    p.add_argument("-w", "--watch", action="store_true", help="keep printing changes")
    p.set_defaults(run=run)


def select(app, args) -> Page:
    """The page the flags ask for: one named experiment, or a listing run in SQL."""
    if args.name:
        if args.selector or args.field_selector or args.limit is not None or args.continue_token:
            raise GenesisError("a name cannot be combined with -l, --field-selector, --limit or --continue",
                               code="bad_input")
        return Page(items=(app.store.get(args.name),))
    where = parse_labels(args.selector) + parse_fields(args.field_selector)
    return app.store.page(where, limit=args.limit, continue_token=args.continue_token)


def run(app, args) -> int:
    kind = KINDS.get(args.kind)
    if kind is None:
        raise GenesisError(f'the server doesn\'t have a resource type "{args.kind}"', code="bad_input")
    if kind == "sandboxes":
        return _sandboxes(app, args)
    if kind == "images":
        return _images(app, args)
    if kind == "reports":
        return reports.get(app, args)
    page = select(app, args)
    if args.name:
        print(printers.experiment(page.items[0], args.output))
    else:
        print(printers.experiments(page.items, args.output, continue_token=page.continue_token))
        if page.continue_token and args.output not in ("json", "yaml"):
            # json|yaml carry it as metadata.continue; a table or names would hide it.
            print(f"more experiments remain: add --continue {page.continue_token}", file=sys.stderr)
    if args.watch:
        _watch(app, args, page.items)
    return 0


def changed(seen: Mapping[str, datetime], views: Sequence[ExperimentView]) -> list[ExperimentView]:
    """The views not yet printed at their current ``updated_at`` (``seen``), oldest first."""
    return [v for v in reversed(views) if seen.get(v.id) != v.updated_at]


def _watch(app, args, views) -> None:
    """Poll the same selection; print each experiment again when it changes (one row, or one object)."""
    seen = {v.id: v.updated_at for v in views}
    while True:
        time.sleep(WATCH_INTERVAL_S)
        for view in changed(seen, select(app, args).items):
            seen[view.id] = view.updated_at
            if args.output in (None, "wide"):
                print(printers.experiments([view], args.output).splitlines()[-1], flush=True)
            else:
                print(printers.experiment(view, args.output), flush=True)


def _sandboxes(app, args) -> int:
    states = asyncio.run(app.runtime.list(app.settings.sandbox_selector()))
    if args.output in ("json", "yaml"):
        items = resources.as_list(resources.sandbox(s) for s in states)
        print(json.dumps(items, indent=2) if args.output == "json" else yaml.safe_dump(items, sort_keys=False))
        return 0
    if args.output == "name":
        print("\n".join(f"sandbox/{s.name}" for s in states))
        return 0
    rows = [[s.name, s.labels.get(LABEL_EXPERIMENT, ""), s.labels.get(LABEL_ROLE, ""), s.status,
             "" if s.exit_code is None else str(s.exit_code), printers.age(s.started_at)] for s in states]
    print(printers.table(rows, ["NAME", "EXPERIMENT", "ROLE", "STATUS", "EXIT", "AGE"]) if rows
          else "No resources found.")
    return 0


def _images(app, args) -> int:
    """Every image of Genesis's on the engine: tier, repo, size, last use, in use, pinned."""
    from orchestrator.snapshots.catalog import list_images
    from orchestrator.store.aio import AsyncStore

    images = asyncio.run(list_images(builder=app.snapshots, runtime=app.runtime, store=AsyncStore(app.store),
                                     sandbox_labels=app.settings.sandbox_selector()))
    if args.output in ("json", "yaml"):
        data = resources.as_list(resources.image(i) for i in images)
        print(json.dumps(data, indent=2) if args.output == "json" else yaml.safe_dump(data, sort_keys=False))
        return 0
    if args.output == "name":
        print("\n".join(f"image/{i.tag}" for i in images))
        return 0
    rows = [[i.tier, i.tag, i.repo or "-", f"{i.size_bytes / 2**20:.0f}Mi", printers.age(i.last_used),
             "yes" if i.in_use else "no", {True: "yes", False: "no", None: "-"}[i.pinned]]
            + ([str(i.uses), printers.age(i.created)] if args.output == "wide" else []) for i in images]
    headers = ["TIER", "IMAGE", "REPO", "SIZE", "LAST-USED", "IN-USE", "PINNED"]
    print(printers.table(rows, headers + (["USES", "AGE"] if args.output == "wide" else [])) if rows
          else "No resources found.")
    return 0

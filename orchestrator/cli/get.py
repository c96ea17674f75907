"""``genesis get experiments|sandboxes|pools|images|reports``.

Experiments are selected, ordered and paged in the database (``-l``,
``--field-selector``, ``--limit``, ``--continue``; see
:mod:`orchestrator.domain.queries`): this verb parses the flags, asks the
backend (local or remote) for one page and prints it. It never filters
records itself, so nothing is lost behind a page it did not read. ``-w``
then prints each change the backend's watch reports.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Callable

import yaml

from orchestrator.cli import printers, reports
from orchestrator.domain import resources
from orchestrator.domain.queries import FIELDS, LABEL_KEYS, Page, Requirement, parse_fields, parse_labels
from orchestrator.domain.records import ExperimentView
from orchestrator.errors import GenesisError
from orchestrator.runtimes.base import LABEL_EXPERIMENT, LABEL_ROLE

KINDS = {"experiments": "experiments", "experiment": "experiments", "exp": "experiments",
         "sandboxes": "sandboxes", "sandbox": "sandboxes", "sb": "sandboxes",
         "pools": "pools", "pool": "pools",
         "images": "images", "image": "images", "reports": "reports", "report": "reports"}


def register(sub) -> None:
    p = sub.add_parser("get", help="list experiments, sandboxes, pools, images or reports")
    p.add_argument("kind", help="experiments | sandboxes | pools | images | reports")
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


def where_of(args) -> tuple[Requirement, ...]:
    """The selection the flags ask for: one named experiment, or the selectors."""
    if args.name:
        if args.selector or args.field_selector or args.limit is not None or args.continue_token:
            raise GenesisError("a name cannot be combined with -l, --field-selector, --limit or --continue",
                               code="bad_input")
        return (Requirement(column="id", op="in", values=(args.name,)),)
    return parse_labels(args.selector) + parse_fields(args.field_selector)


async def select(backend, args, where: tuple[Requirement, ...]) -> Page:
    """One named experiment, or one page of the listing (selected and paged by the store)."""
    if args.name:
        return Page(items=(await backend.get(args.name),))
    return await backend.page(where, limit=args.limit, continue_token=args.continue_token)


async def run(backend, args) -> int:
    kind = KINDS.get(args.kind)
    if kind is None:
        raise GenesisError(f'the server doesn\'t have a resource type "{args.kind}"', code="bad_input")
    if kind == "sandboxes":
        return _sandboxes(await backend.sandboxes(), args)
    if kind == "pools":
        return _pools(await backend.pools(), args)
    if kind == "images":
        return _images(await backend.images(), args)
    if kind == "reports":
        return await reports.get(backend, args)
    where = where_of(args)
    if args.watch:
        await _watch(backend, args, where)
    else:
        _print_page(await select(backend, args, where), args)
    return 0


def _print_page(page: Page, args) -> None:
    if args.name:
        print(printers.experiment(page.items[0], args.output))
        return
    print(printers.experiments(page.items, args.output, continue_token=page.continue_token))
    if page.continue_token and args.output not in ("json", "yaml"):
        # json|yaml carry it as metadata.continue; a table or names would hide it.
        print(f"more experiments remain: add --continue {page.continue_token}", file=sys.stderr)


def newer(seen: Mapping[str, datetime], view: ExperimentView) -> bool:
    """Whether ``view`` is a state of its experiment not yet printed (``seen``: id -> ``updated_at``)."""
    return view.id not in seen or view.updated_at > seen[view.id]


async def _watch(backend, args, where: tuple[Requirement, ...]) -> None:
    """Print the selection, then each change of a matching experiment (one row, or one object)."""
    changes = backend.watch(where)
    # Subscribed before the listing is read, so no change falls between the two.
    pending = asyncio.ensure_future(anext(changes))
    try:
        page = await select(backend, args, where)
        _print_page(page, args)
        sys.stdout.flush()
        seen = {v.id: v.updated_at for v in page.items}
        while True:
            _kind, view = await pending
            pending = asyncio.ensure_future(anext(changes))
            if not newer(seen, view):
                continue
            seen[view.id] = view.updated_at
            if args.output in (None, "wide"):
                print(printers.experiments([view], args.output).splitlines()[-1], flush=True)
            else:
                print(printers.experiment(view, args.output), flush=True)
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        await changes.aclose()


def _listing(objects: list, args, *, kind: str, name: Callable, resource: Callable, headers: list[str],
             row: Callable) -> int:
    """One kind of object as ``get`` prints it: the API's list (json, yaml), ``kind/name``
    lines, or a table of ``row(object)`` under ``headers``."""
    if args.output in ("json", "yaml"):
        items = resources.as_list(resource(o) for o in objects)
        print(json.dumps(items, indent=2) if args.output == "json" else yaml.safe_dump(items, sort_keys=False))
        return 0
    if args.output == "name":
        print("\n".join(f"{kind}/{name(o)}" for o in objects))
        return 0
    rows = [row(o) for o in objects]
    print(printers.table(rows, headers) if rows else "No resources found.")
    return 0


def _sandboxes(states: list, args) -> int:
    return _listing(states, args, kind="sandbox", name=lambda s: s.name, resource=resources.sandbox,
                    headers=["NAME", "EXPERIMENT", "ROLE", "STATUS", "EXIT", "AGE"],
                    row=lambda s: [s.name, s.labels.get(LABEL_EXPERIMENT, ""), s.labels.get(LABEL_ROLE, ""), s.status,
                                   "" if s.exit_code is None else str(s.exit_code), printers.age(s.started_at)])


def _pools(rows: list, args) -> int:
    """The warm pools: ready sandboxes by tier, claims by tier over the last hour."""
    return _listing(rows, args, kind="pool", name=lambda r: r.pool, resource=resources.pool,
                    headers=["POOL", "IMAGE", "HOT", "WARM", "CLAIMED-HOT(1H)", "CLAIMED-WARM(1H)", "LAST-CLAIM"],
                    row=lambda r: [r.pool, r.image or "-", str(r.hot), str(r.warm), str(r.claimed_hot),
                                   str(r.claimed_warm), printers.age(r.last_claim)])


def _images(images: list, args) -> int:
    """Every image of Genesis's on the engine: tier, repo, size, last use, in use, pinned."""
    wide = args.output == "wide"
    return _listing(images, args, kind="image", name=lambda i: i.tag, resource=resources.image,
                    headers=["TIER", "IMAGE", "REPO", "SIZE", "LAST-USED", "IN-USE", "PINNED"]
                    + (["USES", "AGE"] if wide else []),
                    row=lambda i: [i.tier, i.tag, i.repo or "-", f"{i.size_bytes / 2**20:.0f}Mi",
                                   printers.age(i.last_used), "yes" if i.in_use else "no",
                                   {True: "yes", False: "no", None: "-"}[i.pinned]]
                    + ([str(i.uses), printers.age(i.created)] if wide else []))

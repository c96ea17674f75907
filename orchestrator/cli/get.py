"""``genesis get experiments|sandboxes|images|reports``."""

from __future__ import annotations

import asyncio
import json
import time

import yaml

from orchestrator.cli import printers, reports
from orchestrator.domain.models import Phase
from orchestrator.errors import GenesisError
from orchestrator.runtimes.base import LABEL_EXPERIMENT, LABEL_ROLE

KINDS = {"experiments": "experiments", "experiment": "experiments", "exp": "experiments",
         "sandboxes": "sandboxes", "sandbox": "sandboxes", "sb": "sandboxes",
         "images": "images", "image": "images", "reports": "reports", "report": "reports"}


def register(sub) -> None:
    p = sub.add_parser("get", help="list experiments, sandboxes, images or reports")
    p.add_argument("kind", help="experiments | sandboxes | images | reports")
    p.add_argument("name", nargs="?", help="one experiment id")
    p.add_argument("-o", "--output", choices=["wide", "json", "yaml", "name"])
    p.add_argument("-l", "--selector", help="label selector k=v[,k=v] (instance_id, experiment_type, "
                                            "risk_level, repo, phase)")
    p.add_argument("-w", "--watch", action="store_true", help="keep printing changes")
    p.set_defaults(run=run)


def parse_selector(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise GenesisError(f"invalid label selector {text!r}: want k=v[,k=v]", code="bad_input")
        out[key.strip()] = value.strip()
    return out


def select(app, args) -> list:
    selector = parse_selector(args.selector)
    if args.name:
        return [app.store.get(args.name)]
    phase = Phase(selector["phase"]) if selector.get("phase") in {p.value for p in Phase} else None
    views = app.store.list(phase=phase, instance_id=selector.get("instance_id"))
    return [v for v in views if all(printers.labels_of(v).get(k) == val for k, val in selector.items())]


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
    views = select(app, args)
    print(printers.experiments(views, args.output))
    if args.watch:
        _watch(app, args, views)
    return 0


def _watch(app, args, views) -> None:
    seen = {v.id: v.updated_at for v in views}
    while True:
        time.sleep(1)
        for view in reversed(select(app, args)):
            if seen.get(view.id) != view.updated_at:
                seen[view.id] = view.updated_at
                text = printers.experiments([view], args.output)
                print(text.splitlines()[-1] if args.output in (None, "wide") else text, flush=True)


def _sandboxes(app, args) -> int:
    states = asyncio.run(app.runtime.list(app.settings.sandbox_selector()))
    if args.output in ("json", "yaml"):
        items = [{"name": s.name, "status": s.status, "exitCode": s.exit_code, "oomKilled": s.oom_killed,
                  "labels": s.labels, "image": s.image} for s in states]
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

    images = asyncio.run(list_images(builder=app.snapshots, runtime=app.runtime, store=app.store,
                                     sandbox_labels=app.settings.sandbox_selector()))
    if args.output in ("json", "yaml"):
        data = json.loads(json.dumps([vars(i) for i in images], default=str))
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

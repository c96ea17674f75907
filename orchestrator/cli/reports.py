"""``genesis get reports``: what the scheduled jobs stored, one report per kind
(``analysis``, ``reporting``) and period, newest first.

``render`` is pure (reports to text, as kubectl prints: a table, or
``-o json|yaml|name``); ``get`` asks the backend. ``-l kind=analysis`` and
``-l period=2026-11-28`` select; a name (``analysis-2026-11-28``) picks one.
"""

from __future__ import annotations

import json
from datetime import datetime

import yaml

from orchestrator.cli import printers
from orchestrator.domain import resources
from orchestrator.domain.queries import parse_equalities
from orchestrator.domain.schedule import Report
from orchestrator.errors import GenesisError


def name_of(report: Report) -> str:
    return f"{report.kind}-{report.period}"


def _pct(value: float | None, *, signed: bool = False) -> str:
    return "-" if value is None else f"{value * 100:{'+' if signed else ''}.1f}%"


def summary(report: Report) -> str:
    """One line: the analysis's week (mean, change on the week before), the day's report totals."""
    body = report.body
    if report.kind == "analysis":
        week = (body.get("windows") or {}).get("7d", {}).get("overall", {})
        parts = [f"7d: {week.get('count', 0)} runs"]
        for name in ("success_rate", "regression", "llm_reduction"):
            figure = week.get(name) or {}
            if figure.get("mean") is not None:
                change = f" ({_pct(figure['change'], signed=True)})" if figure.get("change") is not None else ""
                parts.append(f"{name} {_pct(figure['mean'])}{change}")
        return ", ".join(parts)
    if report.kind == "reporting":
        return (f"{body.get('total', 0)} finished, {body.get('merged', 0)} merged, "
                f"success_rate {_pct(body.get('success_rate'))}")
    return ""


def render(reports: list[Report], output: str | None, *, now: datetime | None = None, named: bool = False) -> str:
    """A table, names, or ``-o json|yaml``: always a List, except one report asked for by name."""
    if output in ("json", "yaml"):
        items = [resources.report(r) for r in reports]
        data = items[0] if named and len(items) == 1 else resources.as_list(items)
        return json.dumps(data, indent=2) if output == "json" else yaml.safe_dump(data, sort_keys=False)
    if output == "name":
        return "\n".join(f"report/{name_of(r)}" for r in reports)
    if not reports:
        return "No resources found."
    rows = [[name_of(r), r.kind, r.period, printers.age(r.created_at, now), summary(r)] for r in reports]
    return printers.table(rows, ["NAME", "KIND", "PERIOD", "AGE", "SUMMARY"])


async def get(backend, args) -> int:
    if args.watch:
        raise GenesisError("reports cannot be watched: a new one comes once a day", code="bad_input")
    if args.name:  # "<kind>-<period>": kinds have no dash
        print(render([await backend.report(args.name)], args.output, named=True))
        return 0
    selector = parse_equalities(args.selector, {"kind", "period"})
    found = await backend.reports(kind=selector.get("kind"), period=selector.get("period"))
    print(render(found, args.output))
    return 0

"""Render experiments as kubectl does: tables, -o wide|json|yaml|name.

Pure functions from views to text; the verbs do the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone

import yaml

from orchestrator.domain import disk, resources
from orchestrator.domain.capabilities import pids_note
from orchestrator.domain.records import ExperimentView, HistoryEntry

def age(since: datetime | None, now: datetime | None = None) -> str:
    if since is None:
        return "<none>"
    seconds = int(((now or datetime.now(timezone.utc)) - since).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows)]
    lines = ["   ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def experiment(view: ExperimentView, output: str | None, *, now: datetime | None = None) -> str:
    """One experiment asked for by name: -o json|yaml is the bare object (kubectl's
    ``get pod NAME -o json``); the other outputs are a one-row listing."""
    if output == "json":
        return json.dumps(resources.experiment(view), indent=2)
    if output == "yaml":
        return yaml.safe_dump(resources.experiment(view), sort_keys=False)
    return experiments([view], output, now=now)


def experiments(views: Sequence[ExperimentView], output: str | None, *, continue_token: str | None = None,
                now: datetime | None = None) -> str:
    """A listing: -o json|yaml is always a List (even of one item or none), with
    ``metadata.continue`` when more remain; the table and names leave the token to the verb."""
    if output == "json":
        return json.dumps(_list(views, continue_token), indent=2)
    if output == "yaml":
        return yaml.safe_dump(_list(views, continue_token), sort_keys=False)
    if output == "name":
        return "\n".join(f"experiment/{v.id}" for v in views)
    if not views:
        return "No resources found."
    headers = ["NAME", "INSTANCE", "TYPE", "RISK", "PHASE", "RECOMMENDATION", "AGE"]
    wide = output == "wide"
    if wide:
        headers += ["REPO", "COMMIT", "ATTEMPT", "SUCCESS", "REGRESSION", "SANDBOX", "REASON"]
    rows = []
    for v in views:
        row = [v.id, v.instance_id, v.experiment_type, v.risk_level, v.phase.value,
               v.recommendation.value if v.recommendation else "<none>", age(v.created_at, now)]
        if wide:
            metrics = v.outcome.metrics if v.outcome else None
            row += [v.repo or "<none>", (v.commit or "")[:12] or "<none>", str(v.attempt),
                    _pct(metrics.success_rate if metrics else None), _pct(metrics.regression if metrics else None),
                    v.sandbox_name or "<none>", v.reason or ""]
        rows.append(row)
    return table(rows, headers)


def _list(views: Sequence[ExperimentView], continue_token: str | None) -> dict:
    return resources.as_list([resources.experiment(v) for v in views], continue_token=continue_token)


def _metric_rows(view: ExperimentView) -> list[list[str]]:
    outcome = view.outcome
    if outcome is None or outcome.metrics is None:
        return []
    m, b = outcome.metrics, outcome.baseline
    fmt = lambda x: "-" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))  # noqa: E731
    rows = [["success_rate", fmt(m.success_rate), fmt(b.success_rate if b else None)],
            ["test_count", fmt(m.test_count), fmt(b.test_count if b else None)],
            ["runtime_ms", fmt(m.runtime_ms), fmt(b.runtime_ms if b else None)]]
    for name in ("regression", "llm_reduction", "performance_delta", "failures", "errors", "skipped",
                 "memory_peak_mb", "cpu_usage_percent", "io_operations", "code_coverage_percent"):
        rows.append([name, fmt(getattr(m, name)), ""])
    rows += [[f"custom.{k}", fmt(v), ""] for k, v in m.custom.items()]
    return rows


def describe(view: ExperimentView, history: list[HistoryEntry], *, now: datetime | None = None) -> str:
    spec = view.spec
    out = [f"Name:            {view.id}", f"Instance:        {view.instance_id}",
           f"Type:            {view.experiment_type}", f"Risk:            {view.risk_level}",
           f"Repo:            {view.repo}@{(view.commit or '')[:12]}", f"Phase:           {view.phase.value}",
           f"Reason:          {view.reason or ''}", f"Message:         {view.message or ''}",
           f"Recommendation:  {view.recommendation.value if view.recommendation else '<none>'}",
           f"Attempt:         {view.attempt}", f"Trace ID:        {view.trace_id or ''}",
           f"Created:         {view.created_at.isoformat()}"]
    if spec is not None:
        changes = spec.changes
        patch_lines = len(changes.patch.splitlines()) if changes.patch else 0
        out += ["Spec:", f"  Description:   {spec.description}",
                f"  Changes:       patch {patch_lines} lines, {len(changes.files)} file(s)",
                f"  Resources:     cpu={spec.resources.cpu:g} memory={spec.resources.memory} "
                f"gpu={spec.resources.gpu} pids={spec.resources.pids}{_pids(spec.resources.pids, history)} "
                f"network={spec.network}"
                + _disk(spec.resources.disk, history),
                f"  Timeout:       {spec.timeout_ms} ms   Priority: {spec.priority}"]
    elif view.raw_excerpt:
        out += ["Request (as received, truncated):", "  " + view.raw_excerpt[:300].replace("\n", " ")]
    out += ["Sandbox:", f"  Name:          {view.sandbox_name or '<none>'}", f"  Image:         {view.image or '<none>'}",
            f"  Preserved:     {view.preserved_until.isoformat() if view.preserved_until else 'no'}"]
    if view.outcome and view.outcome.sandbox:
        ran = view.outcome.sandbox
        out.append(f"  Runtime:       {ran.runtime}" + (f" ({ran.sandbox_runtime})" if ran.sandbox_runtime else ""))
    if view.outcome and view.outcome.error:
        out += ["Error:", f"  Code:          {view.outcome.error.code}", f"  Message:       {view.outcome.error.message}"]
    out += ["Conditions:", _indent(table([[c.type, c.status, c.reason, c.message[:80]] for c in view.conditions],
                                         ["Type", "Status", "Reason", "Message"]))]
    metric_rows = _metric_rows(view)
    if metric_rows:
        out += ["Metrics:", _indent(table(metric_rows, ["Metric", "Experiment", "Baseline"]))]
    tests = view.outcome.tests if view.outcome else None
    if tests:
        out += [f"Tests:           {tests.get('passes', 1)} pass(es), {tests.get('reruns', 0)} rerun(s)"]
        out += [f"  {category}: {doc['count']}" + (f"  ({', '.join(doc['names'][:5])}"
                                                  f"{', …' if doc['count'] > 5 else ''})" if doc["names"] else "")
                for category, doc in tests.items() if isinstance(doc, dict) and doc.get("count")]
        if tests.get("protected_edited"):
            out += ["  protected edited: " + ", ".join(tests["protected_edited"])]
    events = [[age(h.at, now), h.action, h.actor, h.sandbox_name or "-",
               (h.reason + (f" ({h.duration_ms:.0f} ms)" if h.duration_ms is not None else ""))[:100]]
              for h in history]
    out += ["Events:", _indent(table(events, ["Age", "Action", "By", "Sandbox", "Reason"])) if events else "  <none>"]
    return "\n".join(out)


def _disk(value, history: list[HistoryEntry]) -> str:
    """`` disk=2Gi``, and whether the runtime enforced it, as its sandboxes' creation recorded."""
    if value is None:
        return ""
    created = [h.details for h in history if h.action == "created" and "disk_enforced" in h.details]
    last = created[-1] if created else {}
    return f" disk={value}" + disk.note(enforced=last.get("disk_enforced"), storage=last.get("disk_storage"))


def _pids(value: int, history: list[HistoryEntry]) -> str:
    """How ``pids=`` was enforced, as its sandboxes' creation recorded (nothing on Docker: exactly)."""
    created = [h.details for h in history if h.action == "created" and "pids_enforced" in h.details]
    last = created[-1] if created else {}
    return pids_note(model=last.get("pids_enforced"), node_limit=last.get("pids_node_limit"), requested=value)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())

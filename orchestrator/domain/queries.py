"""What a listing of experiments asks for: kubectl's label selectors (``-l``),
field selectors (``--field-selector``) and page tokens (``--continue``).

Pure: user text becomes :class:`Requirement` values over record columns, and
a page's last item becomes an opaque continue token and back. Nothing here
filters records: the store turns requirements into SQL
(:mod:`orchestrator.store.queries`), so a filter always runs before a limit
and no match is lost behind the first page. Every malformed input is a
``GenesisError(code="bad_input")`` that says what was expected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from orchestrator.domain.models import Phase, Recommendation
from orchestrator.domain.records import ExperimentView
from orchestrator.errors import GenesisError

# The labels an experiment carries (``metadata.labels`` in -o json), each a column of its own.
LABEL_KEYS = ("instance_id", "experiment_type", "risk_level", "repo", "phase")

# Field selectors, kubectl-style paths into the -o json object, and the column each reads.
FIELDS = {
    "metadata.name": "id",
    "status.phase": "phase",
    "status.recommendation": "recommendation",
    "spec.instance_id": "instance_id",
    "spec.experiment_type": "experiment_type",
    "spec.risk_level": "risk_level",
    "spec.repo": "repo",
}

# Columns whose values are a closed set: a typo ("running") is an error, not an empty answer.
_ENUMS = {"phase": Phase, "recommendation": Recommendation}

_VALUE = r"[^\s,()=!]*"
_EQUALITY = re.compile(rf"^\s*(?P<key>[A-Za-z0-9_.]+)\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})\s*$")
_SET = re.compile(r"^\s*(?P<key>[A-Za-z0-9_.]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$")
_LABEL_FORMS = "k=v, k==v, k!=v, k in (a,b) or k notin (a,b)"
_TOKEN_VERSION = 1


@dataclass(frozen=True)
class Requirement:
    """``column`` in (or not in) ``values``; every selector form reduces to this
    (``k=v`` is ``k in (v)``, ``k!=v`` is ``k notin (v)``)."""

    column: str
    op: Literal["in", "notin"]
    values: tuple[str, ...]


@dataclass(frozen=True)
class Cursor:
    """Where a page ended, in the listing order (newest first: created_at, then id, descending)."""

    created_at: datetime
    id: str


@dataclass(frozen=True)
class Page:
    """Experiments in listing order; ``continue_token`` is set when more remain after them."""

    items: tuple[ExperimentView, ...]
    continue_token: str | None = None


def parse_labels(text: str | None) -> tuple[Requirement, ...]:
    """``-l``: comma-separated requirements over :data:`LABEL_KEYS`."""
    out = []
    for term in _terms(text or ""):
        key, op, values = _requirement(term, set_forms=True)
        if key not in LABEL_KEYS:
            raise GenesisError(f"unknown label {key!r} in selector: labels are {', '.join(LABEL_KEYS)}",
                               code="bad_input")
        out.append(_checked(Requirement(column=key, op=op, values=values)))
    return tuple(out)


def parse_equalities(text: str | None, keys: set[str]) -> dict[str, str]:
    """A selector of plain ``k=v`` (or ``k==v``) over ``keys``, for the kinds
    that are few and selected whole (reports): ``{key: value}``."""
    out = {}
    for term in _terms(text or ""):
        key, op, values = _requirement(term, set_forms=False)
        if key not in keys or op != "in":
            raise GenesisError(f"invalid selector {term.strip()!r}: want k=v over {', '.join(sorted(keys))}",
                               code="bad_input")
        out[key] = values[0]
    return out


def parse_fields(text: str | None) -> tuple[Requirement, ...]:
    """``--field-selector``: comma-separated ``path=v``, ``path==v`` or ``path!=v`` over :data:`FIELDS`."""
    out = []
    for term in _terms(text or ""):
        key, op, values = _requirement(term, set_forms=False)
        if key not in FIELDS:
            raise GenesisError(f"unknown field {key!r} in field selector: fields are {', '.join(FIELDS)}",
                               code="bad_input")
        out.append(_checked(Requirement(column=FIELDS[key], op=op, values=values)))
    return tuple(out)


def encode_continue(cursor: Cursor, *, where: tuple[Requirement, ...]) -> str:
    """An opaque token resuming after ``cursor``, bound to the selectors it was issued for."""
    doc = {"v": _TOKEN_VERSION, "t": cursor.created_at.isoformat(), "id": cursor.id, "q": _fingerprint(where)}
    return base64.urlsafe_b64encode(json.dumps(doc, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_continue(token: str, *, where: tuple[Requirement, ...]) -> Cursor:
    """The cursor in ``token``; ``bad_input`` if it is not one of ours or was issued for other selectors."""
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        doc = json.loads(raw)
        cursor = Cursor(created_at=datetime.fromisoformat(doc["t"]), id=str(doc["id"]))
        version, fingerprint = doc["v"], doc["q"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        raise GenesisError(f"invalid continue token {token[:40]!r}: pass the token a previous page printed",
                           code="bad_input") from exc
    if version != _TOKEN_VERSION or cursor.created_at.tzinfo is None:
        raise GenesisError(f"invalid continue token {token[:40]!r}: not issued by this version of Genesis",
                           code="bad_input")
    if fingerprint != _fingerprint(where):
        raise GenesisError("the continue token was issued for different selectors: repeat the same -l and "
                           "--field-selector, or start again without --continue", code="bad_input")
    return cursor


def _terms(text: str) -> list[str]:
    """Split on the commas outside parentheses (``k in (a,b),j=c`` is two terms)."""
    if not text.strip():
        return []
    terms, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth not in (0, 1):
            raise GenesisError(f"unbalanced parentheses in selector {text!r}", code="bad_input")
        if char == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    if depth:
        raise GenesisError(f"unbalanced parentheses in selector {text!r}", code="bad_input")
    return terms + [text[start:]]


def _requirement(term: str, *, set_forms: bool) -> tuple[str, Literal["in", "notin"], tuple[str, ...]]:
    if match := _EQUALITY.match(term):
        return match["key"], "notin" if match["op"] == "!=" else "in", (match["value"],)
    if set_forms and (match := _SET.match(term)):
        values = tuple(v.strip() for v in match["values"].split(","))
        if all(re.fullmatch(_VALUE, v) and v for v in values):
            return match["key"], match["op"], values  # type: ignore[return-value]
    forms = _LABEL_FORMS if set_forms else "field=v, field==v or field!=v"
    raise GenesisError(f"unable to parse requirement {term.strip()!r}: want {forms}", code="bad_input")


def _checked(requirement: Requirement) -> Requirement:
    enum = _ENUMS.get(requirement.column)
    if enum is None:
        return requirement
    allowed = [member.value for member in enum]
    for value in requirement.values:
        if value not in allowed:
            raise GenesisError(f"unknown {requirement.column} {value!r}: one of {', '.join(allowed)}",
                               code="bad_input")
    return requirement


def _fingerprint(where: tuple[Requirement, ...]) -> str:
    """Same selectors in any order, same fingerprint; a token never resumes another query."""
    canonical = sorted([r.column, r.op, sorted(set(r.values))] for r in where)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:16]


def matches(where: tuple[Requirement, ...], view: ExperimentView) -> bool:
    """Whether ``view`` is one the listing of ``where`` would return (the API's watch
    filters each change with it); ``!=`` matches a record without the value, as in SQL."""
    for requirement in where:
        value = getattr(view, requirement.column)
        value = getattr(value, "value", value)
        inside = value is not None and str(value) in requirement.values
        if inside != (requirement.op == "in"):
            return False
    return True


def selectors_of(where: tuple[Requirement, ...]) -> tuple[str, str]:
    """``where`` written back as (label selector, field selector), so a client sends
    what it parsed; ``parse_labels`` and ``parse_fields`` of them give ``where`` again."""
    columns = {column: path for path, column in FIELDS.items()}
    labels, fields = [], []
    for r in where:
        if r.column in LABEL_KEYS:
            labels.append(f"{r.column} {r.op} ({','.join(r.values)})")
        else:
            fields.append(f"{columns[r.column]}{'=' if r.op == 'in' else '!='}{r.values[0]}")
    return ",".join(labels), ",".join(fields)

"""SQL for listings of experiments: selectors become WHERE clauses, pages are
keyset ranges over one stable order (created_at, then id, both descending).

Keyset rather than OFFSET: a page resumes strictly after the last item shown,
so records inserted between pages (always newer, so always before the
cursor) neither shift the later pages nor repeat an item. The id breaks ties
between records created in the same microsecond. Parsing selectors and
tokens is :mod:`orchestrator.domain.queries`; this module builds the
statements and runs them in the session the repository hands it.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import Session

from orchestrator.domain.queries import Cursor, Page, Requirement, decode_continue, encode_continue
from orchestrator.domain.records import ExperimentView
from orchestrator.errors import GenesisError
from orchestrator.store.base import _utc
from orchestrator.store.tables import ExperimentRow

__all__ = ["Page", "Requirement", "equal", "page"]

ORDER = (ExperimentRow.created_at.desc(), ExperimentRow.id.desc())


def equal(**columns: str | None) -> tuple[Requirement, ...]:
    """``column = value`` for each value given (``None`` asks for nothing)."""
    return tuple(Requirement(column=c, op="in", values=(v,)) for c, v in columns.items() if v is not None)


def page(session: Session, where: tuple[Requirement, ...], *, limit: int | None, continue_token: str | None,
         view: Callable[[ExperimentRow], ExperimentView]) -> Page:
    """One page: every match with ``limit=None``; otherwise one row more than asked
    is read, to tell whether a continue token (resuming strictly after the page's
    last item) is due. A token malformed or issued for other selectors is ``bad_input``."""
    if limit is not None and limit < 1:
        raise GenesisError(f"limit must be a positive number, not {limit}", code="bad_input")
    after = decode_continue(continue_token, where=where) if continue_token else None
    rows = session.scalars(listing(where, after=after, limit=None if limit is None else limit + 1))
    views = tuple(view(row) for row in rows)
    if limit is None or len(views) <= limit:
        return Page(items=views)
    views = views[:limit]
    last = Cursor(created_at=views[-1].created_at, id=views[-1].id)
    return Page(items=views, continue_token=encode_continue(last, where=where))


def listing(where: tuple[Requirement, ...], *, after: Cursor | None, limit: int | None) -> Select:
    """Experiments matching every requirement, newest first, after ``after``, at most ``limit``."""
    query = select(ExperimentRow).where(*[clause(r) for r in where]).order_by(*ORDER)
    if after is not None:
        query = query.where(resume_after(after))
    return query if limit is None else query.limit(limit)


def clause(requirement: Requirement) -> ColumnElement[bool]:
    """``in`` / ``notin`` on the column; ``notin`` also matches NULL, as kubectl's ``!=``
    matches an object without the label (``status.recommendation!=merge`` lists the unfinished)."""
    column = getattr(ExperimentRow, requirement.column)
    if requirement.op == "in":
        return column.in_(requirement.values)
    excluded = column.not_in(requirement.values)
    return or_(column.is_(None), excluded) if ExperimentRow.__table__.c[requirement.column].nullable else excluded


def resume_after(cursor: Cursor) -> ColumnElement[bool]:
    """Strictly after ``cursor`` in :data:`ORDER` (spelled out: row-value comparison varies by backend)."""
    created = _utc(cursor.created_at)
    return or_(ExperimentRow.created_at < created,
               and_(ExperimentRow.created_at == created, ExperimentRow.id < cursor.id))

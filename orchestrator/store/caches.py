"""Caches the pipeline keeps in the database: baselines per (repo, commit,
command, image) and the snapshot images in use (for LRU cleanup)."""

from __future__ import annotations

from sqlalchemy import select

from orchestrator.domain.records import CachedBaseline
from orchestrator.store.base import StoreBase, _aware, _columns, transient, utcnow
from orchestrator.store.tables import BaselineRow, SnapshotImageRow


class CachesMixin(StoreBase):
    def baseline(self, key: str) -> CachedBaseline | None:
        with self._tx() as session:
            row = session.get(BaselineRow, key)
            if row is None:
                return None
            return CachedBaseline(key=row.key, cases=row.cases, parse_errors=row.parse_errors or [],
                                  runtime_ms=row.runtime_ms, exit_code=row.exit_code, llm_count=row.llm_count,
                                  flaky=sorted(row.flaky or []), runtimes_ms=list(row.runtimes_ms or []),
                                  created_at=_aware(row.created_at))

    @transient
    def put_baseline(self, baseline: CachedBaseline, *, repo: str, commit: str, command: list[str],
                     image: str) -> None:
        with self._tx() as session:
            session.merge(BaselineRow(key=baseline.key, repo=repo, commit=commit, command=command, image=image,
                                      cases=baseline.cases, parse_errors=baseline.parse_errors,
                                      runtime_ms=baseline.runtime_ms, exit_code=baseline.exit_code,
                                      llm_count=baseline.llm_count, flaky=sorted(baseline.flaky),
                                      runtimes_ms=baseline.runtimes_ms, created_at=baseline.created_at))

    @transient
    def add_flaky(self, key: str, tests: list[str]) -> None:
        """Label ``tests`` flaky for one baseline key: a rerun saw them pass, so
        they never count as a regression on that key again."""
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            if row is not None:
                row.flaky = sorted(set(row.flaky or []) | set(tests))

    @transient
    def touch_image(self, *, tag: str, repo: str, commit: str, toolchain: str, size_bytes: int,
                    build_seconds: float | None, tier: str = "snapshot", parent: str | None = None,
                    pinned: bool | None = None) -> None:
        """Record an image's use (and its build, when ``build_seconds`` is given).

        A rebuilt image (an unpinned environment past its age) keeps its row,
        with the new size and build time.
        """
        now = utcnow()
        with self._tx() as session:
            row = session.get(SnapshotImageRow, tag)
            if row is None:
                row = SnapshotImageRow(tag=tag, repo=repo, commit=commit, toolchain=toolchain,
                                       size_bytes=size_bytes, build_seconds=build_seconds or 0.0,
                                       created_at=now, last_used_at=now, uses=0, tier=tier, parent=parent,
                                       pinned=pinned)
                session.add(row)
            elif build_seconds is not None:
                row.size_bytes, row.build_seconds, row.created_at = size_bytes, build_seconds, now
                row.parent, row.pinned = parent, pinned
            row.last_used_at, row.uses = now, (row.uses or 0) + 1

    @transient
    def forget_image(self, tag: str) -> None:
        """Drop an image's row (it was removed from the engine)."""
        with self._tx() as session:
            row = session.get(SnapshotImageRow, tag)
            if row is not None:
                session.delete(row)

    def images(self) -> list[dict]:
        with self._tx() as session:
            return [_columns(r, SnapshotImageRow.__table__)
                    for r in session.scalars(select(SnapshotImageRow).order_by(SnapshotImageRow.last_used_at))]

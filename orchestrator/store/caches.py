"""What the pipeline keeps in the database beside experiments: baselines (a
record per key the controller drives, and once it succeeded the cached
result every experiment on that key reads) and the snapshot images in use
(for LRU cleanup)."""

from __future__ import annotations

from sqlalchemy import bindparam, func, insert, select, update

from orchestrator.domain.records import BaselineRecord, CachedBaseline
from orchestrator.store.base import StoreBase, _aware, _columns, insert_race, transient, utcnow
from orchestrator.store.tables import BaselineRow, SnapshotImageRow


BASELINE_ACTIVE = ("Pending", "Running")


# What a record of a baseline is read with (its cached results, a suite's thousands of
# cases, stay unread until an experiment's verdict needs them).
_RECORD = select(*[BaselineRow.__table__.c[c] for c in (
    "key", "phase", "repo", "commit", "image", "repetition", "repetitions", "attempts", "sandbox_name",
    "sandbox_uid", "deadline_at", "kill_reason", "owner", "plan", "runs", "message")])
_CACHED = select(*[BaselineRow.__table__.c[c] for c in (
    "key", "phase", "cases", "parse_errors", "runtime_ms", "exit_code", "llm_count", "flaky", "runtimes_ms",
    "created_at")])
_DRIVEN = _RECORD.where(BaselineRow.phase.in_(BASELINE_ACTIVE) | BaselineRow.key.in_(bindparam("keys", expanding=True)))


def _record(row) -> BaselineRecord:
    return BaselineRecord(key=row.key, phase=row.phase, repo=row.repo, commit=row.commit, image=row.image,
                          repetition=row.repetition, repetitions=row.repetitions, attempts=row.attempts,
                          sandbox_name=row.sandbox_name, sandbox_uid=row.sandbox_uid,
                          deadline_at=_aware(row.deadline_at),
                          kill_reason=row.kill_reason, owner=row.owner, plan=row.plan or {}, runs=row.runs or [],
                          message=row.message)


class CachesMixin(StoreBase):
    def baseline(self, key: str) -> CachedBaseline | None:
        """The finished baseline of ``key``, or None while there is none (or it failed)."""
        with self._tx() as session:
            row = session.execute(_CACHED.where(BaselineRow.key == key)).first()
            if row is None or row.phase != "Succeeded":
                return None
            return CachedBaseline(key=row.key, cases=row.cases, parse_errors=row.parse_errors or [],
                                  runtime_ms=row.runtime_ms, exit_code=row.exit_code, llm_count=row.llm_count,
                                  flaky=sorted(row.flaky or []), runtimes_ms=list(row.runtimes_ms or []),
                                  created_at=_aware(row.created_at))

    def baseline_phase(self, key: str) -> str | None:
        """The phase of ``key``'s baseline (None: never planned), without reading its results:
        a real suite's cases are thousands, and an experiment's start only asks whether it is ready."""
        with self._tx() as session:
            return session.scalar(select(BaselineRow.phase).where(BaselineRow.key == key))

    def baseline_record(self, key: str) -> BaselineRecord | None:
        with self._tx() as session:
            row = session.execute(_RECORD.where(BaselineRow.key == key)).first()
            return _record(row) if row is not None else None

    def baselines(self, keys: frozenset[str] = frozenset()) -> list[BaselineRecord]:
        """Baselines the controller must drive (Pending, Running), and those of ``keys``."""
        with self._tx() as session:
            return self._baselines(session, keys)

    @staticmethod
    def _baselines(session, keys: frozenset[str]) -> list[BaselineRecord]:
        return [_record(row) for row in session.execute(_DRIVEN, {"keys": list(keys)})]

    @transient
    @insert_race
    def plan_baseline(self, *, key: str, repo: str, commit: str, command: list[str], image: str, owner: str,
                      plan: dict, repetitions: int) -> BaselineRecord:
        """The record of ``key``: planned now (Pending) unless one is there; a failed
        one is planned again (a later experiment gets a fresh try)."""
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            if row is not None and row.phase != "Failed":
                return _record(row)
            if row is None:
                row = BaselineRow(key=key)
                session.add(row)
            row.repo, row.commit, row.command, row.image, row.owner, row.plan = repo, commit, command, image, owner, plan
            row.phase, row.repetition, row.repetitions, row.attempts, row.runs = "Pending", 0, repetitions, 0, []
            row.sandbox_name = row.deadline_at = row.kill_reason = row.message = None
            row.cases, row.parse_errors, row.runtime_ms, row.exit_code, row.llm_count = {}, [], 0, 0, 0
            row.created_at = utcnow()
            session.flush()
            return _record(row)

    @transient
    def baseline_launched(self, key: str, *, sandbox_name: str, sandbox_uid: str, deadline_at) -> None:
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            row.phase, row.sandbox_name, row.deadline_at, row.kill_reason = "Running", sandbox_name, deadline_at, None
            row.sandbox_uid = sandbox_uid

    @transient
    def set_baseline_kill_reason(self, key: str, reason: str) -> None:
        with self._tx() as session:
            session.get(BaselineRow, key, with_for_update=True).kill_reason = reason

    @transient
    def baseline_lost(self, key: str) -> int:
        """The repetition's sandbox was lost to the infrastructure: launch it again. Returns attempts so far."""
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            row.phase, row.sandbox_name, row.attempts = "Pending", None, row.attempts + 1
            return row.attempts

    @transient
    def baseline_repetition(self, key: str, run: dict, *, last: bool) -> BaselineRecord:
        """One repetition done; the next is Pending unless it was the ``last``."""
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            row.runs = [*(row.runs or []), run]
            row.repetition, row.sandbox_name, row.deadline_at, row.kill_reason = row.repetition + 1, None, None, None
            row.phase = "Running" if last else "Pending"  # last: finish_baseline ends it
            return _record(row)

    @transient
    @insert_race
    def put_baseline(self, baseline: CachedBaseline, *, repo: str, commit: str, command: list[str],
                     image: str) -> None:
        """The finished baseline of ``baseline.key``: Succeeded, read by every experiment on that key."""
        with self._tx() as session:
            row = session.get(BaselineRow, baseline.key, with_for_update=True)
            if row is None:
                row = BaselineRow(key=baseline.key, repetitions=len(baseline.runtimes_ms) or 1)
                session.add(row)
            row.repo, row.commit, row.command, row.image = repo, commit, command, image
            row.cases, row.parse_errors, row.runtime_ms = baseline.cases, baseline.parse_errors, baseline.runtime_ms
            row.exit_code, row.llm_count, row.flaky = baseline.exit_code, baseline.llm_count, sorted(baseline.flaky)
            row.runtimes_ms, row.created_at, row.phase = baseline.runtimes_ms, baseline.created_at, "Succeeded"
            row.sandbox_name = row.deadline_at = None

    @transient
    def fail_baseline(self, key: str, message: str) -> None:
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            if row is not None:
                row.phase, row.message, row.sandbox_name = "Failed", message[:4000], None

    @transient
    def add_flaky(self, key: str, tests: list[str]) -> None:
        """Label ``tests`` flaky for one baseline key: a rerun saw them pass, so
        they never count as a regression on that key again."""
        with self._tx() as session:
            row = session.get(BaselineRow, key, with_for_update=True)
            if row is not None:
                row.flaky = sorted(set(row.flaky or []) | set(tests))

    def touch_image(self, *, tag: str, repo: str, commit: str, toolchain: str, size_bytes: int,
                    build_seconds: float | None, tier: str = "snapshot", parent: str | None = None,
                    pinned: bool | None = None) -> None:
        """Record an image's use (and its build, when ``build_seconds`` is given).

        A rebuilt image (an unpinned environment past its age) keeps its row,
        with the new size and build time.
        """
        self.touch_images([dict(tag=tag, repo=repo, commit=commit, toolchain=toolchain, size_bytes=size_bytes,
                                build_seconds=build_seconds, tier=tier, parent=parent, pinned=pinned)])

    @transient
    @insert_race
    def touch_images(self, uses: list[dict]) -> None:
        """:meth:`touch_image` for each of ``uses`` (its keyword arguments), in one transaction:
        the tiers one experiment starts from."""
        now = utcnow()
        with self._tx() as session:
            for use in uses:
                self._touch(session, now, **{"tier": "snapshot", "parent": None, "pinned": None, **use})

    @staticmethod
    def _touch(session, now, *, tag: str, repo: str, commit: str, toolchain: str, size_bytes: int,
               build_seconds: float | None, tier: str, parent: str | None, pinned: bool | None) -> None:
        # One UPDATE for an image on file (the usual case), atomic in SQL: concurrent uses all count.
        changes = dict(last_used_at=now, uses=func.coalesce(SnapshotImageRow.uses, 0) + 1)
        if build_seconds is not None:
            changes.update(size_bytes=size_bytes, build_seconds=build_seconds, created_at=now, parent=parent,
                           pinned=pinned)
        if session.execute(update(SnapshotImageRow).where(SnapshotImageRow.tag == tag).values(changes)
                           .execution_options(synchronize_session=False)).rowcount == 0:
            session.execute(insert(SnapshotImageRow.__table__), [dict(
                tag=tag, repo=repo, commit=commit, toolchain=toolchain, size_bytes=size_bytes,
                build_seconds=build_seconds or 0.0, created_at=now, last_used_at=now, uses=1, tier=tier,
                parent=parent, pinned=pinned)])

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

"""Claims of pooled sandboxes: which experiment took which ready sandbox.

A claim is an insert keyed by the sandbox's name, so two claimants of one
sandbox (two steps, or a former leader and its successor) cannot both win,
and a claimed sandbox is never handed out again. It is written with the
audit line that reports it. Not here: which sandbox to claim
(:mod:`orchestrator.pipeline.pools`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from orchestrator.store.base import StoreBase, _aware, _utc, transient, utcnow
from orchestrator.store.tables import SandboxClaimRow


class ClaimsMixin(StoreBase):
    @transient
    def claim_sandbox(self, *, name: str, uid: str, pool: str, tier: str, experiment_id: str, actor: str) -> bool:
        """Record that ``experiment_id`` took the pooled sandbox ``name``; False if it was taken."""
        try:
            with self._tx() as session:
                session.add(SandboxClaimRow(sandbox_name=name, sandbox_uid=uid, pool=pool, tier=tier,
                                            experiment_id=experiment_id, claimed_at=utcnow()))
                session.flush()
                self._history(session, experiment_id=experiment_id, sandbox_name=name, action="claimed",
                              actor=actor, reason=f"{tier} sandbox of pool {pool}", details={"uid": uid})
        except IntegrityError:
            return False
        return True

    def claims(self, names: list[str]) -> dict[str, str]:
        """The claiming experiment of each of ``names`` that was claimed."""
        if not names:
            return {}
        with self._tx() as session:
            rows = session.execute(select(SandboxClaimRow.sandbox_name, SandboxClaimRow.experiment_id)
                                   .where(SandboxClaimRow.sandbox_name.in_(names)))
            return {name: experiment for name, experiment in rows}

    def claimed_by(self, experiment_id: str) -> list[tuple[str, str]]:
        """(name, uid) of every pooled sandbox ``experiment_id`` claimed."""
        with self._tx() as session:
            rows = session.execute(select(SandboxClaimRow.sandbox_name, SandboxClaimRow.sandbox_uid)
                                   .where(SandboxClaimRow.experiment_id == experiment_id))
            return [(name, uid) for name, uid in rows]

    def claim_counts(self, since: datetime) -> list[tuple[str, str, int, datetime | None]]:
        """(pool, tier, claims, the latest) per pool and tier since ``since``."""
        with self._tx() as session:
            rows = session.execute(select(SandboxClaimRow.pool, SandboxClaimRow.tier, func.count(),
                                          func.max(SandboxClaimRow.claimed_at))
                                   .where(SandboxClaimRow.claimed_at >= _utc(since))
                                   .group_by(SandboxClaimRow.pool, SandboxClaimRow.tier))
            return [(pool, tier, int(count), _aware(last)) for pool, tier, count, last in rows]

"""Views of stored state that cross layers (the store returns these, never rows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict

from orchestrator.domain.models import Condition, ExperimentRequest, Outcome, Phase, Recommendation


class ExperimentView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    instance_id: str
    experiment_type: str
    risk_level: str
    repo: str
    commit: str | None
    phase: Phase
    reason: str | None = None
    message: str | None = None
    spec: ExperimentRequest | None  # None for a request rejected before it parsed
    raw_excerpt: str | None = None
    conditions: list[Condition] = []
    recommendation: Recommendation | None = None
    priority: int = 0
    attempt: int = 0
    cancel_requested: bool = False
    trace_id: str | None = None
    sandbox_name: str | None = None
    sandbox_uid: str | None = None  # the runtime's id of it, recorded at creation
    image: str | None = None
    baseline_image: str | None = None  # differs from image when the change has its own environment
    baseline_key: str | None = None  # the baseline it waited for (a record of its own)
    preserved_until: datetime | None = None
    outcome: Outcome | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline_at: datetime | None = None
    not_before: datetime | None = None
    kill_reason: str | None = None
    gpus: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditLine:
    """One line of a sandbox's audit trail, to be written in the transaction of the
    record's next change (:meth:`orchestrator.store.repository.Store.transition`)."""

    sandbox_name: str
    action: str
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    duration_ms: float | None = None
    at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))  # when it happened, not when written


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    experiment_id: str | None
    sandbox_name: str
    action: str
    actor: str
    reason: str
    duration_ms: float | None = None
    details: dict[str, Any] = {}
    at: datetime


class CachedBaseline(BaseModel):
    """A baseline, cached per key (repo, commit, validation, image, resources,
    grading version): its repetitions combined, the tests that varied
    between them (or passed on a rerun of a change), and each run's time."""

    key: str
    cases: dict[str, str]
    parse_errors: list[str] = []
    runtime_ms: int  # the median repetition's
    exit_code: int
    llm_count: int
    flaky: list[str] = []
    runtimes_ms: list[int] = []
    created_at: datetime


class BaselineRecord(BaseModel):
    """A baseline the controller drives: one repetition at a time, each in a
    fresh sandbox, to ``Succeeded`` (then :class:`CachedBaseline`) or ``Failed``.

    ``plan`` is what a repetition is launched with (repository, commit,
    image, validation, resources, timeout); ``runs`` the finished ones."""

    model_config = ConfigDict(frozen=True)

    key: str
    phase: str  # Pending | Running | Succeeded | Failed
    repo: str
    commit: str
    image: str
    repetition: int = 0
    repetitions: int = 1
    attempts: int = 0
    sandbox_name: str | None = None
    sandbox_uid: str | None = None  # the runtime's id of it, recorded at creation
    deadline_at: datetime | None = None
    kill_reason: str | None = None
    owner: str | None = None
    plan: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    message: str | None = None

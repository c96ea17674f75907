"""SQLAlchemy 2 table definitions. The Alembic migrations in ``migrations/``
create exactly these; ``tests/test_store.py`` checks they agree."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ExperimentRow(Base):
    __tablename__ = "experiment_records"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(128), index=True)
    experiment_type: Mapped[str] = mapped_column(String(64))
    risk_level: Mapped[str] = mapped_column(String(16))
    repo: Mapped[str] = mapped_column(String(128))
    base_ref: Mapped[str] = mapped_column(String(256))
    commit: Mapped[str | None] = mapped_column(String(64))
    spec: Mapped[dict | None] = mapped_column(JSON)
    raw_excerpt: Mapped[str | None] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(String(64))
    phase: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str | None] = mapped_column(Text)
    conditions: Mapped[list] = mapped_column(JSON, default=list)
    recommendation: Mapped[str | None] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    sandbox_name: Mapped[str | None] = mapped_column(String(128))
    sandbox_uid: Mapped[str | None] = mapped_column(String(128))  # migration 0006: the runtime's id
    image: Mapped[str | None] = mapped_column(String(256))
    baseline_image: Mapped[str | None] = mapped_column(String(256))  # when the change has its own environment
    preserved_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Controller state (migration 0002).
    phase_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    kill_reason: Mapped[str | None] = mapped_column(String(32))
    cpu: Mapped[float] = mapped_column(Float, server_default="0", default=0.0)
    memory_bytes: Mapped[int] = mapped_column(BigInteger, server_default="0", default=0)
    gpus_requested: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    gpus: Mapped[list | None] = mapped_column(JSON)
    reply_to: Mapped[str | None] = mapped_column(String(256))  # migration 0003
    baseline_key: Mapped[str | None] = mapped_column(String(64))  # migration 0005: the baseline it waits for

    __table_args__ = (Index("ix_experiment_queue", "phase", "priority", "created_at"),
                      Index("ix_experiment_preserved", "preserved_until"),
                      Index("ix_experiment_updated", "updated_at"),
                      Index("ix_experiment_listing", "created_at", "id"))


class MetricsRow(Base):
    __tablename__ = "experiment_metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(ForeignKey("experiment_records.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    success_rate: Mapped[float] = mapped_column(Float)
    regression: Mapped[float] = mapped_column(Float)
    llm_reduction: Mapped[float | None] = mapped_column(Float)
    performance_delta: Mapped[float | None] = mapped_column(Float)
    runtime_ms: Mapped[int] = mapped_column(BigInteger)
    test_count: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    skipped: Mapped[int] = mapped_column(Integer)
    memory_peak_mb: Mapped[float | None] = mapped_column(Float)
    cpu_usage_percent: Mapped[float | None] = mapped_column(Float)
    io_operations: Mapped[int | None] = mapped_column(BigInteger)
    code_coverage_percent: Mapped[float | None] = mapped_column(Float)
    complexity_change: Mapped[int | None] = mapped_column(Integer)
    pass_to_fail: Mapped[int | None] = mapped_column(Integer)  # migration 0005
    fail_to_pass: Mapped[int | None] = mapped_column(Integer)
    flaky_tests: Mapped[int | None] = mapped_column(Integer)
    protected_changed: Mapped[int | None] = mapped_column(Integer)
    performance_noise: Mapped[float | None] = mapped_column(Float)
    performance_excess: Mapped[float | None] = mapped_column(Float)
    custom: Mapped[dict] = mapped_column(JSON, default=dict)
    baseline_success_rate: Mapped[float | None] = mapped_column(Float)
    baseline_test_count: Mapped[int | None] = mapped_column(Integer)
    baseline_runtime_ms: Mapped[int | None] = mapped_column(BigInteger)
    recommendation: Mapped[str | None] = mapped_column(String(32))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SandboxHistoryRow(Base):
    __tablename__ = "sandbox_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str | None] = mapped_column(String(64), index=True)
    sandbox_name: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class BaselineRow(Base):
    __tablename__ = "baseline_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    repo: Mapped[str] = mapped_column(String(128))
    commit: Mapped[str] = mapped_column(String(64))
    command: Mapped[list] = mapped_column(JSON)
    image: Mapped[str] = mapped_column(String(256))
    cases: Mapped[dict] = mapped_column(JSON)
    parse_errors: Mapped[list] = mapped_column(JSON, default=list)
    runtime_ms: Mapped[int] = mapped_column(BigInteger)
    exit_code: Mapped[int] = mapped_column(Integer)
    llm_count: Mapped[int] = mapped_column(Integer)
    flaky: Mapped[list | None] = mapped_column(JSON)  # migration 0005: tests seen to vary on this key
    runtimes_ms: Mapped[list | None] = mapped_column(JSON)  # one per repetition
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # A baseline is a record the controller drives (migration 0005): Pending → Running
    # (one repetition at a time) → Succeeded | Failed. Rows cached before it are Succeeded.
    phase: Mapped[str] = mapped_column(String(16), server_default="Succeeded", default="Pending", index=True)
    repetition: Mapped[int] = mapped_column(Integer, server_default="0", default=0)  # the one running or next
    repetitions: Mapped[int] = mapped_column(Integer, server_default="1", default=1)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)  # launches lost to the runtime
    sandbox_name: Mapped[str | None] = mapped_column(String(128))
    sandbox_uid: Mapped[str | None] = mapped_column(String(128))  # migration 0006: the runtime's id
    deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    kill_reason: Mapped[str | None] = mapped_column(String(32))
    owner: Mapped[str | None] = mapped_column(String(64))  # the experiment that planned it
    plan: Mapped[dict | None] = mapped_column(JSON)  # what a repetition is launched with
    runs: Mapped[list | None] = mapped_column(JSON)  # each finished repetition: cases, runtime, exit code
    message: Mapped[str | None] = mapped_column(Text)


class SnapshotImageRow(Base):
    __tablename__ = "snapshot_images"

    tag: Mapped[str] = mapped_column(String(256), primary_key=True)
    repo: Mapped[str] = mapped_column(String(128))
    commit: Mapped[str] = mapped_column(String(64))
    toolchain: Mapped[str] = mapped_column(String(256))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    build_seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    uses: Mapped[int] = mapped_column(Integer, default=0)
    tier: Mapped[str] = mapped_column(String(16), server_default="snapshot", default="snapshot")
    parent: Mapped[str | None] = mapped_column(String(256))  # the image it was built FROM
    pinned: Mapped[bool | None] = mapped_column(Boolean)  # environments: every version fixed


class LeaseRow(Base):
    """A named lease: who leads, until when, and the generation of this tenure
    (it grows at every takeover; writes made under an older one are refused)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    generation: Mapped[int] = mapped_column(BigInteger, server_default="0", default=0)  # migration 0006


class OutboxRow(Base):
    """Messages decided in the same transaction as the state change they report."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(String(64), index=True)
    msg_id: Mapped[str] = mapped_column(String(128), unique=True)
    subject: Mapped[str] = mapped_column(String(256))
    payload: Mapped[dict] = mapped_column(JSON)
    headers: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    durable: Mapped[bool] = mapped_column(Boolean, server_default=true(), default=True)  # JetStream, deduplicated
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)


class ScheduledJobRow(Base):
    """A scheduled job's last run (migration 0007): the wall-clock period it last
    completed, so a restart neither skips nor repeats one (SPEC §11)."""

    __tablename__ = "scheduled_jobs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_period: Mapped[str | None] = mapped_column(String(32))  # "2026-11-28", "2026-11-28T06"
    last_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)


class ReportRow(Base):
    """What a job computed for one period (the analysis, the daily report): one per kind and period."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[dict] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("kind", "period", name="uq_reports_kind_period"),)


class SandboxClaimRow(Base):
    """A pooled sandbox claimed by an experiment (migration 0009). Its labels were set
    before anyone asked for it, so this row is what ties it to the experiment: the
    controller's reaping and adoption read it. The primary key makes a claim a
    compare-and-set: a sandbox is claimed once, and never reused."""

    __tablename__ = "sandbox_claims"

    sandbox_name: Mapped[str] = mapped_column(String(128), primary_key=True)
    sandbox_uid: Mapped[str] = mapped_column(String(128))
    pool: Mapped[str] = mapped_column(String(64))
    tier: Mapped[str] = mapped_column(String(8))  # hot | warm: what it was when claimed
    experiment_id: Mapped[str] = mapped_column(String(64), index=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

"""Initial schema: experiments, metrics, sandbox audit, baseline cache,
snapshot images, outbox.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "experiment_records",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(128), nullable=False, index=True),
        sa.Column("experiment_type", sa.String(64), nullable=False),
        sa.Column("risk_level", sa.String(16), nullable=False),
        sa.Column("repo", sa.String(128), nullable=False),
        sa.Column("base_ref", sa.String(256), nullable=False),
        sa.Column("commit", sa.String(64)),
        sa.Column("spec", sa.JSON),
        sa.Column("raw_excerpt", sa.Text),
        sa.Column("body_sha256", sa.String(64), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.String(64)),
        sa.Column("message", sa.Text),
        sa.Column("conditions", sa.JSON, nullable=False),
        sa.Column("recommendation", sa.String(32)),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("trace_id", sa.String(64)),
        sa.Column("sandbox_name", sa.String(128)),
        sa.Column("image", sa.String(256)),
        sa.Column("preserved_until", TS),
        sa.Column("outcome", sa.JSON),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS),
        sa.Column("finished_at", TS),
    )
    op.create_index("ix_experiment_queue", "experiment_records", ["phase", "priority", "created_at"])
    op.create_table(
        "experiment_metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.String(64),
                  sa.ForeignKey("experiment_records.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("success_rate", sa.Float, nullable=False),
        sa.Column("regression", sa.Float, nullable=False),
        sa.Column("llm_reduction", sa.Float),
        sa.Column("performance_delta", sa.Float),
        sa.Column("runtime_ms", sa.BigInteger, nullable=False),
        sa.Column("test_count", sa.Integer, nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("skipped", sa.Integer, nullable=False),
        sa.Column("memory_peak_mb", sa.Float),
        sa.Column("cpu_usage_percent", sa.Float),
        sa.Column("io_operations", sa.BigInteger),
        sa.Column("code_coverage_percent", sa.Float),
        sa.Column("complexity_change", sa.Integer),
        sa.Column("custom", sa.JSON, nullable=False),
        sa.Column("baseline_success_rate", sa.Float),
        sa.Column("baseline_test_count", sa.Integer),
        sa.Column("baseline_runtime_ms", sa.BigInteger),
        sa.Column("recommendation", sa.String(32)),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_table(
        "sandbox_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.String(64), index=True),
        sa.Column("sandbox_name", sa.String(128), nullable=False, index=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("duration_ms", sa.Float),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("at", TS, nullable=False, index=True),
    )
    op.create_table(
        "baseline_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("repo", sa.String(128), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("command", sa.JSON, nullable=False),
        sa.Column("image", sa.String(256), nullable=False),
        sa.Column("cases", sa.JSON, nullable=False),
        sa.Column("parse_errors", sa.JSON, nullable=False),
        sa.Column("runtime_ms", sa.BigInteger, nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=False),
        sa.Column("llm_count", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "snapshot_images",
        sa.Column("tag", sa.String(256), primary_key=True),
        sa.Column("repo", sa.String(128), nullable=False),
        sa.Column("commit", sa.String(64), nullable=False),
        sa.Column("toolchain", sa.String(256), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("build_seconds", sa.Float, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_used_at", TS, nullable=False),
        sa.Column("uses", sa.Integer, nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.String(64), nullable=False, index=True),
        sa.Column("msg_id", sa.String(128), nullable=False, unique=True),
        sa.Column("subject", sa.String(256), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("published_at", TS, index=True),
    )


def downgrade() -> None:
    for table in ("outbox", "snapshot_images", "baseline_cache", "sandbox_history",
                  "experiment_metrics", "experiment_records"):
        op.drop_table(table)

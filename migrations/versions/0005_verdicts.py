"""Verdicts: baselines as records the controller drives (phase, repetitions,
deadline, the sandbox of the repetition running), with their flaky tests and
repetition times, and the baseline an experiment waits for; the verdict's own
figures (PASS_TO_FAIL, FAIL_TO_PASS, flaky tests, protected files edited,
the baseline's runtime spread and how far a change goes past it) per
experiment run.

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

METRICS = (("pass_to_fail", sa.Integer), ("fail_to_pass", sa.Integer), ("flaky_tests", sa.Integer),
           ("protected_changed", sa.Integer), ("performance_noise", sa.Float), ("performance_excess", sa.Float))


BASELINE = (("phase", sa.String(16), "Succeeded"), ("repetition", sa.Integer, "0"),
            ("repetitions", sa.Integer, "1"), ("attempts", sa.Integer, "0"))
BASELINE_NULLABLE = (("sandbox_name", sa.String(128)), ("deadline_at", sa.DateTime(timezone=True)),
                     ("kill_reason", sa.String(32)), ("owner", sa.String(64)), ("plan", sa.JSON),
                     ("runs", sa.JSON), ("message", sa.Text))


def upgrade() -> None:
    with op.batch_alter_table("baseline_cache") as batch:
        batch.add_column(sa.Column("flaky", sa.JSON))
        batch.add_column(sa.Column("runtimes_ms", sa.JSON))
        for name, kind, default in BASELINE:
            batch.add_column(sa.Column(name, kind, nullable=False, server_default=default))
        for name, kind in BASELINE_NULLABLE:
            batch.add_column(sa.Column(name, kind))
        batch.create_index("ix_baseline_cache_phase", ["phase"])
    with op.batch_alter_table("experiment_records") as batch:
        batch.add_column(sa.Column("baseline_key", sa.String(64)))
    with op.batch_alter_table("experiment_metrics") as batch:
        for name, kind in METRICS:
            batch.add_column(sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table("experiment_metrics") as batch:
        for name, _ in reversed(METRICS):
            batch.drop_column(name)
    with op.batch_alter_table("experiment_records") as batch:
        batch.drop_column("baseline_key")
    with op.batch_alter_table("baseline_cache") as batch:
        batch.drop_index("ix_baseline_cache_phase")
        for name, _ in reversed(BASELINE_NULLABLE):
            batch.drop_column(name)
        for name, _, _ in reversed(BASELINE):
            batch.drop_column(name)
        batch.drop_column("runtimes_ms")
        batch.drop_column("flaky")

"""Verdicts: flaky tests and repetition times per baseline; the verdict's own
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


def upgrade() -> None:
    with op.batch_alter_table("baseline_cache") as batch:
        batch.add_column(sa.Column("flaky", sa.JSON))
        batch.add_column(sa.Column("runtimes_ms", sa.JSON))
    with op.batch_alter_table("experiment_metrics") as batch:
        for name, kind in METRICS:
            batch.add_column(sa.Column(name, kind))


def downgrade() -> None:
    with op.batch_alter_table("experiment_metrics") as batch:
        for name, _ in reversed(METRICS):
            batch.drop_column(name)
    with op.batch_alter_table("baseline_cache") as batch:
        batch.drop_column("runtimes_ms")
        batch.drop_column("flaky")

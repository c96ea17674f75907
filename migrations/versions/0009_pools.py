"""Warm pools: which experiment claimed which pooled sandbox (``sandbox_claims``).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandbox_claims",
        sa.Column("sandbox_name", sa.String(128), primary_key=True),
        sa.Column("sandbox_uid", sa.String(128), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("tier", sa.String(8), nullable=False),
        sa.Column("experiment_id", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_sandbox_claims_experiment_id", "sandbox_claims", ["experiment_id"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_claims_experiment_id", table_name="sandbox_claims")
    op.drop_table("sandbox_claims")

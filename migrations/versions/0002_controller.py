"""Controller state: resource and timing columns on experiment records, and
the leader lease.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("experiment_records") as batch:
        batch.add_column(sa.Column("phase_since", TS))
        batch.add_column(sa.Column("deadline_at", TS))
        batch.add_column(sa.Column("not_before", TS))
        batch.add_column(sa.Column("kill_reason", sa.String(32)))
        batch.add_column(sa.Column("cpu", sa.Float, nullable=False, server_default="0"))
        batch.add_column(sa.Column("memory_bytes", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("gpus_requested", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("gpus", sa.JSON))
    op.create_index("ix_experiment_preserved", "experiment_records", ["preserved_until"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(256), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_index("ix_experiment_preserved", "experiment_records")
    with op.batch_alter_table("experiment_records") as batch:
        for column in ("gpus", "gpus_requested", "memory_bytes", "cpu", "kill_reason", "not_before",
                       "deadline_at", "phase_since"):
            batch.drop_column(column)
